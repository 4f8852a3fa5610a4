"""Turn results files into `report.md` (fits a CI job summary), `report.html` (one self-contained page) and PNGs.

Why: the verdict table is the point of a run — every stated target, its quote, what was measured and the
verdict, with unmeasured targets shown as such rather than left out. Charts show spread (median with IQR)
and the target line, so a pass by a hair and a pass by a mile look different; scaling curves carry their
fitted growth exponent; detection shows where it goes wrong (confusion matrices), next to the original
rule it replaces (`baseline_*` metrics); a baseline run and a history of runs show what changed.

Given several results files (shards of one run, or a history), the figures are the latest record of each
(suite, model, metric, workload, device, dtype, weights) by run start (`harness.collate`); the trend
section shows the history. Both outputs come from one document model (`harness.render`), which escapes
every piece of text taken from a results file.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import plots
from harness.collate import (
    FAMILY_ORDER,
    fingerprint_text,
    is_baseline,
    is_scaling,
    latest,
    load_runs,
    run_records,
    short_workload,
    workload_label,
)
from harness.render import Cell, Details, Image, Para, Section, Table, html_document, md_document
from harness.report_compat import compat_section

__all__ = ["write_report"]

TITLE = "NeuronMap Bench report"
VERDICT_MARK = {
    "pass": "✅ pass",
    "fail": "❌ fail",
    "error": "⚠️ error",
    "not_measured": "⬜ not measured",
    "not_applicable": "n/a",
}
VERDICT_TEXT = {"pass": "pass", "fail": "FAIL", "error": "ERROR", "not_measured": "not measured",
                "not_applicable": "n/a"}
OUTCOME_ORDER = ("regression", "target_fail", "incomparable", "improvement", "still_failing", "new", "pass")
MEMORY_METRICS = ("peak_memory", "extraction_peak_memory")


# ---------------------------------------------------------------- formatting


def _fmt(value: Any, unit: str | None) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "—"
    v = float(value)
    if unit == "fraction":
        return f"{v * 100:.1f}%"
    if unit == "bool":
        return "yes" if v == 1.0 else "no"
    if unit == "tokens":
        return f"{v:.0f} tokens"
    if unit == "s":
        return f"{v:.3g} s" if abs(v) >= 0.01 else f"{v * 1e3:.3g} ms"
    if unit == "GB" and abs(v) < 0.1:
        return f"{v * 1e3:.3g} MB"
    return f"{v:.3g} {unit or ''}".strip()


def _threshold(t: dict[str, Any]) -> str:
    op, val, unit = t.get("operator"), t.get("value"), t.get("unit")
    if op == "between" and isinstance(val, list):
        return f"{_fmt(val[0], unit)} – {_fmt(val[1], unit)}"
    return f"{op} {_fmt(val, unit)}"


def _verdict_cell(v: str | None) -> Cell:
    v = v or "not_measured"
    return Cell(VERDICT_TEXT.get(v, v), cls=f"v-{v}", md=VERDICT_MARK.get(v, v))


def _context(r: dict[str, Any]) -> str:
    return " · ".join(b for b in (r.get("device"), r.get("dtype"), r.get("weights")) if isinstance(b, str) and b)


def _family_rank(f: Any) -> tuple[int, str]:
    return (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), str(f or ""))


def _overall(verdicts: Iterable[str]) -> str:
    vs = set(verdicts)
    for v in ("fail", "error", "pass"):
        if v in vs:
            return v
    return "not_measured"


def _rel_change(b: float | None, c: float | None) -> float | None:
    if b is None or c is None or b == 0:
        return None
    return (c - b) / abs(b)


def _change_text(b: float | None, c: float | None, unit: str | None) -> str:
    """Relative change; memory also in absolute terms (a tiny baseline makes percentages meaningless),
    fractions in percentage points."""
    if b is None or c is None:
        return "—"
    rel = _rel_change(b, c)
    if unit == "fraction":
        return f"{(c - b) * 100:+.1f} points"
    if unit == "GB":
        d = c - b
        text = f"{d * 1e3:+.3g} MB" if abs(d) < 0.1 else f"{d:+.3g} GB"
        return text + (f" ({rel * 100:+.1f}%)" if rel is not None and abs(b) >= 0.001 else "")
    return f"{rel * 100:+.1f}%" if rel is not None else "—"


# ---------------------------------------------------------------- context


@dataclass
class _Ctx:
    runs: list[dict[str, Any]]
    records: list[dict[str, Any]]  # every record of every run, run order
    cur: list[dict[str, Any]]  # latest record per key
    targets: list[dict[str, Any]]
    baseline_runs: list[dict[str, Any]] | None
    images: dict[str, Image] = field(default_factory=dict)
    fp_labels: dict[str, str] = field(default_factory=dict)
    fp_data: dict[str, dict[str, Any]] = field(default_factory=dict)
    fp_count: dict[str, int] = field(default_factory=dict)

    def image(self, key: str, name: str, alt: str, png: bytes | None, caption: str | None = None) -> Image | None:
        if png is None:
            return None
        img = Image(name=name, alt=alt, png=png, caption=caption)
        self.images[key] = img
        return img

    def fp_cell(self, r: dict[str, Any]) -> Cell:
        fp = (r.get("extra") or {}).get("fingerprint")
        if not isinstance(fp, dict) or not fp:
            return Cell("—")
        key = json.dumps(fp, sort_keys=True, default=str)
        if key not in self.fp_labels:
            self.fp_labels[key] = f"F{len(self.fp_labels) + 1}"
            self.fp_data[key] = fp
        self.fp_count[key] = self.fp_count.get(key, 0) + 1
        return Cell(self.fp_labels[key], title=fingerprint_text(fp), code=True)


def _targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Union of the runs' target lists by id, in file order; a later run's definition wins."""
    by_id: dict[str, dict[str, Any]] = {}
    for run in runs:
        for t in (run.get("targets") or {}).get("list", []):
            by_id[t["id"]] = t
    return list(by_id.values())


# ---------------------------------------------------------------- intro and verdicts


def _env_line(run: dict[str, Any]) -> str:
    env = run.get("environment") or {}
    cpu = env.get("cpu") or {}
    pk = env.get("packages") or {}
    torch = env.get("torch") or {}
    gpus = env.get("gpus") or []
    parts = [
        f"{cpu.get('model') or '?'} ({cpu.get('usable_cores') or cpu.get('logical_cores') or '?'} cores)",
        f"torch {pk.get('torch') or '?'} ({torch.get('threads', '?')} threads)",
        f"transformers {pk.get('transformers') or '?'}",
        ", ".join(str(g.get("name")) for g in gpus) if gpus else "no GPU",
    ]
    if env.get("malloc"):
        parts.append(f"malloc {env['malloc'].get('mode')}")
    return "; ".join(parts)


