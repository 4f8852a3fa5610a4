"""The compatibility matrix's data: one column per transformers release, from the runs `tox -m compat` writes.

Why a layer of its own: the matrix is read twice, as the report's "Compatibility" section
(`harness.report_compat`) and as plain text for a terminal or a closing note (`format_matrix`), and both
must say the same thing. Everything here works on loaded runs (`harness.collate.load_runs`) and returns
plain dicts; nothing imports torch (activations are decoded with numpy).

A run belongs to the matrix when it holds `coverage` or `compat` records; its release is
`environment.packages.transformers`, and the newest such run (by start) stands for its release.

Coverage cells (one per model type and release), first rule that holds:
  "not shipped"  the release's sweep has no row for the type ("not run": the release's run has no sweep);
  "not built"    `built` is false (the cell carries `build_error`);
  "error"        a check other than detection failed, unless every failed one is a numeric one
                 (extraction, final_norm) and `max_abs_diff` > ATOL; or a counted check is missing
                 (the cell carries the first failure, "check: reason");
  "differs"      `max_abs_diff` > ATOL (the cell carries it; the checks' own allclose may have let it pass);
  "exact"        built, load passed, every counted check passed or did not apply, `max_abs_diff` <= ATOL
                 or absent (no transformers reference).
Fixture cells: "not shipped" (extra.not_shipped), "error" (an error or no value), "differs" (value > ATOL),
"error" (attention check failed), else "exact"; plus the cross-release difference of the activations
against the newest other release whose `fixture_sha` is the same ("fixture differs" when none is).
"""

from __future__ import annotations

import base64
import math
import re
from datetime import datetime
from typing import Any

from packaging.version import InvalidVersion, Version

from harness.coverage import COUNTED, FAIL, NA, PASS

__all__ = ["ATOL", "STATUSES", "build_matrix", "cell_text", "duration_text", "format_matrix", "newest_runs",
           "release_key", "sci"]

ATOL = 1e-5  # = harness.coverage.ATOL = harness.compat.ATOL (the latter imports torch, so not imported)
STATUSES = ("exact", "differs", "error", "not built", "not shipped")
PROBLEM_RANK = {"error": 0, "differs": 1, "not built": 2, "not run": 3, "not shipped": 4, "exact": 5}
NUMERIC_CHECKS = ("extraction", "final_norm")  # failures that a difference in values explains
TIERS = ("name", "config", "module")


# ---------------------------------------------------------------- small helpers


def release_key(v: str) -> tuple[int, Version, str]:
    """Order releases by `packaging.version.Version`; unparsable strings last, alphabetically."""
    try:
        return (0, Version(v), "")
    except InvalidVersion:
        return (1, Version("0"), str(v))


def sci(x: float | None) -> str:
    """Compact number for a cell: '3e-4', '0.12', '0', 'inf'."""
    if x is None or not math.isfinite(x) or x == 0:
        return "—" if x is None else "0" if x == 0 else "inf"
    if abs(x) < 0.01 or abs(x) >= 1000:
        return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{x:.0e}").replace("e+", "e")
    return f"{x:.2g}"


def short(text: Any, n: int = 48) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 1].rstrip() + "…"


def duration_text(secs: float | None) -> str:
    """'42 s', '3 min 5 s', '1.6 h' (as the report's run table writes durations)."""
    whole = None if secs is None else round(secs)  # rounded first: 359.6 s is 6 min 0 s, not 5 min 60 s
    return "—" if whole is None else f"{whole} s" if whole < 90 else \
        f"{whole // 60} min {whole % 60} s" if whole < 5400 else f"{whole / 3600:.1f} h"


def _parse(t: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(t).replace("Z", "+00:00")) if isinstance(t, str) else None
    except ValueError:
        return None


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def cell_text(cell: dict[str, Any], n: int = 48) -> str:
    """'exact', 'differs 3e-4', 'error: <short>', 'not built', 'not shipped', 'not run'."""
    st = cell.get("status")
    if st == "differs":
        return f"differs {sci(cell.get('value'))}"
    if st == "error":
        return f"error: {short(cell.get('message'), n)}"
    return str(st or "—")


# ---------------------------------------------------------------- runs


def release_of(run: dict[str, Any]) -> str | None:
    v = ((run.get("environment") or {}).get("packages") or {}).get("transformers")
    return str(v) if v else None


def _is_matrix_run(run: dict[str, Any]) -> bool:
    return any(r.get("suite") in ("coverage", "compat") for r in run.get("records") or [])


