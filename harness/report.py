"""Turn results files into `report.md` (fits a CI job summary) and PNG charts.

Why: the verdict table is the point of a run — every stated target, its quote, what was measured and the
verdict, with unmeasured targets shown as such rather than left out. Charts show spread (median with
IQR) and the target line, so a pass by a hair and a pass by a mile look different.
Matplotlib is used through `Figure` objects (Agg), never pyplot: no global backend state, safe in CI.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from harness.results import find_run_files, load_run

__all__ = ["write_report"]

_VERDICT_MARK = {
    "pass": "✅ pass",
    "fail": "❌ fail",
    "error": "⚠️ error",
    "not_measured": "⬜ not measured",
    "not_applicable": "n/a",
}
_SERIES_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974"]
_TARGET_COLOR = "#C44E52"


# ---------------------------------------------------------------- data


def _workload_label(w: Any, width: int | None = None) -> str:
    """Short, stable text for a workload dict (e.g. 'layers=0,6,11 · texts=8 · tokens=128')."""
    if not isinstance(w, dict) or not w:
        return "default workload"
    parts = []
    for k in sorted(w, key=lambda k: (k != "name", k)):  # a workload's name, when given, leads
        v = w[k]
        if isinstance(v, (list, tuple)):
            v = ",".join(str(x) for x in v) if len(v) <= 6 else f"{len(v)} items"
        elif isinstance(v, str) and len(v) > 24:
            v = v[:21] + "..."
        parts.append(f"{k}={v}")
    text = " · ".join(parts)
    return textwrap.fill(text, width) if width else text


def _wrap_model(model: str | None, width: int = 16) -> str:
    """Wrap long model names, preferring to break after '/' (readable tick labels)."""
    if not model:
        return "(all models)"
    pieces = model.split("/")
    lines: list[str] = []
    for i, p in enumerate(pieces):
        p = p + ("/" if i < len(pieces) - 1 else "")
        lines.extend(textwrap.wrap(p, width, break_on_hyphens=True) or [p])
    return "\n".join(lines)


def _frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    multi = len(runs) > 1
    for run in runs:
        rid = run["run"]["id"]
        for r in run.get("records", []):
            stats = r.get("stats") or {}
            target = r.get("target") or {}
            workload = _workload_label(r.get("workload"))
            series = textwrap.fill(workload, 28)
            if multi:
                series += f"\nrun {rid}"
            rows.append(
                {
                    "run_id": rid,
                    "suite": r.get("suite"),
                    "model": r.get("model"),
                    "family": r.get("family"),
                    "weights": r.get("weights"),
                    "device": r.get("device"),
                    "dtype": r.get("dtype"),
                    "metric": r.get("metric"),
                    "value": r.get("value"),
                    "unit": r.get("unit"),
                    "verdict": r.get("verdict"),
                    "error": r.get("error"),
                    "target_id": target.get("id"),
                    "target": target or None,
                    "median": stats.get("median"),
                    "q1": stats.get("q1"),
                    "q3": stats.get("q3"),
                    "rounds": stats.get("rounds"),
                    "workload": workload,
                    "series": series,
                }
            )
    cols = ["run_id", "suite", "model", "family", "weights", "device", "dtype", "metric", "value", "unit"]
    return pd.DataFrame(
        rows,
        columns=[
            *cols,
            "verdict",
            "error",
            "target_id",
            "target",
            "median",
            "q1",
            "q3",
            "rounds",
            "workload",
            "series",
        ],
    )


def _targets(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Union of the runs' target lists by id, in file order; a later run's definition wins."""
    by_id: dict[str, dict[str, Any]] = {}
    for run in runs:
        for t in (run.get("targets") or {}).get("list", []):
            by_id[t["id"]] = t
    return list(by_id.values())


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
        return f"{v:.3g} s" if v >= 0.01 else f"{v * 1e3:.3g} ms"
    return f"{v:.3g} {unit or ''}".strip()


def _threshold(t: dict[str, Any]) -> str:
    op, val, unit = t.get("operator"), t.get("value"), t.get("unit")
    if op == "between" and isinstance(val, list):
        return f"{_fmt(val[0], unit)} – {_fmt(val[1], unit)}"
    return f"{op} {_fmt(val, unit)}"


def _cell(s: Any) -> str:
    """Markdown-table-safe text."""
    return str(s).replace("|", "\\|").replace("\r", " ").replace("\n", " ").strip()


def _context(row: pd.Series) -> str:
    bits = [b for b in (row["device"], row["dtype"], row["weights"]) if isinstance(b, str) and b]
    return f" ({', '.join(bits)})" if bits else ""