def _when(start: Any, end: Any) -> str:
    """'2026-11-28 10:29:51 (1 min 50 s)' from ISO 8601 UTC start/end."""
    from datetime import datetime

    if not isinstance(start, str):
        return "?"
    text = start[:19].replace("T", " ")
    try:
        secs = (datetime.fromisoformat(str(end).replace("Z", "+00:00"))
                - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return text
    dur = f"{secs:.0f} s" if secs < 90 else f"{secs // 60:.0f} min {secs % 60:.0f} s" if secs < 5400 \
        else f"{secs / 3600:.1f} h"
    return f"{text} ({dur})"


def _runs_table(runs: list[dict[str, Any]]) -> Table:
    rows = []
    for run in runs:
        r = run["run"]
        commit = (r.get("git_commit") or "?")[:10] + (" (dirty)" if r.get("dirty") else "")
        rows.append([
            Cell(str(r.get("id")), code=True),
            _when(r.get("start"), r.get("end")),
            Cell(commit, code=True),
            Cell(str(r.get("command") or ""), code=True),
            _env_line(run),
        ])
    return Table(["Run", "Start, UTC (duration)", "Commit", "Command", "Environment"], rows, md_limit=10)


def _measured_lines(recs: list[dict[str, Any]], target: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(lines for the cell, hover lines). Big groups (many models, scaling points) are summarised."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in recs:
        groups.setdefault((r.get("suite"), (r.get("workload") or {}).get("name")), []).append(r)
    lines, hover = [], []
    for (suite, wname), grp in groups.items():
        hover += [f"{r.get('model') or 'all models'} · {workload_label(r.get('workload'))}: "
                  f"{_fmt(r.get('value'), r.get('unit'))} ({r.get('verdict')}; run {r['_run']['id']})" for r in grp]
        if len(grp) > 3 or is_scaling(grp[0]):
            counts: dict[str, int] = {}
            for r in grp:
                counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
            vals = [r["value"] for r in grp if r.get("value") is not None]
            models = {r.get("model") for r in grp}
            who = f"{len(models)} models" if len(models) > 1 else (next(iter(models)) or "all models")
            head = f"{suite}{' · ' + wname if wname else ''} ({who}, {len(grp)} records): "
            head += ", ".join(f"{n} {VERDICT_TEXT.get(v, v)}" for v, n in sorted(counts.items()))
            if vals:
                head += f"; {_fmt(min(vals), target.get('unit'))} – {_fmt(max(vals), target.get('unit'))}"
            lines.append(head)
            bad = [r for r in grp if r["verdict"] in ("fail", "error")]
            for r in bad[:4]:
                lines.append(f"  {VERDICT_TEXT[r['verdict']]}: {r.get('model') or 'all models'} "
                             f"{workload_label(r.get('workload'))}: {_fmt(r.get('value'), r.get('unit'))}")
            if len(bad) > 4:
                lines.append(f"  … {len(bad) - 4} more")
            continue
        for r in grp:
            ctx = "; ".join(x for x in (_context(r), workload_label(r.get("workload"))) if x)
            txt = f"{r.get('model') or 'all models'} ({ctx}): "
            if r["verdict"] == "error":
                txt += "error"
            else:
                txt += _fmt(r.get("value"), r.get("unit"))
                st = r.get("stats") or {}
                if st.get("q1") is not None and st.get("q3") is not None and r.get("unit") == "s":
                    txt += f" (IQR {_fmt(st['q1'], 's')}–{_fmt(st['q3'], 's')}, n={int(st.get('rounds') or 0)})"
            if len(recs) > 1 and r["verdict"] in ("pass", "fail"):
                txt += f" [{VERDICT_TEXT[r['verdict']]}]"
            lines.append(txt)
    return lines, hover


def _verdict_section(ctx: _Ctx) -> tuple[Section, dict[str, int]]:
    rows = []
    counts: dict[str, int] = {}
    for t in ctx.targets:
        recs = [r for r in ctx.cur if (r.get("target") or {}).get("id") == t["id"]]
        overall = _overall(r["verdict"] for r in recs) if recs else "not_measured"
        counts[overall] = counts.get(overall, 0) + 1
        shown = [r for r in recs if r["verdict"] != "not_measured"]
        lines, hover = _measured_lines(shown, t)
        applies = ""
        if t.get("models"):
            applies = f"{', '.join(t['models'][:2])}{'…' if len(t['models']) > 2 else ''}"
        elif t.get("families"):
            applies = f"family {', '.join(t['families'])}"
        rows.append([
            Cell(t["id"] + (f"\n{applies}" if applies else ""), md=f"{t['id']}" + (f" — {applies}" if applies else "")),
            f"“{t.get('quote', '')}”",
            Cell(_threshold(t)),
            Cell("\n".join(lines) or "—", title="\n".join(hover) or None),
            _verdict_cell(overall),
        ])
    summary = ", ".join(f"{counts[k]} {VERDICT_TEXT[k]}" for k in ("pass", "fail", "error", "not_measured")
                        if counts.get(k))
    sec = Section("targets", "Stated targets", [
        Para(f"{len(ctx.targets)} targets: {summary or 'none'}. Every target is listed; one no check measured "
             "reads “not measured”."),
        Table(["Target", "Claim (quote)", "Threshold", "Measured", "Verdict"], rows),
    ])
    return sec, counts


def _errors_section(ctx: _Ctx) -> Section:
    errs = [r for r in ctx.cur if r.get("verdict") == "error"]
    if not errs:
        return Section("errors", "Errors", [Para("No check ended in an error.")])
    rows = []
    for r in errs:
        msg = str(r.get("error") or "(no message)")
        rows.append([
            r.get("suite") or "",
            r.get("model") or "all models",
            Cell(str(r.get("metric")), code=True),
            workload_label(r.get("workload")),
            Cell(str(r["_run"]["id"]), code=True),
            Cell(msg[:4000] + ("…" if len(msg) > 4000 else ""), cls="err",
                 md=msg[:300] + ("…" if len(msg) > 300 else "")),
        ])
    return Section("errors", f"Errors ({len(errs)})", [
        Para("These checks could not produce a figure; their targets read “error”, not pass or fail."),
        Table(["Suite", "Model", "Metric", "Workload", "Run", "Error"], rows, md_limit=30),
    ])


# ---------------------------------------------------------------- per-model figures


def _sorted_models(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(recs, key=lambda r: (_family_rank(r.get("family")), str(r.get("model")),
                                       workload_label(r.get("workload"))))


def _series_name(w: Any) -> str:
    """A bar series: the workload's name when it has one (details differ per model: see the table)."""
    name = (w or {}).get("name") if isinstance(w, dict) else None
    return str(name) if name else workload_label(w)


def _bar_rows(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in recs:
        st = r.get("stats") or {}
        out.append({
            "model": r.get("model"), "device": r.get("device"), "dtype": r.get("dtype"),
            "weights": r.get("weights"), "series": _series_name(r.get("workload")), "value": r.get("value"),
            "median": st.get("median"), "q1": st.get("q1"), "q3": st.get("q3"), "target": r.get("target"),
        })
    return out


def _target_cell(r: dict[str, Any]) -> Cell:
    t = r.get("target")
    if not t:
        return Cell("none")
    return Cell(_threshold(t), title=f"{t.get('id')}: “{t.get('quote')}”")


def _latency_section(ctx: _Ctx) -> Section:
    recs = _sorted_models([r for r in ctx.cur if r.get("metric") == "extraction_latency" and not is_scaling(r)
                           and r.get("model") and r.get("verdict") != "not_measured"])
    blocks: list[Any] = []
    img = ctx.image("latency", "latency.png", "Extraction latency", plots.bar_chart(
        _bar_rows(recs), title="Activation extraction latency per model (median, IQR error bars)",
        ylabel="latency per extraction call (s)", allow_log=True, threshold_text=_threshold))
    if img:
        blocks.append(img)
    if not recs:
        return Section("latency", "Extraction latency per model", [Para("No latency measurements in these runs.")])
    rows = []
    for r in recs:
        st = r.get("stats") or {}
        iqr = f"{_fmt(st['q1'], 's')} – {_fmt(st['q3'], 's')}" if st.get("q1") is not None else "—"
        rows.append([r["model"], r.get("family") or "", _context(r), workload_label(r.get("workload")),
                     Cell(_fmt(r.get("value"), r.get("unit"))), Cell(iqr), Cell(str(st.get("rounds") or "—")),
                     _target_cell(r), _verdict_cell(r["verdict"]), ctx.fp_cell(r)])
    blocks.append(Table(["Model", "Family", "Device · dtype · weights", "Workload", "Median", "IQR", "Rounds",
                         "Target", "Verdict", "FP"], rows, md_limit=40, numeric=(4, 5, 6)))
    return Section("latency", "Extraction latency per model", blocks)


def _memory_section(ctx: _Ctx) -> Section:
    recs = _sorted_models([r for r in ctx.cur if r.get("metric") == "peak_memory" and not is_scaling(r)
                           and r.get("model") and r.get("verdict") != "not_measured"])
    if not recs:
        return Section("memory", "Peak memory per model", [Para("No peak-memory measurements in these runs.")])
    blocks: list[Any] = []
    img = ctx.image("peak_memory", "peak_memory.png", "Peak memory", plots.bar_chart(
        _bar_rows(recs), title="Peak memory while loading and extracting, per model",
        ylabel="peak RSS increase over baseline (GB = 1e9 B)", value_fmt="{:.2f}", threshold_text=_threshold))
    if img:
        blocks.append(img)
    rows = []
    for r in recs:
        extra = r.get("extra") or {}
        method = (extra.get("probe") or {}).get("method") or extra.get("method") or "—"
        rows.append([r["model"], r.get("family") or "", _context(r), workload_label(r.get("workload")),
                     Cell(_fmt(r.get("value"), r.get("unit"))), method, _target_cell(r),
                     _verdict_cell(r["verdict"]), ctx.fp_cell(r)])
    blocks.append(Table(["Model", "Family", "Device · dtype · weights", "Workload", "Peak", "Probe", "Target",
                         "Verdict", "FP"], rows, md_limit=40, numeric=(4,)))
    return Section("memory", "Peak memory per model", blocks)


def _reclamation_section(ctx: _Ctx) -> Section:
    recs = _sorted_models([r for r in ctx.cur if r.get("metric") == "reclamation" and r.get("model")
                           and r.get("verdict") != "not_measured"])
    if not recs:
        return Section("reclamation", "Memory reclaimed after unload",
                       [Para("No reclamation measurements in these runs.")])
    rec_t = next((t for t in ctx.targets if t.get("metric") == "reclamation" and t.get("operator") != "between"),
                 None)
    hline = (float(rec_t["value"]), f"stated target {_threshold(rec_t)}") if rec_t else None
    blocks: list[Any] = []
    img = ctx.image("reclamation", "reclamation.png", "Reclamation", plots.bar_chart(
        _bar_rows(recs), title="Memory reclaimed after unloading, per model",
        ylabel="share of the load's RSS returned by unload (%)", scale=100.0, value_fmt="{:.1f}%", hline=hline,
        per_group_targets=False))
    if img:
        blocks.append(img)
    rows = []
    for r in recs:
        ex = r.get("extra") or {}
        loaded = (ex.get("loaded_bytes") - ex.get("before_bytes")) / 1e9 if isinstance(ex.get("loaded_bytes"), int) \
            and isinstance(ex.get("before_bytes"), int) else None
        dead = ex.get("weakref_dead")
        rows.append([r["model"], r.get("family") or "", _context(r), Cell(_fmt(r.get("value"), r.get("unit"))),
                     Cell(_fmt(loaded, "GB")), "yes" if dead else ("no" if dead is False else "—"),
                     _target_cell(r), _verdict_cell(r["verdict"]), ctx.fp_cell(r)])
    blocks.append(Table(["Model", "Family", "Device · dtype · weights", "Reclaimed", "Load added", "Model freed",
                         "Target", "Verdict", "FP"], rows, md_limit=40, numeric=(3, 4)))
    return Section("reclamation", "Memory reclaimed after unload", blocks)


# ---------------------------------------------------------------- scaling


def _scaling_curves(ctx: _Ctx) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in ctx.cur:
        if not is_scaling(r) or r.get("value") is None:
            continue
        kind = "latency" if r.get("unit") == "s" else "memory" if r.get("unit") == "GB" else None
        if kind is None:
            continue
        k = (r.get("model"), r.get("family"), r.get("device"), r.get("dtype"), r.get("weights"), kind,
             r["workload"].get("name"))
        groups.setdefault(k, []).append(r)
    curves = []
    for (model, family, device, dtype, weights, kind, name), grp in groups.items():
        ws = [g["workload"] for g in grp]
        if name == "scaling-seq":
            axis = "seq_len"
        elif name == "scaling-batch":
            axis = "batch"
        else:  # another scaling sweep: the field that varies
            axis = "batch" if len({w.get("batch") for w in ws}) > len({w.get("seq_len") for w in ws}) else "seq_len"
        other = "batch" if axis == "seq_len" else "seq_len"
        pts = sorted(((w.get(axis), g["value"]) for w, g in zip(ws, grp, strict=True)
                      if isinstance(w.get(axis), (int, float))), key=lambda p: p[0])
        held = sorted({w.get(other) for w in ws if w.get(other) is not None})
        fixed = "" if not held else f"{other}={held[0]}" if len(held) == 1 else f"{other}={held[0]}–{held[-1]}"
        curves.append({"model": model, "family": family, "kind": kind, "axis": axis, "fixed": fixed, "ref": grp[0],
                       "xs": [p[0] for p in pts], "ys": [p[1] for p in pts], "name": name,
                       "context": " · ".join(x for x in (device, dtype, weights) if x), "unit": grp[0]["unit"],
                       "metric": grp[0]["metric"]})
    curves.sort(key=lambda c: (c["kind"] != "latency", c["axis"] != "seq_len", _family_rank(c["family"]),
                               str(c["model"])))
    return curves


def _scaling_section(ctx: _Ctx) -> Section:
    curves = _scaling_curves(ctx)
    if not curves:
        return Section("scaling", "Scaling with sequence length and batch size", [Para(
            "No scaling records in these runs (workload name “scaling-seq” / “scaling-batch”, "
            "from suites/test_scaling.py); nothing to plot.", cls="note")])
    blocks: list[Any] = []
    img = ctx.image("scaling", "scaling.png", "Scaling curves", plots.scaling_chart(curves))
    if img:
        blocks.append(img)
    rows = []
    for c in curves:
        k, used = plots.fit_exponent(c["xs"], c["ys"])
        pts = " · ".join(f"{x:g}→{_fmt(y, c['unit'])}" for x, y in zip(c["xs"], c["ys"], strict=True))
        rows.append([c["family"] or "", c["model"] or "", c["context"],
                     ("sequence length" if c["axis"] == "seq_len" else "batch size")
                     + (f" ({c['fixed']})" if c["fixed"] else ""),
                     Cell(c["metric"], code=True), pts,
                     Cell(f"{k:.2f}" if k is not None else "—"), Cell(f"{used} of {len(c['xs'])}"),
                     ctx.fp_cell(c["ref"])])
    blocks.append(Table(["Family", "Model", "Device · dtype · weights", "Sweep", "Metric", "Points (x → value)",
                         "Exponent k", "Points fitted", "FP"], rows, md_limit=40, numeric=(6, 7)))
    blocks.append(Para(
        "k is the least-squares slope of log(value) on log(x): value ∝ x^k, so k ≈ 1 is linear growth and "
        "k ≈ 2 quadratic; small sizes are dominated by fixed costs and pull k below the asymptotic exponent. "
        "Memory is the peak RSS the extraction adds over the loaded model; points ≤ 0 (no measurable growth) "
        "cannot enter a log fit and are left out.", cls="note"))
    return Section("scaling", "Scaling with sequence length and batch size", blocks)


# ---------------------------------------------------------------- detection and baselines


def _got_label(got: Any, families: set[str]) -> str:
    s = str(got)
    if s in families:
        return s
    if got is None or s.lower() in ("none", "null", "unknown", ""):
        return "none"
    if len(s) > 20 or ":" in s or " " in s:
        return "error"
    return s


def _detected_cell(got: Any, families: set[str]) -> Cell:
    if _got_label(got, families) != "error":
        return Cell(str(got))
    msg = str(got)
    return Cell("error", title=msg, md="error: " + (msg if len(msg) <= 60 else msg[:57] + "..."))


def _detection_section(ctx: _Ctx) -> Section | None:
    det = [r for r in ctx.cur if r.get("suite") == "detection" and r.get("verdict") != "not_measured"]
    if not det:
        return None
    families = set(FAMILY_ORDER)
    blocks: list[Any] = []
    labelled = [r for r in det if not is_baseline(r) and r.get("model") is None]
    baselines = {(r.get("metric"), (r.get("workload") or {}).get("name")): r for r in det if is_baseline(r)}
    tier_rows = []
    for r in sorted(labelled, key=lambda r: (r["metric"] == "detection_accuracy", r["metric"])):
        w = r.get("workload") or {}
        ex = r.get("extra") or {}
        tier = r["metric"].removeprefix("detection_accuracy").lstrip("_") or "all tiers (mean)"
        b = baselines.get(("baseline_" + r["metric"], w.get("name")))
        nfail = ex.get("failure_count", len(ex.get("failures") or [])) if "failures" in ex else None
        tier_rows.append([tier, Cell(r["metric"], code=True), Cell(_fmt(r.get("value"), r.get("unit"))),
                          Cell(str(w.get("entries", "—"))), Cell(str(nfail) if nfail is not None else "—"),
                          _target_cell(r), _verdict_cell(r["verdict"]),
                          Cell(_fmt(b.get("value"), b.get("unit")) if b else "—",
                               title=f"{b['metric']} ({(b.get('workload') or {}).get('method')})" if b else None)])
    if tier_rows:
        blocks += [Para("Labelled set: public model ids with their expected family, detected from the name, "
                        "the config and the bare module tree (tiers)."),
                   Table(["Tier", "Metric", "Accuracy", "Entries", "Wrong", "Target", "Verdict",
                          "Original rule (baseline)"], tier_rows, numeric=(2, 3, 4, 7))]

    # confusion panels
    panels: list[dict[str, Any]] = []
    reg = [r for r in det if r.get("model") and isinstance((r.get("extra") or {}).get("tiers"), dict)]
    labels_seen: set[str] = set()
    reg_counts: dict[str, dict[tuple[str, str], int]] = {}
    for r in reg:
        for tier, eg in r["extra"]["tiers"].items():
            if not isinstance(eg, dict):
                continue
            e, g = str(eg.get("expected")), _got_label(eg.get("got"), families)
            reg_counts.setdefault(tier, {})
            reg_counts[tier][(e, g)] = reg_counts[tier].get((e, g), 0) + 1
            labels_seen |= {e, g}
    for tier, counts in reg_counts.items():
        ok = sum(v for (e, g), v in counts.items() if e == g)
        total = sum(counts.values())
        panels.append({"source": "registered", "tier": tier, "counts": counts, "diagonal_known": True,
                       "title": f"registered models · {tier} tier\n{ok} of {total} correct"})
    failures_blocks: list[Any] = []
    for r in labelled:
        ex = r.get("extra") or {}
        conf = ex.get("confusion")
        if not isinstance(conf, dict):
            continue
        tier = r["metric"].removeprefix("detection_accuracy_")
        counts: dict[tuple[str, str], int] = {}
        for key, n in conf.items():
            e, _, g = str(key).partition("->")
            gl = _got_label(g, families)
            counts[(e, gl)] = counts.get((e, gl), 0) + int(n)
            labels_seen |= {e, gl}
        entries = (r.get("workload") or {}).get("entries")
        nfail = int(ex.get("failure_count", sum(conf.values())))
        title = f"labelled set · {tier} tier\n"
        title += f"{entries - nfail} of {entries} correct" if isinstance(entries, int) else f"{nfail} wrong"
        panels.append({"source": "labelled", "tier": tier, "counts": counts, "diagonal_known": False,
                       "title": title})
        fails = ex.get("failures") or []
        if fails:
            frows = [[Cell(str(f[0]), code=True), str(f[1]), _detected_cell(f[2], families)]
                     for f in fails if isinstance(f, list) and len(f) >= 3]
            more = f" (first {len(frows)} of {nfail})" if nfail > len(frows) else ""
            failures_blocks.append(Details(f"{tier} tier: {nfail} wrong{more}",
                                           [Table(["Model id", "Expected", "Detected"], frows, md_limit=15)]))
    expected = {e for p in panels for (e, _g) in p["counts"]}
    exp_order = [f for f in FAMILY_ORDER if f in expected] + sorted(expected - families)
    col_order = exp_order + sorted(labels_seen - set(exp_order) - {"none", "error"})
    col_order += [x for x in ("none", "error") if x in labels_seen]
    img = ctx.image("detection", "detection_confusion.png", "Detection confusion matrices",
                    plots.confusion_chart(panels, exp_order, col_order),
                    caption="Rows: expected family; columns: detected family; “error”: detection raised. Labelled "
                            "set: results keep the misclassifications only, so the diagonal reads “✓” (correct, "
                            "not counted per family) and each title gives the number correct.")
    if img:
        blocks.append(img)
    # text form of the confusions (the Markdown reads without the image)
    conf_lines = []
    for p in panels:
        wrong = sorted(((e, g, n) for (e, g), n in p["counts"].items() if e != g), key=lambda x: -x[2])
        src = "registered models" if p["source"] == "registered" else "labelled set"
        txt = ", ".join(f"{e} → {g}: {n}" for e, g, n in wrong) or "no confusions"
        conf_lines.append(f"{src}, {p['tier']} tier: {txt}")
    if conf_lines:
        blocks.append(Para("Confusions (expected → detected: count):\n" + "\n".join(conf_lines)))
    if reg:
        rrows, bad = [], 0
        for r in sorted(reg, key=lambda r: (_family_rank(r.get("family")), str(r.get("model")))):
            tiers = r["extra"]["tiers"]
            cells = []
            wrong = False
            for tier in ("name", "config", "module"):
                eg = tiers.get(tier) or {}
                ok = eg.get("got") == eg.get("expected")
                wrong |= not ok and bool(eg)
                cells.append(Cell(str(eg.get("got", "—")), cls=None if ok else "v-fail", title=str(eg.get("got"))))
            bad += wrong
            rrows.append(([r["model"], r.get("family") or "", *cells, _verdict_cell(r["verdict"])], wrong))
        table = Table(["Model", "Expected family", "name tier", "config tier", "module tier", "Verdict"],
                      [row for row, _ in rrows])
        blocks.append(Para(f"Registered models: {len(reg)}; {bad} with a wrong tier."))
        if bad:
            blocks.append(Table(table.header, [row for row, w in rrows if w], md_limit=20))
        blocks.append(Details(f"All {len(reg)} registered models, per tier", [table], md=False))
    blocks += failures_blocks
    base = [r for r in ctx.cur if is_baseline(r)]
    if base:
        blocks.append(_baselines_section(ctx, base, level=3))
    return Section("detection", "Family detection", blocks)


def _baselines_section(ctx: _Ctx, base: list[dict[str, Any]], level: int = 2) -> Section:
    """Every `baseline_*` record beside the figure it is the reference for (same suite, model, workload name)."""
    rows = []
    for b in base:
        metric = b["metric"].removeprefix("baseline_")
        name = (b.get("workload") or {}).get("name")
        ours = next((r for r in ctx.cur if r.get("metric") == metric and r.get("suite") == b.get("suite")
                     and r.get("model") == b.get("model") and (r.get("workload") or {}).get("name") == name
                     and not is_baseline(r)), None)
        diff = "—"
        if ours and ours.get("value") is not None and b.get("value") is not None:
            if b.get("unit") == "fraction":
                diff = f"{(ours['value'] - b['value']) * 100:+.1f} points"
            elif b["value"]:
                diff = f"{_rel_change(b['value'], ours['value']) * 100:+.1f}%"  # type: ignore[operator]
        rows.append([Cell(b["metric"], code=True), str((b.get("workload") or {}).get("method") or "—"),
                     b.get("model") or "all", Cell(_fmt(b.get("value"), b.get("unit"))),
                     Cell(metric, code=True), Cell(_fmt(ours.get("value"), ours.get("unit")) if ours else "—"),
                     Cell(diff)])
    return Section("baselines", "Baselines (reference methods)", [
        Para("Records named baseline_* measure a reference method (e.g. the original design's detection rule) on "
             "the same workload; they carry no target and are shown next to NeuronMap's figure."),
        Table(["Baseline metric", "Method", "Model", "Baseline", "Compared with", "NeuronMap", "Difference"],
              rows, numeric=(3, 5, 6)),
    ], level=level)


# ---------------------------------------------------------------- baseline comparison


def _cmp_key(r: dict[str, Any]) -> tuple[Any, ...]:
    """Like harness.gate.record_key: (suite, model, metric, workload name, workload shape)."""
    w = r.get("workload") or {}
    shape = tuple(sorted((k, str(v)) for k, v in w.items() if k != "name"))
    return (r.get("suite"), r.get("model"), r.get("metric"), w.get("name"), shape)


def _strip(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def _run_gate(base: list[dict[str, Any]], cur: list[dict[str, Any]]) -> tuple[dict[tuple[Any, ...], dict], str]:
    """Outcomes of `harness.gate.compare` by key, and a note; ({}, why) when the gate is unavailable."""
    try:
        gate = importlib.import_module("harness.gate")  # honours sys.modules, unlike `from harness import gate`
    except ImportError as e:
        return {}, f"the gate (harness.gate) is not available here ({e}); relative changes only"
    compare = getattr(gate, "compare", None)
    if compare is None:
        return {}, "harness.gate has no compare(); relative changes only"
    try:
        from harness.results import Record

        result = compare([Record.from_dict(_strip(r)) for r in base], [Record.from_dict(_strip(r)) for r in cur])
    except (TypeError, AttributeError):
        try:
            result = compare([_strip(r) for r in base], [_strip(r) for r in cur])
        except Exception as e:  # the report must render whatever the gate does
            return {}, f"the gate failed ({type(e).__name__}: {e}); relative changes only"
    except Exception as e:
        return {}, f"the gate failed ({type(e).__name__}: {e}); relative changes only"
    by_key: dict[tuple[Any, ...], dict] = {}
    loose: dict[tuple[Any, ...], list[dict]] = {}
    for c in result or []:
        d = c.to_dict() if hasattr(c, "to_dict") else dict(c) if isinstance(c, dict) else None
        if d is None:
            continue
        key = getattr(c, "key", None) or d.get("key")
        if isinstance(key, (tuple, list)) and len(key) == 5:
            k = tuple(key)
            by_key[(k[0], k[1], k[2], k[3], tuple(tuple(x) for x in k[4]))] = d
        else:
            loose.setdefault((d.get("suite"), d.get("model"), d.get("metric"), d.get("workload")), []).append(d)
    for k4, ds in loose.items():
        if len(ds) == 1:
            by_key[(*k4, None)] = ds[0]
    return by_key, "outcomes from harness.gate (noise-aware: latency needs ≥ threshold and a significant " \
                   "Mann-Whitney U, judged per round relative to the model's own forward where both runs timed " \
                   "that reference (column Judged; the chart shows raw changes); memory beyond max(+3%, +32 MB); " \
                   "stated targets are floors)"


def _judged_text(d: dict[str, Any]) -> str:
    """The change a latency verdict was taken on: relative to the reference, or raw; empty for other metrics."""
    judged, basis = d.get("judged_change"), d.get("basis")
    if judged is None or basis is None:
        return ""
    return f"{judged * 100:+.1f}% " + ("vs reference" if basis == "reference" else "raw")


def _comparison_section(ctx: _Ctx) -> Section:
    if not ctx.baseline_runs:
        return Section("comparison", "Comparison with a baseline", [Para(
            "No baseline given (python -m harness report RESULTS --baseline results/baselines/).", cls="note")])
    base = latest(run_records(ctx.baseline_runs))
    base_m = {_cmp_key(r): r for r in base if r.get("value") is not None or r.get("verdict") == "error"}
    cur_m = {_cmp_key(r): r for r in ctx.cur if r.get("value") is not None or r.get("verdict") == "error"}
    gate_out, note = _run_gate(base, ctx.cur)
    rows_data = []
    for key in list(dict.fromkeys([*cur_m, *base_m])):
        b, c = base_m.get(key), cur_m.get(key)
        if b is None and c is None:
            continue
        d = gate_out.get(key) or gate_out.get((*key[:4], None))
        outcome = d.get("outcome") if d else ("no gate" if not gate_out else "—")
        ref = c or b
        bv, cv = (b or {}).get("value"), (c or {}).get("value")
        rows_data.append({"key": key, "b": b, "c": c, "ref": ref, "outcome": outcome, "change": _rel_change(bv, cv),
                          "gate": d})
    rank = {o: i for i, o in enumerate(OUTCOME_ORDER)}
    rows_data.sort(key=lambda x: (rank.get(x["outcome"], len(rank)), -abs(x["change"] or 0)))
    rows = []
    for x in rows_data:
        ref = x["ref"]
        d = x["gate"] or {}
        hover = "; ".join(d.get("reasons") or [])
        if d.get("p_value") is not None:
            hover += f" (Mann-Whitney p = {d['p_value']:.3g})"
        unit = ref.get("unit")
        rows.append([ref.get("suite") or "", ref.get("model") or "all models", Cell(ref["metric"], code=True),
                     workload_label(ref.get("workload")),
                     Cell(_fmt((x["b"] or {}).get("value"), unit) if x["b"] else "absent"),
                     Cell(_fmt((x["c"] or {}).get("value"), unit) if x["c"] else "absent"),
                     Cell(_change_text((x["b"] or {}).get("value"), (x["c"] or {}).get("value"), unit)),
                     Cell(_judged_text(d)),
                     Cell(str(x["outcome"]), cls=f"o-{x['outcome']}", title=hover or None)])
    counts: dict[str, int] = {}
    for x in rows_data:
        counts[x["outcome"]] = counts.get(x["outcome"], 0) + 1
    files = ", ".join(Path(r["_file"]).name for r in ctx.baseline_runs)
    blocks: list[Any] = [
        Para(f"Baseline: {files}. {len(rows_data)} figures compared: "
             + ", ".join(f"{n} {o}" for o, n in sorted(counts.items(), key=lambda kv: rank.get(kv[0], 99))) + "."),
        Para(note[0].upper() + note[1:] + ".", cls="note"),
    ]
    chart_rows = [{"label": f"{x['ref'].get('model') or 'all'} · {x['ref']['metric']} · "
                            f"{short_workload(x['ref'].get('workload'))}",
                   "change": x["change"], "outcome": x["outcome"]}
                  for x in rows_data if x["ref"].get("unit") in ("s", "GB")
                  and abs((x["b"] or {}).get("value") or 0) >= (0.001 if x["ref"].get("unit") == "GB" else 0)]
    img = ctx.image("comparison", "comparison.png", "Change against the baseline", plots.comparison_chart(chart_rows))
    if img:
        blocks.append(img)
    header = ["Suite", "Model", "Metric", "Workload", "Baseline", "Current", "Change", "Judged", "Gate"]
    quiet = {"pass", "—", "no gate"} if gate_out else set()
    loud_rows = [row for row, x in zip(rows, rows_data, strict=True) if x["outcome"] not in quiet]
    quiet_rows = [row for row, x in zip(rows, rows_data, strict=True) if x["outcome"] in quiet]
    if loud_rows:
        blocks.append(Table(header, loud_rows, md_limit=30, numeric=(4, 5, 6)))
    if quiet_rows:
        blocks.append(Details(f"{len(quiet_rows)} figures within the gate's thresholds" if gate_out
                              else f"All {len(quiet_rows)} figures", [Table(header, quiet_rows, md_limit=20,
                                                                            numeric=(4, 5, 6))]))
    return Section("comparison", "Comparison with a baseline", blocks)


# ---------------------------------------------------------------- trend


def _run_label(run: dict[str, Any]) -> str:
    start = str(run["run"].get("start") or "")
    rid = str(run["run"].get("id") or "")
    return f"{start[5:16].replace('T', ' ')} · {rid[-6:]}" if len(start) >= 16 else rid


def _trend_section(ctx: _Ctx) -> Section:
    if len(ctx.runs) < 2:
        return Section("trend", "Trend over runs", [Para(
            "One run given; a trend needs the results files of several runs (e.g. python -m harness report "
            "results/).", cls="note")])
    series: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in ctx.records:
        if r.get("value") is None or is_scaling(r) or r.get("verdict") == "error":
            continue
        kind = "latency" if r.get("metric") == "extraction_latency" else \
            "memory" if r.get("metric") == "peak_memory" else None
        if kind is None:
            continue
        k = (kind, r.get("model"), workload_label(r.get("workload")), _context(r))
        s = series.setdefault(k, {"kind": kind, "label": f"{r.get('model')} · {short_workload(r.get('workload'))}",
                                  "points": {}, "unit": r.get("unit"), "ref": r})
        v = (r.get("stats") or {}).get("median", r["value"]) if kind == "latency" else r["value"]
        s["points"][r["_run"]["index"]] = v
    multi = [s for s in series.values() if len(s["points"]) >= 2]
    if not multi:
        return Section("trend", "Trend over runs", [Para(
            f"{len(ctx.runs)} runs given, but no latency or peak-memory figure was measured in two of them.",
            cls="note")])
    # a run with no figure here (a scaling-only run, say) gets no empty column on the x axis
    used = sorted({i for s in multi for i in s["points"]})
    column = {run_index: x for x, run_index in enumerate(used)}
    for s in multi:
        s["points"] = sorted((column[i], v) for i, v in s["points"].items())
    blocks: list[Any] = []
    img = ctx.image("trend", "trend.png", "Trend over runs",
                    plots.trend_chart(multi, [_run_label(ctx.runs[i]) for i in used]))
    if img:
        blocks.append(img)
    rows = []
    for s in sorted(multi, key=lambda s: (s["kind"], s["label"])):
        vals = [v for _, v in s["points"]]
        first, last = vals[0], vals[-1]
        ch = _rel_change(first, last)
        ref = s["ref"]
        rows.append([ref.get("model") or "", Cell(ref["metric"], code=True), workload_label(ref.get("workload")),
                     _context(ref), Cell(str(len(vals))), Cell(_fmt(first, s["unit"])), Cell(_fmt(last, s["unit"])),
                     Cell(f"{ch * 100:+.1f}%" if ch is not None else "—"),
                     Cell(f"{_fmt(min(vals), s['unit'])} – {_fmt(max(vals), s['unit'])}")])
    blocks.append(Table(["Model", "Metric", "Workload", "Device · dtype · weights", "Runs", "First", "Last",
                         "Change", "Range"], rows, md_limit=30, numeric=(4, 5, 6, 7, 8)))
    blocks.append(Para("Latency: the median of each run's samples; memory: the peak RSS added. Runs in start "
                       "order; scaling sweeps are left out (see their own section).", cls="note"))
    return Section("trend", "Trend over runs", blocks)


# ---------------------------------------------------------------- the rest


def _peers_section(ctx: _Ctx) -> Section | None:
    """Issue 6: NeuronMap beside plain HF, TransformerLens and nnsight, one row per (model, workload, tool)."""
    from harness.peers import side_by_side_rows

    rows = side_by_side_rows(ctx.cur)
    if not rows:
        return None
    table = []
    for x in rows:
        iqr = f"{x['q1']:.3f} – {x['q3']:.3f}" if x.get("q1") is not None and x.get("q3") is not None else "—"
        shape = f"{x['workload']} ({x.get('texts') or '?'}×{x.get('tokens_per_text') or '?'})"
        stopped = {True: "yes", False: "no"}.get(x.get("stopped_early"), "—")
        ratio = Cell("not measured", title=x["note"]) if x.get("note") else Cell(_fmt(x.get("overhead_ratio"), None))
        table.append([x["model"] or "", shape, Cell(x["tool"], code=True), ratio, Cell(iqr), stopped,
                      Cell(_fmt(x.get("extra_peak_memory"), "GB")),
                      Cell("—" if x.get("max_abs_diff") is None else f"{x['max_abs_diff']:.2g}"),
                      Cell(_fmt(x.get("load_time"), "s")), Cell(_fmt(x.get("load_peak_memory"), "GB"))])
    verdicts = [r for r in ctx.cur if r.get("suite") == "peers" and r.get("metric", "").startswith("neuronmap_lowest")]
    vrows = [[r.get("model") or "", (r.get("workload") or {}).get("name") or "", Cell(r["metric"], code=True),
              Cell(_fmt(r.get("value"), "bool")),
              Cell(str((r.get("extra") or {}).get("best_other") or "—"), code=True),
              _verdict_cell(r.get("verdict"))] for r in _sorted_models(verdicts)]
    blocks: list[Any] = [
        Para("Same weights, same texts, same blocks (first, middle and last), one interleaved timing run per model "
             "and workload. Overhead ratio = median call / median bare forward (every call tokenizes; the bare "
             "forward does not); IQR of the per-round paired ratios. Extra memory = peak RSS of one call minus that "
             "of one bare forward, in a fresh process per tool (negative: less than the bare forward). Max abs diff "
             "against HF output_hidden_states at real tokens. Load: the tool's own load of the same checkpoint "
             "(the stop rows share their peer's load). Hover a “not measured” cell for the reason.", cls="note"),
        Table(["Model", "Workload", "Tool", "Overhead ratio", "IQR", "Stopped early", "Extra memory",
               "Max abs diff", "Load time", "Load peak"], table, md_limit=60, numeric=(3, 4, 6, 7, 8, 9)),
    ]
    if vrows:
        blocks.append(Table(["Model", "Workload", "Verdict", "NeuronMap lowest", "Best other", "Target"], vrows,
                            md_limit=30))
    return Section("peers", "Side by side with HF, TransformerLens and nnsight", blocks)


def _other_section(ctx: _Ctx) -> Section | None:
    shown_metrics = ("extraction_latency", "peak_memory", "reclamation")
    other = [r for r in ctx.cur if r.get("verdict") == "not_applicable" and not is_baseline(r) and not is_scaling(r)
             and r.get("suite") not in ("detection", "peers") and r.get("metric") not in shown_metrics]
    if not other:
        return None
    rows = [[r.get("suite") or "", r.get("model") or "all models", Cell(r["metric"], code=True),
             Cell(_fmt(r.get("value"), r.get("unit"))), _context(r), workload_label(r.get("workload")),
             ctx.fp_cell(r)] for r in other]
    return Section("other", "Other measurements (no stated target applies)", [
        Table(["Suite", "Model", "Metric", "Value", "Device · dtype · weights", "Workload", "FP"], rows,
              md_limit=50, numeric=(3,))])


def _fingerprint_block(ctx: _Ctx) -> Details | None:
    if not ctx.fp_labels:
        return None
    rows = []
    for key, label in ctx.fp_labels.items():
        fp = ctx.fp_data[key]
        lib = fp.get("libraries") or {}
        hw = fp.get("hardware") or {}
        gpus = hw.get("gpus") or []
        rows.append([
            Cell(label, code=True), Cell(str(fp.get("adapter_source") or "—"), code=True),
            Cell(str(fp.get("model_config") or "—"), code=True),
            " · ".join(str(fp.get(k)) for k in ("weights", "dtype", "device") if fp.get(k)),
            ", ".join(f"{k} {v}" for k, v in lib.items() if v) if isinstance(lib, dict) else str(lib),
            f"{hw.get('cpu') or '?'} ({hw.get('cores') or '?'} cores)"
            + (", " + ", ".join(str(g.get("name")) for g in gpus if isinstance(g, dict)) if gpus else ", no GPU"),
            Cell(str(ctx.fp_count.get(key, 0))),
        ])
    return Details(f"Fingerprints ({len(rows)} distinct; the FP column of the tables above)", [
        Para("What makes two figures comparable: the gate compares like with like only. The adapter source hash "
             "is traceability (a code change is what the gate judges).", cls="note"),
        Table(["FP", "Adapter source", "Model config", "Weights · dtype · device", "Libraries", "Hardware",
               "Rows"], rows, md_limit=20, numeric=(6,)),
    ])


def build_report(runs: list[dict[str, Any]], baseline_runs: list[dict[str, Any]] | None = None,
                 ) -> tuple[list[Any], list[Section], dict[str, Image]]:
    """The document: (intro blocks, sections, images by key)."""
    records = run_records(runs)
    ctx = _Ctx(runs=runs, records=records, cur=latest(records), targets=_targets(runs), baseline_runs=baseline_runs)
    verdicts, counts = _verdict_section(ctx)
    errors = _errors_section(ctx)
    sections: list[Section] = [verdicts, errors]
    # the compatibility matrix across transformers releases (harness/report_compat.py; None for one release)
    compat = compat_section(runs)
    if compat:
        sections.append(compat)
    sections += [_latency_section(ctx), _memory_section(ctx), _reclamation_section(ctx), _scaling_section(ctx)]
    det = _detection_section(ctx)
    if det:
        sections.append(det)
    other_base = [r for r in ctx.cur if is_baseline(r) and r.get("suite") != "detection"]
    if other_base:
        sections.append(_baselines_section(ctx, other_base))
    peers = _peers_section(ctx)
    if peers:
        sections.append(peers)
    sections += [_comparison_section(ctx), _trend_section(ctx)]
    other = _other_section(ctx)
    if other:
        sections.append(other)
    n_err = len([r for r in ctx.cur if r.get("verdict") == "error"])
    summary = ", ".join(f"{counts[k]} {VERDICT_TEXT[k]}" for k in ("pass", "fail", "error", "not_measured")
                        if counts.get(k))
    intro: list[Any] = [
        Para(f"Stated targets: {summary or 'none'}. "
             + (f"{n_err} check{'s' if n_err > 1 else ''} ended in an error (see Errors)." if n_err
                else "No errors.")),
        _runs_table(runs),
    ]
    if len(runs) > 1:
        intro.append(Para(f"{len(runs)} runs, in start order. For each (suite, model) the figures are those of "
                          "the latest run that ran that suite for that model; the trend section shows the history.",
                          cls="note"))
    fp = _fingerprint_block(ctx)
    files = ", ".join(Path(r["_file"]).name for r in runs)
    sections.append(Section("sources", "Sources", [*([fp] if fp else []), Para(f"Results files: {files}.")]))
    return intro, sections, ctx.images


# ---------------------------------------------------------------- writing


def _atomic_write(path: Path, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is for reading
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_report(
    run_paths: Sequence[str | Path], out_dir: str | Path, baseline: Sequence[str | Path] | None = None
) -> dict[str, Path]:
    """Write report.md, report.html and the charts for the given results files (or folders) into `out_dir`.

    `baseline`: results files or folders of a baseline run to compare with. Returns {"report": report.md,
    "html": report.html, <chart key>: png path, ...}; a chart is left out (and the report says why) when no
    record has data for it. Raises ValueError / FileNotFoundError for missing or unreadable inputs.
    """
    runs = load_runs(run_paths)
    if not runs:
        raise ValueError(f"no results files in {[str(p) for p in run_paths]}")
    baseline_runs = None
    if baseline:
        baseline_runs = load_runs(baseline)
        if not baseline_runs:
            raise ValueError(f"no baseline results files in {[str(p) for p in baseline]}")
    intro, sections, images = build_report(runs, baseline_runs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for key, img in images.items():
        written[key] = _atomic_write(out / img.name, img.png)
    md = md_document(TITLE, [*intro, *sections])
    page = html_document(TITLE, intro, sections)
    return {
        "report": _atomic_write(out / "report.md", md.encode("utf-8")),
        "html": _atomic_write(out / "report.html", page.encode("utf-8")),
        **written,
    }
