"""Exports of a run for CI trackers: Bencher Metric Format and github-action-benchmark's customSmallerIsBetter.

- BMF (`bmf`): {benchmark name: {measure slug: {"value", "lower_value"?, "upper_value"?}}}, every measured
  figure; a benchmark is a (model, workload, device, dtype, weights), its measures the metrics. Latency
  goes to Bencher's built-in `latency` measure, which is in nanoseconds (value = median, lower/upper =
  the first/third quartile); other metrics become measures named after the metric with the unit as
  suffix where it has one (`peak-memory-gb`, `extraction-peak-memory-gb`, `max-context-tokens-tokens`);
  fractions (reclamation, accuracies) and bools stay unitless (`reclamation`, `detection-accuracy-name`).
- github-action-benchmark (`gab`): [{"name", "unit", "value", "range"?, "extra"?}] for the metrics where
  smaller is better only — latency (s) and memory (GB); the name carries suite, model, metric, workload,
  device, dtype and weights; `range` is "± half the IQR"; `extra` gives rounds and quartiles, the verdict
  (and target), run id and commit. Higher-is-better figures
  (reclamation, accuracy) would be mis-alerted by that tool's smaller-is-better mode, so they are in BMF only.

Which records: the same current picture as the report (for each (suite, model), the latest run that ran
it; see harness.collate), with a value, not in error, and not a `baseline_*` reference method.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from harness.collate import is_baseline, latest, load_runs, run_records, workload_label

__all__ = ["FORMATS", "SMALLER_IS_BETTER_UNITS", "bmf", "dumps", "export", "gab"]

FORMATS = ("bmf", "gab")
SMALLER_IS_BETTER_UNITS = ("s", "GB")
_UNIT_SUFFIX = {"GB": "gb", "tokens": "tokens"}


def _exportable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in latest(records) if r.get("value") is not None and r.get("verdict") != "error"
            and not is_baseline(r)]


def benchmark_name(r: dict[str, Any]) -> str:
    """'gpt2/seed · layers=0,6,11 · texts=1 · tokens_per_text=2 [cpu, float32, synthetic]'.

    One Bencher benchmark per (model, workload, device, dtype, weights); its measures are the metrics
    (latency and peak memory of one workload sit together).
    """
    ctx = ", ".join(str(x) for x in (r.get("device"), r.get("dtype"), r.get("weights")) if x)
    name = f"{r.get('model') or 'all-models'}/{workload_label(r.get('workload'))}"
    return (name + (f" [{ctx}]" if ctx else ""))[:1024]


def measure_slug(metric: str, unit: str | None) -> str:
    """Bencher measure slug: `latency` (ns, built-in) for extraction latency, else kebab-case metric + unit."""
    if metric == "extraction_latency":
        return "latency"
    slug = re.sub(r"[^a-z0-9]+", "-", metric.lower()).strip("-")
    if unit == "s":
        slug += "-ns"
    elif unit in _UNIT_SUFFIX:
        slug += "-" + _UNIT_SUFFIX[unit]
    return slug[:64]


def bmf(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Bencher Metric Format of the current records."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in _exportable(records):
        name = benchmark_name(r)
        slug = measure_slug(r["metric"], r.get("unit"))
        scale = 1e9 if r.get("unit") == "s" else 1.0
        st = r.get("stats") or {}
        metric: dict[str, float] = {"value": float(st.get("median", r["value"]) if r.get("unit") == "s"
                                                   else r["value"]) * scale}
        if st.get("q1") is not None and st.get("q3") is not None:
            metric["lower_value"] = float(st["q1"]) * scale
            metric["upper_value"] = float(st["q3"]) * scale
        bench = out.setdefault(name, {})
        i, base = 2, name
        while slug in bench:  # two records that differ only in what the name leaves out
            name = f"{base} #{i}"
            bench = out.setdefault(name, {})
            i += 1
        bench[slug] = metric
    return out


def gab(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """github-action-benchmark `customSmallerIsBetter` entries (latency and memory only)."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in _exportable(records):
        if r.get("unit") not in SMALLER_IS_BETTER_UNITS:
            continue
        ctx = ", ".join(str(x) for x in (r.get("device"), r.get("dtype"), r.get("weights")) if x)
        name = f"{r.get('suite')}/{r.get('model') or 'all-models'}/{r['metric']}/{workload_label(r.get('workload'))}"
        name += f" [{ctx}]" if ctx else ""
        base, i = name, 2
        while name in seen:
            name, i = f"{base} #{i}", i + 1
        seen.add(name)
        st = r.get("stats") or {}
        entry: dict[str, Any] = {"name": name, "unit": r["unit"], "value": float(r["value"])}
        if st.get("iqr") is not None:
            entry["range"] = f"± {float(st['iqr']) / 2:.3g}"
        run = r.get("_run") or {}
        bits = []
        if st.get("rounds") and st.get("q1") is not None and st.get("q3") is not None:
            bits.append(f"median of {st['rounds']} rounds, IQR {st['q1']:.4g}–{st['q3']:.4g} {r['unit']}")
        bits.append(f"verdict {r.get('verdict')}" + (f" (target {r['target'].get('id')})" if r.get("target") else ""))
        bits.append(f"run {run.get('id')}, commit {(run.get('commit') or '?')[:10]}")
        entry["extra"] = "\n".join(bits)
        out.append(entry)
    return out


def export(paths: list[str | Path], fmt: str) -> Any:
    """The export of the results files / folders `paths` in `fmt` ("bmf" or "gab")."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; one of {FORMATS}")
    records = run_records(load_runs(paths))
    return bmf(records) if fmt == "bmf" else gab(records)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