def _context_full(row: pd.Series) -> str:
    """Device, dtype, weights and workload: what a reader needs to tell two figures apart."""
    bits = [b for b in (row["device"], row["dtype"], row["weights"]) if isinstance(b, str) and b]
    wl = row["workload"] if isinstance(row["workload"], str) else ""
    if wl and wl != "default workload":
        bits.append(wl)
    return f" ({'; '.join(bits)})" if bits else ""


def _measured_text(row: pd.Series, multi_run: bool, mark: bool) -> str:
    who = row["model"] if isinstance(row["model"], str) else "all models"
    txt = f"{who}{_context_full(row)}: "
    if row["verdict"] == "error":
        txt += "error"
    elif row["verdict"] == "not_measured":
        txt += "not measured"
    else:
        txt += _fmt(row["value"], row["unit"])
        if pd.notna(row["q1"]) and pd.notna(row["q3"]) and row["unit"] == "s":
            txt += f" (IQR {_fmt(row['q1'], 's')}–{_fmt(row['q3'], 's')}, n={int(row['rounds'] or 0)})"
    if multi_run:
        txt += f" [run {row['run_id']}]"
    if mark and row["verdict"] in ("pass", "fail"):
        txt += " " + _VERDICT_MARK[row["verdict"]].split(" ", 1)[0]
    return txt


def _overall(verdicts: Iterable[str]) -> str:
    vs = set(verdicts)
    for v in ("fail", "error", "pass"):
        if v in vs:
            return v
    return "not_measured"


def _verdict_table(df: pd.DataFrame, targets: list[dict[str, Any]], multi_run: bool) -> tuple[str, dict]:
    lines = [
        "| Target | Claim (quote) | Threshold | Measured | Verdict |",
        "|---|---|---|---|---|",
    ]
    counts: dict[str, int] = {}
    for t in targets:
        rows = df[df["target_id"] == t["id"]]
        overall = _overall(rows["verdict"]) if len(rows) else "not_measured"
        counts[overall] = counts.get(overall, 0) + 1
        shown = rows[rows["verdict"] != "not_measured"]
        measured = [_measured_text(r, multi_run, mark=len(shown) > 1) for _, r in shown.iterrows()]
        applies = ""
        if t.get("models"):
            applies = f" — {', '.join(t['models'][:2])}{'…' if len(t['models']) > 2 else ''}"
        elif t.get("families"):
            applies = f" — family {', '.join(t['families'])}"
        lines.append(
            "| "
            + " | ".join(
                [
                    _cell(f"`{t['id']}`{applies}"),
                    _cell(f"“{t['quote']}”"),
                    _cell(_threshold(t)),
                    "<br>".join(_cell(m) for m in measured) or "—",
                    _VERDICT_MARK.get(overall, overall),
                ]
            )
            + " |"
        )
    return "\n".join(lines), counts


# ---------------------------------------------------------------- charts