def newest_runs(runs: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """({release: its newest matrix run}, in release order; {release: older runs of it left out})."""
    by: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        rel = release_of(run)
        if rel and _is_matrix_run(run):
            by.setdefault(rel, []).append(run)
    order = sorted(by, key=release_key)
    pick = {rel: max(by[rel], key=lambda r: (str(r["run"].get("start") or ""), str(r["run"].get("id") or "")))
            for rel in order}
    return pick, {rel: len(by[rel]) - 1 for rel in order}


def _records(run: dict[str, Any], suite: str, metric: str) -> list[dict[str, Any]]:
    return [r for r in run.get("records") or [] if r.get("suite") == suite and r.get("metric") == metric]


# ---------------------------------------------------------------- coverage cells


def coverage_cell(row: dict[str, Any]) -> dict[str, Any]:
    """The status of one sweep row (rules in the module docstring)."""
    diff = _num(row.get("max_abs_diff"))
    if not row.get("built"):
        return {"status": "not built", "value": None, "message": str(row.get("build_error") or "did not build")}
    checks = row.get("checks") or {}
    failed = [(k, v) for k, v in checks.items()
              if k != "detection" and isinstance(v, dict) and v.get("status") == FAIL]
    msgs = [f"{k}: {v.get('reason') or 'failed'}" for k, v in failed]
    numeric = bool(failed) and all(k in NUMERIC_CHECKS for k, _ in failed) and diff is not None and diff > ATOL
    if failed and not numeric:
        return {"status": "error", "value": diff, "message": msgs[0], "failures": msgs}
    want = {"load": (PASS,), **{k: (PASS, NA) for k in COUNTED}}
    missing = [k for k, ok in want.items() if (checks.get(k) or {}).get("status") not in (*ok, FAIL)]
    if missing:
        return {"status": "error", "value": diff, "message": "incomplete checks: " + ", ".join(missing)}
    if diff is not None and diff > ATOL:
        return {"status": "differs", "value": diff, "failures": msgs,
                "message": "; ".join(msgs) or f"max abs diff {diff:.3g} > {ATOL:g} (within the checks' rtol)"}
    return {"status": "exact", "value": diff, "message": None if diff is not None else "no transformers reference"}


def _coverage(runs: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """({release: coverage record or None}, {model type: {release: cell}})."""
    recs = {rel: next(reversed(_records(run, "coverage", "coverage_fraction")), None) for rel, run in runs.items()}
    cells: dict[str, dict[str, Any]] = {}
    for rel, rec in recs.items():
        for row in ((rec or {}).get("extra") or {}).get("rows") or []:
            if isinstance(row, dict) and row.get("model_type"):
                cell = coverage_cell(row)
                fam = row.get("family") or {}
                cell["about"] = " · ".join(str(x) for x in (row.get("task"), row.get("class"), fam.get("expected"),
                                                            fam.get("source")) if x)
                cells.setdefault(str(row["model_type"]), {})[rel] = cell
    for by_rel in cells.values():
        for rel, rec in recs.items():
            if rel not in by_rel:
                by_rel[rel] = ({"status": "not shipped", "message": f"transformers {rel}'s sweep has no such type"}
                               if rec else {"status": "not run", "message": f"no coverage sweep in {rel}'s run"})
    return recs, cells


def problems_first(cells: dict[str, dict[str, dict[str, Any]]], releases: list[str]) -> list[str]:
    """Types with the worst cell first; then those whose newest release is worse; then by name."""
    def key(t: str) -> tuple[int, int, str]:
        def rank(c: dict[str, Any]) -> int:
            return PROBLEM_RANK.get(c.get("rank_status") or c.get("status"), 9)
        ranks = [rank(cells[t][r]) for r in releases if r in cells[t]]
        newest = rank(cells[t].get(releases[-1], {})) if releases else 9
        return (min(ranks, default=9), newest, t)
    return sorted(cells, key=key)


# ---------------------------------------------------------------- fixtures


def _array(d: Any) -> Any:
    """One `harness.compat.encode` dict back as a numpy array (little-endian float32), or None."""
    import numpy as np

    try:
        return np.frombuffer(base64.b64decode(d["f32"]), dtype="<f4").reshape(d["shape"])
    except (KeyError, TypeError, ValueError):
        return None


def activation_diff(a: dict[str, Any], b: dict[str, Any]) -> tuple[float | None, dict[str, float | None]]:
    """Max abs difference over the layers both hold, on real positions when `_mask` ([batch, seq], the same
    texts on both) is stored beside them (inf: shapes differ; None per layer: unreadable)."""
    per: dict[str, float | None] = {}
    mask = _array(a.get("_mask")) if "_mask" in a else None
    for layer in sorted((set(a) & set(b)) - {"_mask"}, key=lambda s: (len(s), s)):
        x, y = _array(a[layer]), _array(b[layer])
        if x is None or y is None:
            per[layer] = None
        elif x.shape != y.shape:
            per[layer] = math.inf
        else:
            if mask is not None and mask.shape == x.shape[:2]:
                x, y = x[mask > 0], y[mask > 0]
            per[layer] = float(abs(x.astype("f8") - y.astype("f8")).max()) if x.size else 0.0
    vals = [v for v in per.values() if v is not None]
    return (max(vals) if vals else None), per


def fixture_cell(rec: dict[str, Any]) -> dict[str, Any]:
    ex = rec.get("extra") or {}
    base = {"sha": ex.get("fixture_sha"), "built_with": ex.get("built_with"), "attention": ex.get("attention"),
            "forward_inputs": ex.get("forward_inputs"), "tokenizer_outputs": ex.get("tokenizer_outputs"),
            "task": ex.get("task"), "value": _num(rec.get("value"))}
    if ex.get("not_shipped"):
        return {**base, "status": "not shipped", "message": "this release does not ship the type"}
    if rec.get("error") or base["value"] is None:
        return {**base, "status": "error",
                "message": str(rec.get("error") or f"no value (stage {ex.get('stage') or '?'})")}
    if base["value"] > ATOL:
        return {**base, "status": "differs", "message": f"max abs diff {base['value']:.3g} vs transformers"}
    att = ex.get("attention") or {}
    if not att.get("ok"):
        return {**base, "status": "error", "message": f"attention: row sums off by {att.get('row_sum_max_error')}, "
                                                      f"above diagonal {att.get('above_diagonal_max')}"}
    return {**base, "status": "exact", "message": None}


def _fixtures(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{model type: {release: cell with `cross`}}: own parity and the difference to another release."""
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    acts: dict[str, dict[str, dict[str, Any]]] = {}
    for rel, run in runs.items():
        for rec in _records(run, "compat", "fixture_max_abs_diff"):
            t = str((rec.get("workload") or {}).get("model_type") or "?")
            cells.setdefault(t, {})[rel] = fixture_cell(rec)
            a = (rec.get("extra") or {}).get("activations")
            if isinstance(a, dict) and a:
                acts.setdefault(t, {})[rel] = a
    for t, by_rel in cells.items():
        for rel, cell in by_rel.items():
            sha = cell.get("sha")
            if rel not in acts.get(t, {}) or not sha:
                cell["cross"] = None
                continue
            same = [s for s in acts[t] if s != rel and by_rel[s].get("sha") == sha]
            other = [s for s in by_rel if s != rel and by_rel[s].get("sha") and by_rel[s]["sha"] != sha]
            if same:
                ref = max(same, key=release_key)
                d, per = activation_diff(acts[t][rel], acts[t][ref])
                st = "same" if d is not None and d <= ATOL else "differs" if d is not None else "unreadable"
                cell["cross"] = {"status": st, "ref": ref, "value": d, "layers": per}
            elif other:
                ref = max(other, key=release_key)
                cell["cross"] = {"status": "fixture differs", "ref": ref, "value": None, "ref_sha": by_rel[ref]["sha"]}
            else:
                cell["cross"] = None
            if (cell.get("cross") or {}).get("status") == "differs" and cell["status"] == "exact":
                cell["rank_status"] = "differs"  # sorts with the differences: same bytes, other activations
    return cells


# ---------------------------------------------------------------- per release


def _peers(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for rec in _records(run, "compat", "peer_max_abs_diff"):
        ex = rec.get("extra") or {}
        tool = str((rec.get("workload") or {}).get("tool") or ex.get("tool") or "?")
        value, err = _num(rec.get("value")), rec.get("error") or ex.get("error")
        cell = {"version": ex.get("version"), "api": ex.get("api"), "value": value, "reason": ex.get("reason"),
                "model_type": ex.get("model_type")}
        if ex.get("installed") is False:
            cell.update(status="not installed", message=str(ex.get("reason") or "not installed"))
        elif err:
            cell.update(status="error", message=str(err))
        elif value is None:
            cell.update(status="not measured", message=str(ex.get("reason") or "no value"))
        else:
            cell.update(status="exact" if value <= ATOL else "differs", message=None)
        out[tool] = cell
    return out


def _summary(rel: str, run: dict[str, Any], cov: dict[str, Any] | None, cells: dict[str, dict[str, Any]],
             fixtures: dict[str, dict[str, Any]], older: int) -> dict[str, Any]:
    info, env = run.get("run") or {}, run.get("environment") or {}
    start, end = _parse(info.get("start")), _parse(info.get("end"))
    counts, fx = ({s: sum(c.get(rel, {}).get("status") == s for c in m.values()) for s in STATUSES}
                  for m in (cells, fixtures))
    det = {tier: next((_num(r.get("value")) for r in _records(run, "detection", f"detection_accuracy_{tier}")
                       if r.get("model") is None), None) for tier in TIERS}
    api = _records(run, "api_consistency", "api_consistency")
    api_vals = [v for v in (_num(r.get("value")) for r in api) if v is not None]
    targets: dict[str, int] = {}
    for r in run.get("records") or []:
        if r.get("target"):
            targets[r.get("verdict") or "?"] = targets.get(r.get("verdict") or "?", 0) + 1
    lock = env.get("lock") if isinstance(env.get("lock"), dict) else None
    ex = (cov or {}).get("extra") or {}
    return {
        "release": rel, "run_id": info.get("id"), "file": str(run.get("_file") or ""), "start": info.get("start"),
        "seconds": (end - start).total_seconds() if start and end else None,
        "torch": (env.get("packages") or {}).get("torch"), "older_runs": older,
        "counts": counts, "sweep": cov is not None, "coverage_fraction": _num((cov or {}).get("value")),
        "covered": ex.get("covered"), "built": (cov or {}).get("workload", {}).get("built"),
        "fixtures": fx, "detection": det,
        "api_consistency": {"mean": sum(api_vals) / len(api_vals) if api_vals else None,
                            "min": min(api_vals) if api_vals else None, "models": len(api),
                            "errors": sum(r.get("verdict") == "error" for r in api)},
        "targets": targets,
        "lock": None if lock is None else {
            "file": lock.get("file"), "sha256": lock.get("sha256"), "error": lock.get("error"),
            "differs": len(lock.get("differs") or {}), "differing": lock.get("differs") or {}},
        "compat": env.get("compat"), "peers": _peers(run),
    }


def build_matrix(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """{releases, summary {release: …}, coverage {types, cells}, fixtures {types, cells}, peers {tools, cells}}."""
    picked, older = newest_runs(runs)
    releases = list(picked)
    cov_recs, cov_cells = _coverage(picked)
    fx_cells = _fixtures(picked)
    summary = {rel: _summary(rel, run, cov_recs[rel], cov_cells, fx_cells, older[rel]) for rel, run in picked.items()}
    for by_rel in fx_cells.values():
        for rel in releases:
            by_rel.setdefault(rel, {"status": "not run", "message": f"no fixture record in {rel}'s run", "cross": None})
    tools = sorted({t for s in summary.values() for t in s["peers"]})
    peer_cells = {t: {rel: summary[rel]["peers"].get(t) or {"status": "not run", "message": "no record"}
                      for rel in releases} for t in tools}
    return {
        "releases": releases, "summary": summary,
        "coverage": {"types": problems_first(cov_cells, releases), "cells": cov_cells},
        "fixtures": {"types": problems_first(fx_cells, releases), "cells": fx_cells},
        "peers": {"tools": tools, "cells": peer_cells},
    }


# ---------------------------------------------------------------- text


def format_matrix(data: dict[str, Any], problems: int = 15) -> str:
    """Plain text: one line per release (status counts, coverage, fixtures, run time), then the problems."""
    rels = data["releases"]
    if not rels:
        return "compatibility matrix: no coverage or compat records in these runs"
    head = ("release", "exact", "differs", "error", "not built", "not shipped", "coverage", "fixtures", "run time")
    rows = [head]
    for rel in rels:
        s = data["summary"][rel]
        c, fx = s["counts"], s["fixtures"]
        frac = s["coverage_fraction"]
        n_fx = sum(v for k, v in fx.items() if k != "not shipped")
        rows.append((rel, *(str(c[k]) if s["sweep"] else "-" for k in STATUSES),
                     f"{frac:.1%}" if frac is not None else "-", f"{fx['exact']}/{n_fx} exact" if n_fx else "-",
                     duration_text(s["seconds"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"compatibility matrix: {len(rels)} transformers releases, {len(data['coverage']['types'])} model types, "
             f"{len(data['fixtures']['types'])} fixtures"]
    lines += ["  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths, strict=True)))
              for r in rows]
    bad = []
    for kind in ("coverage", "fixtures"):
        cells = data[kind]["cells"]
        for t in data[kind]["types"]:
            hits = [f"{rel} {cell_text(cells[t][rel], 60)}" for rel in rels
                    if cells[t][rel].get("status") in ("error", "differs")]
            cross = [f"{rel} vs {c['ref']}: {sci(c['value'])}" for rel in rels
                     if (c := cells[t][rel].get("cross")) and c["status"] == "differs"] if kind == "fixtures" else []
            if hits or cross:
                bad.append(f"  {'fixture ' if kind == 'fixtures' else ''}{t}: " + "; ".join(hits + cross))
    if bad:
        lines.append(f"problems ({len(bad)}):")
        lines += bad[:problems] + ([f"  … {len(bad) - problems} more"] if len(bad) > problems else [])
    peers = []
    for tool in data["peers"]["tools"]:
        cells = data["peers"]["cells"][tool]
        peers.append(f"  {tool}: " + "; ".join(
            " ".join(x for x in (rel, cells[rel].get("version"), cell_text(cells[rel], 40)) if x) for rel in rels))
    if peers:
        lines += ["peers:", *peers]
    return "\n".join(lines)
