"""Collate results files for the report and the exports: runs in start order, the latest record per key.

Why "latest per (suite, model)": a report is given shards of one run (detection, scaling and the main job
written by separate pytest sessions) and histories of many runs alike. The current picture is, for each
(suite, model), the records of the latest run that ran that suite for that model; the history stays
available for the trend. Records are plain dicts (as stored) with the run's id, start and
commit attached under `_run`, so nothing here needs pandas or matplotlib.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.results import find_run_files, load_run

__all__ = [
    "FAMILY_ORDER",
    "fingerprint_text",
    "is_baseline",
    "is_scaling",
    "latest",
    "load_runs",
    "record_key",
    "run_records",
    "short_workload",
    "workload_label",
]

FAMILY_ORDER = ("gpt", "bert", "t5", "llama", "domain_specific")


def load_runs(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every results file under `paths` (files or folders), validated, ordered by run start (then id).

    Raises FileNotFoundError / ValueError like `find_run_files`; each run gets `_file` (its path).
    """
    runs = []
    seen: set[Path] = set()
    for f in find_run_files(paths):
        if f.resolve() in seen:  # a file named directly and again through its folder
            continue
        seen.add(f.resolve())
        run = load_run(f)
        run["_file"] = f
        runs.append(run)
    runs.sort(key=lambda r: (str(r["run"].get("start") or ""), str(r["run"].get("id") or "")))
    return runs


def run_records(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All records of `runs`, in run order, each a shallow copy with `_run` = {id, start, commit, index}."""
    out = []
    for i, run in enumerate(runs):
        info = {
            "id": run["run"].get("id"),
            "start": run["run"].get("start"),
            "commit": run["run"].get("git_commit"),
            "index": i,
        }
        for r in run.get("records", []):
            out.append({**r, "_run": info})
    return out


def _canonical(obj: Any) -> str:
    return json.dumps(obj or {}, sort_keys=True, default=str)


def record_key(r: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two records the same figure: suite, model, metric, workload, device, dtype, weights."""
    return (
        r.get("suite"),
        r.get("model"),
        r.get("metric"),
        _canonical(r.get("workload")),
        r.get("device"),
        r.get("dtype"),
        r.get("weights"),
    )


def latest(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The current picture: for each (suite, model), the records of the latest run that has any.

    Records must be given in run order (`run_records`). A later run of a suite for a model supersedes all
    of that suite's earlier figures for that model — also workloads or metrics it no longer records (a
    renamed metric must not linger as a second, stale figure); other suites and models keep theirs, so
    shards written by separate sessions combine. Within that run, the last record of each key wins.
    """
    newest: dict[tuple[Any, Any], int] = {}
    for r in records:
        k = (r.get("suite"), r.get("model"))
        newest[k] = max(newest.get(k, -1), r["_run"]["index"])
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        if r["_run"]["index"] == newest[(r.get("suite"), r.get("model"))]:
            out[record_key(r)] = r
    return list(out.values())


def is_scaling(r: dict[str, Any]) -> bool:
    name = (r.get("workload") or {}).get("name")
    return isinstance(name, str) and name.startswith("scaling")


def is_baseline(r: dict[str, Any]) -> bool:
    return str(r.get("metric") or "").startswith("baseline_")


def workload_label(w: Any, width: int | None = None) -> str:
    """Short, stable text for a workload dict (e.g. 'seed · layers=0,6,11 · texts=1 · tokens_per_text=2')."""
    if not isinstance(w, dict) or not w:
        return "default workload"
    parts = []
    for k in sorted(w, key=lambda k: (k != "name", k)):  # a workload's name, when given, leads
        v = w[k]
        if isinstance(v, (list, tuple)):
            v = ",".join(str(x) for x in v) if len(v) <= 6 else f"{len(v)} items"
        elif isinstance(v, str) and len(v) > 24:
            v = v[:21] + "..."
        parts.append(str(v) if k == "name" else f"{k}={v}")
    text = " · ".join(parts)
    return textwrap.fill(text, width) if width else text


def short_workload(w: Any) -> str:
    """The parts of a workload that tell figures apart at a glance: its name and sizes, no layer lists."""
    if not isinstance(w, dict) or not w:
        return "default workload"
    name = w.get("name")
    sizes = [f"{k}={w[k]}" for k in ("seq_len", "batch") if k in w]
    if name and not sizes:
        return str(name)
    keys = [k for k in w if k not in ("name", "layers", "seq_len", "batch")] if not name else []
    parts = ([str(name)] if name else []) + sizes + [f"{k}={w[k]}" for k in sorted(keys)]
    return " · ".join(parts) or workload_label(w)


def fingerprint_text(fp: Any) -> str:
    """One compact line per field of a record's `extra.fingerprint` (for hover text and details)."""
    if not isinstance(fp, dict) or not fp:
        return ""
    lines = []
    for k, v in fp.items():
        if isinstance(v, dict):
            inner = ", ".join(f"{ik}={_short(iv)}" for ik, iv in v.items())
            lines.append(f"{k}: {inner}")
        else:
            lines.append(f"{k}: {_short(v)}")
    return "\n".join(lines)


def _short(v: Any) -> str:
    if isinstance(v, list):
        if not v:
            return "none"
        return "; ".join(_short(x) for x in v)
    if isinstance(v, dict):
        return "/".join(str(x) for x in v.values() if x is not None) or "-"
    return str(v)