def _save(fig: Figure, path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _group_label(model: Any, device: Any, dtype: Any, weights: Any, target: Any) -> str:
    label = _wrap_model(model if isinstance(model, str) else None)
    ctx = " · ".join(b for b in (device, dtype, weights) if isinstance(b, str) and b)
    if ctx:
        label += "\n" + ctx
    if isinstance(target, dict) and target:
        label += "\ntarget " + _threshold(target)
    return label


def _minor_log_label(v: float, _pos: int) -> str:
    """Label the 2x and 5x minor ticks of a log axis in plain numbers (0.2, 0.5, 2, 5)."""
    if v <= 0:
        return ""
    lead = round(v / 10 ** math.floor(math.log10(v)))
    return f"{v:g}" if lead in (2, 5) else ""


def _bar_chart(
    data: pd.DataFrame,
    *,
    title: str,
    ylabel: str,
    path: Path,
    scale: float = 1.0,
    hline: tuple[float, str] | None = None,
    per_group_targets: bool = True,
    value_fmt: str = "{:.3g}",
    allow_log: bool = False,
) -> Path | None:
    """Grouped bars: one group per (model, device, dtype, weights), one bar per series (workload/run).

    Medians with IQR error bars where stats exist; dashed target segment over each group whose records
    carry a target. With `allow_log`, a log axis is used when values span more than 30x, so a 16-token
    workload stays visible next to a 1024-token one. The legend sits outside the axes: it can never
    cover a bar or a target line.
    """
    data = data[data["value"].notna()].copy()
    if data.empty:
        return None
    gkeys = ["model", "device", "dtype", "weights"]
    data[gkeys] = data[gkeys].fillna("")
    groups = list(dict.fromkeys(data[gkeys].itertuples(index=False, name=None)))
    series = list(dict.fromkeys(data["series"]))
    n_g, n_s = len(groups), len(series)
    width = 0.8 / n_s

    bars: list[tuple[int, int, float, float, float, str]] = []  # (group, series, x, y, err lo/hi)
    targets: list[tuple[int, dict[str, Any] | None]] = []
    for gi, g in enumerate(groups):
        gd = data[(data[gkeys] == pd.Series(g, index=gkeys)).all(axis=1)]
        targets.append((gi, next((t for t in gd["target"] if isinstance(t, dict) and t), None)))
        for si, sname in enumerate(series):
            sd = gd[gd["series"] == sname]
            if sd.empty:
                continue
            row = sd.iloc[-1]
            med = float(row["median"] if pd.notna(row["median"]) else row["value"]) * scale
            lo = hi = 0.0
            if pd.notna(row["q1"]) and pd.notna(row["q3"]):
                lo = max(0.0, med - float(row["q1"]) * scale)
                hi = max(0.0, float(row["q3"]) * scale - med)
            bars.append((gi, si, gi - 0.4 + width * (si + 0.5), med, lo, hi))

    ys = [b[3] for b in bars if b[3] > 0]
    tvals = [
        float(t["value"]) * scale for _, t in targets if per_group_targets and t and t.get("operator") != "between"
    ]
    span = (max(ys + tvals) / min(ys)) if ys else 1.0
    log = allow_log and span > 30

    fig_w = min(20.0, max(7.0, 2.5 + n_g * max(1.4, 0.35 * n_s)))
    fig = Figure(figsize=(fig_w, 5.4), layout="constrained")
    ax = fig.add_subplot()
    if log:
        ax.set_yscale("log")
    for gi, si, x, y, lo, hi in bars:
        ax.bar(
            x,
            y,
            width=width * 0.92,
            color=_SERIES_COLORS[si % len(_SERIES_COLORS)],
            label=(
                series[si]
                if series[si] != "default workload" and (gi, si) == next((b[0], b[1]) for b in bars if b[1] == si)
                else None
            ),
            yerr=[[lo], [hi]] if (lo or hi) else None,
            capsize=3,
            ecolor="#333333",
        )
    drawn = False
    for gi, t in targets:
        if per_group_targets and t and t.get("operator") != "between":
            ax.hlines(
                float(t["value"]) * scale,
                gi - 0.45,
                gi + 0.45,
                colors=_TARGET_COLOR,
                linestyles="--",
                linewidth=2,
                label=None if drawn else "stated target",
                zorder=3,
            )
            drawn = True
    if hline is not None:
        ax.axhline(hline[0] * scale, color=_TARGET_COLOR, linestyle="--", linewidth=2, label=hline[1], zorder=3)
    top = max([b[3] + b[5] for b in bars] + tvals + ([hline[0] * scale] if hline else []))
    if log:
        ax.set_ylim(min(ys) / 2, top * 3)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))
    else:
        ax.set_ylim(0, top * 1.15)
    # Value labels sit in the middle of each bar (on a bar-coloured box), clear of the error bars at the
    # top and legible where a target line crosses the bar.
    bottom = ax.get_ylim()[0]
    for _gi, si, x, y, _lo, _hi in bars:
        color = _SERIES_COLORS[si % len(_SERIES_COLORS)]
        ax.text(
            x,
            (y * bottom) ** 0.5 if log else y / 2,
            value_fmt.format(y),
            ha="center",
            va="center",
            fontsize=7,
            color="white",
            rotation=90 if n_s > 2 else 0,
            zorder=4,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": color, "edgecolor": "none"},
        )
    labels = [_group_label(*g, t if per_group_targets else None) for g, (_, t) in zip(groups, targets, strict=True)]
    ax.set_xticks(range(n_g))
    rotate = n_g > 6
    ax.set_xticklabels(labels, rotation=30 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    ax.set_xlim(-0.6, n_g - 0.4)
    ax.set_ylabel(ylabel + (" — log scale" if log else ""))
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3, which="both" if log else "major")
    ax.set_axisbelow(True)
    handles, leg_labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, leg_labels, loc="outside right upper", fontsize=8, title="workload", title_fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------- report


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
    ]
    if gpus:
        parts.append(", ".join(f"{g.get('name')}" for g in gpus))
    else:
        parts.append("no GPU")
    return "; ".join(parts)


def write_report(run_paths: list[Path], out_dir: Path) -> dict[str, Path]:
    """Write report.md and charts for the given results files (or folders of them) into `out_dir`.

    Returns {"report": ..., "latency": ..., "peak_memory": ..., "reclamation": ...}; a chart is left
    out (and the report says so) when no record has data for it.
    """
    files = find_run_files(run_paths)
    if not files:
        raise ValueError(f"no results files in {[str(p) for p in run_paths]}")
    runs = [load_run(f) for f in files]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = _frame(runs)
    targets = _targets(runs)
    multi = len(runs) > 1
    written: dict[str, Path] = {}

    lat = _bar_chart(
        df[df["metric"] == "extraction_latency"],
        title="Activation extraction latency (median, IQR error bars)",
        ylabel="latency per extraction call (s)",
        path=out / "latency.png",
        allow_log=True,
    )
    if lat:
        written["latency"] = lat
    mem = _bar_chart(
        df[df["metric"] == "peak_memory"],
        title="Peak memory while loading and extracting",
        ylabel="peak RSS increase over baseline (GB = 1e9 B)",
        path=out / "peak_memory.png",
        value_fmt="{:.2f}",
    )
    if mem:
        written["peak_memory"] = mem
    rec_df = df[df["metric"] == "reclamation"]
    rec_t = next((t for t in targets if t.get("metric") == "reclamation" and t.get("operator") != "between"), None)
    rec_line = (float(rec_t["value"]), f"stated target {_threshold(rec_t)}") if rec_t else (0.90, "0.90")
    recl = _bar_chart(
        rec_df,
        title="Memory reclaimed after unloading",
        ylabel="fraction of load-time memory returned (%)",
        path=out / "reclamation.png",
        scale=100.0,
        value_fmt="{:.1f}%",
        hline=(rec_line[0], rec_line[1]),
        per_group_targets=False,
    )
    if recl:
        written["reclamation"] = recl

    table, counts = _verdict_table(df, targets, multi)
    lines = ["# NeuronMap Bench report", ""]
    for run in runs:
        r = run["run"]
        commit = (r.get("git_commit") or "?")[:10]
        dirty = " (dirty)" if r.get("dirty") else ""
        lines.append(
            f"- Run `{r['id']}` · {r.get('start')} → {r.get('end')} · commit `{commit}`{dirty} · "
            f"`{_cell(r.get('command') or '')}`"
        )
        lines.append(f"  - {_cell(_env_line(run))}")
    summary = ", ".join(
        f"{counts[k]} {_VERDICT_MARK[k].split(' ', 1)[-1]}"
        for k in ("pass", "fail", "error", "not_measured")
        if counts.get(k)
    )
    lines += ["", "## Stated targets", "", f"{len(targets)} targets: {summary or 'none'}.", "", table, ""]

    lines += ["## Charts", ""]
    for key, title in (
        ("latency", "Extraction latency"),
        ("peak_memory", "Peak memory"),
        ("reclamation", "Reclamation"),
    ):
        if key in written:
            lines.append(f"![{title}]({written[key].name})")
        else:
            lines.append(f"- {title}: no measurements in these runs.")
        lines.append("")

    errors = df[df["verdict"] == "error"]
    if len(errors):
        lines += ["## Errors", "", "| Suite | Model | Metric | Error |", "|---|---|---|---|"]
        for _, e in errors.iterrows():
            msg = str(e["error"] or "")
            msg = msg if len(msg) <= 300 else msg[:297] + "..."
            cells = [_cell(e["suite"]), _cell(e["model"] or ""), _cell(e["metric"]), _cell(msg)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    other = df[df["verdict"] == "not_applicable"]
    if len(other):
        lines += [
            "## Other measurements (no stated target applies)",
            "",
            "| Suite | Model | Metric | Value | Context |",
            "|---|---|---|---|---|",
        ]
        for _, o in other.head(200).iterrows():
            lines.append(
                f"| {_cell(o['suite'])} | {_cell(o['model'] or '')} | {_cell(o['metric'])} | "
                f"{_cell(_fmt(o['value'], o['unit']))} | {_cell(_context_full(o).strip(' ()'))} |"
            )
        if len(other) > 200:
            lines.append(f"\n… and {len(other) - 200} more in the results file.")
        lines.append("")

    lines.append(f"Results files: {', '.join(f'`{f.name}`' for f in files)}.")
    md = out / "report.md"
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".report.md.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, md)
    written = {"report": md, **written}
    return written
