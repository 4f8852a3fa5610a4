"""Overhead (issue 3, "Performance"): extraction against the forward it has to run, early exit, extra peak memory.

Workload: 8 texts x 128 tokens (texts_of_tokens), real-size model, this CPU. Layer sets per model: the seed
layers; for decoder-only and encoder-only models also the first half ([0, n/2 - 1]); gpt2 adds [0, 6] and
[0, 6, 11], bert-base-uncased [0, 3] and [0, 5].

Records (one per model and layer set; the workload carries the layers):
- `extraction_vs_truncated_ratio`: median extraction time / median time of the same forward stopped by one
  hook right after the deepest requested block (no capture). Extraction includes its tokenization; the
  forwards run on pre-tokenized inputs (tokenization alone is in `extra`).
- `early_exit_ratio_<layers>` (e.g. `early_exit_ratio_0_6`): median extraction time / median full forward
  (every block, the final norm and any head). The layer set is part of the metric name because the issue
  states a different target per layer set and targets match by metric and model only.
- `extra_peak_memory_ratio`: peak RSS added by one extraction / (peak RSS added by one truncated forward
  + 1.2 x bytes returned), each in a fresh process after one warm-up call of both, with a fixed glibc mmap
  threshold (harness.overhead.ALLOCATOR_ENV) so the figure is the peak of live bytes: with glibc's default,
  one identical forward read 73-187 MiB across fresh processes, far beyond the 1.2 x bytes tolerance.
All timings of one model come from one interleaved run (round-robin, order rotated every round). On the shared
2-core machine one run resolves a ratio to about +-5-10%; `extra` carries the same ratios in process CPU time,
the paired per-round ratios and the ratio of minimums, so a reader can tell work from waiting.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from harness.isolate import IsolatedError, run_isolated
from harness.overhead import ALLOCATOR_ENV, layers_tag, overhead_ratios
from harness.plugin import load_options
from harness.timing import stats_from_samples
from harness.workloads import Workload, seed_layers, texts_of_tokens

pytestmark = pytest.mark.nm_extended  # full profile (harness/plugin.py --nm-profile)

TEXTS, TOKENS = 8, 128
WARMUP, ROUNDS = 1, 8
MEMORY_FACTOR = 1.2  # extra peak allowed per byte returned (issue 3)
WORKLOAD = "overhead8x128"
EXPLICIT_SETS = {  # the layer sets issue 3 names for these checkpoints
    "gpt2": ((0, 6), (0, 6, 11)),
    "bert-base-uncased": ((0, 3), (0, 5)),
}
QUOTES = {
    "extraction_vs_truncated_ratio": "issue 3: whatever the layers asked for, extraction <= 1.03 x the forward it "
                                     "has to run (the forward truncated at the deepest layer requested), median, "
                                     "on every family",
    "early_exit_ratio": "issue 3: early exit with no flag from the caller: on gpt2 (LM-head checkpoint) layers "
                        "[0, 6] <= 0.40 x and layers [0, 6, 11] <= 0.66 x the full forward (the final norm and LM "
                        "head are skipped too); on bert-base layers in the first half <= 0.60 x",
    "extra_peak_memory_ratio": "issue 3: extra peak memory <= the peak of the forward truncated at the deepest "
                               "layer + 1.2 x the bytes returned",
}


def first_half(num_layers: int) -> tuple[int, ...]:
    """Blocks 0 and n/2 - 1: the deepest block of the first half ([0, 5] for 12 blocks)."""
    return tuple(sorted({0, max(0, num_layers // 2 - 1)}))


def layer_sets(adapter: Any) -> list[tuple[int, ...]]:
    mapping = adapter.mapping
    sets = [seed_layers(mapping.num_layers)]
    if not mapping.is_encoder_decoder:
        sets.append(first_half(mapping.num_layers))
    sets.extend(EXPLICIT_SETS.get(adapter.config.name if adapter.config else "", ()))
    return list(dict.fromkeys(sets))


def workload(seq_len: int, layers: Any) -> dict[str, Any]:
    return Workload(WORKLOAD, (), tuple(layers)).describe(tokens_per_text=seq_len) | {"texts": TEXTS}


def _warn_if_untargeted(records: list[Any]) -> None:
    """Issue 3's generic targets must judge these records; say so loudly when targets.toml lacks them."""
    for r in records:
        if r.target is None and r.metric in ("extraction_vs_truncated_ratio", "extra_peak_memory_ratio"):
            warnings.warn(f"no target in targets.toml judges {r.metric}: the record is not_applicable "
                          f"(issue 3 states: {QUOTES[r.metric]})", stacklevel=2)
            return


def _judge(records: list[Any]) -> None:
    """check_verdict for every record, after all are written: one failure must not hide the others."""
    lines = []
    for r in records:
        if r.verdict in ("pass", "not_applicable"):
            continue
        t = r.target or {}
        value = "-" if r.value is None else f"{r.value:.3f}"
        lines.append(f"{r.verdict.upper()}: {r.metric} of {r.model}, layers {r.workload.get('layers')} = {value} "
                     f"{r.unit} (target {t.get('operator')} {t.get('value')}: \"{t.get('quote')}\")"
                     + (f"; error: {r.error}" if r.error else ""))
    if lines:
        raise AssertionError("\n".join(lines))


def _timing_extra(out: dict[str, Any], item: dict[str, Any], numerator: str, denominator: str) -> dict[str, Any]:
    t = out["timings"]
    keys = {"extraction": f"extraction[{layers_tag(item['layers'])}]", "truncated": f"truncated@{item['deepest']}",
            "full": "full_forward", "tokenize": "tokenize"}
    cpu = item.get("cpu") or {}
    pair = f"{numerator}_vs_{denominator}"
    return {
        "ratio_of_medians": item[pair]["ratio"],
        "ratio_of_mins": item[pair]["ratio_of_mins"],
        "paired_ratio": {k: v for k, v in item[pair]["paired"].items() if k != "samples"},
        "cpu_ratio_of_medians": (cpu.get(pair) or {}).get("ratio"),
        "cpu_paired_ratio_median": ((cpu.get(pair) or {}).get("paired") or {}).get("median"),
        "truncated_vs_full": item["truncated_vs_full"]["ratio"],
        "timings_s": {k: t[v] for k, v in keys.items()},
        "cpu_timings_s": {k: out["cpu_timings"][v] for k, v in keys.items() if v in out.get("cpu_timings", {})},
        "stopped_early": item["stopped_early"],
        "truncated_stopped": item["truncated_stopped"],
        "bytes_returned": item["bytes_returned"],
        "deepest_block": item["deepest"],
        "interleaving": f"{out['rounds']} rounds after {out['warmup']} warm-up round(s), order rotated each round: "
                        + ", ".join(out["order"]),
        "definitions": out["definitions"],
        "tokenization": "extraction includes its own tokenization; the forwards run on inputs tokenized before "
                        "the timed region; timings_s.tokenize is tokenization alone",
        "value": "median(numerator) / median(denominator); stats: the per-round paired ratios (raw samples kept)",
        "issue_quote": QUOTES["extraction_vs_truncated_ratio" if denominator == "truncated" else "early_exit_ratio"],
    }


def test_extraction_overhead(benchmark, nm_model, nm_loaded, nm_record):
    adapter = nm_loaded.get(nm_model)
    limit = adapter.max_positions()
    texts = texts_of_tokens(adapter.tokenizer, TEXTS, TOKENS if limit is None else min(TOKENS, limit))
    sets = layer_sets(adapter)
    benchmark.extra_info.update(model=nm_model, workload=WORKLOAD, layer_sets=[list(s) for s in sets])
    out = benchmark.pedantic(overhead_ratios, args=(adapter, texts, sets),
                             kwargs={"rounds": ROUNDS, "warmup": WARMUP}, rounds=1, iterations=1)
    info = adapter.info()
    records = []
    for item in out["layer_sets"]:
        w = workload(out["seq_len"], item["layers"])
        for metric, denominator in (("extraction_vs_truncated_ratio", "truncated"),
                                    (f"early_exit_ratio_{layers_tag(item['layers'])}", "full")):
            pair = f"extraction_vs_{denominator}"
            records.append(nm_record("overhead", info, metric, item[pair]["ratio"], "ratio", workload=w,
                                     stats=item[pair]["paired"],
                                     extra=_timing_extra(out, item, "extraction", denominator)))
    _warn_if_untargeted(records)
    _judge(records)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the children started inside; restore ours afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _memory_run(model: str, options: dict[str, Any], sets: list[list[int]]) -> dict[str, Any]:
    """One fresh process per kind: the truncated forward's peak, then the extraction's."""
    with _environment(ALLOCATOR_ENV):
        return {kind: run_isolated("harness.overhead:peak_memory_child",
                                   {"model": model, "kind": kind, "layer_sets": sets, "texts": TEXTS,
                                    "tokens": TOKENS, **options}, timeout=900)
                for kind in ("truncated", "extraction")}


def test_extra_peak_memory(benchmark, nm_model, nm_loaded, nm_registry, nm_record):
    adapter = nm_loaded.get(nm_model)
    info = adapter.info()
    sets = [list(s) for s in layer_sets(adapter)]
    options = load_options(nm_registry, nm_model)
    benchmark.extra_info.update(model=nm_model, workload=WORKLOAD, layer_sets=sets)
    try:
        out = benchmark.pedantic(_memory_run, args=(nm_model, options, sets), rounds=1, iterations=1)
    except IsolatedError as exc:
        record = nm_record("overhead", info, "extra_peak_memory_ratio", None, "ratio", error=str(exc),
                           workload=workload(TOKENS, sets[0]))
        _judge([record])
        return
    trunc, ext = out["truncated"], out["extraction"]
    records = []
    for t_item, e_item in zip(trunc["layer_sets"], ext["layer_sets"], strict=True):
        assert t_item["layers"] == e_item["layers"]
        t_delta, e_delta = t_item["probe"]["delta_bytes"], e_item["probe"]["delta_bytes"]
        returned = e_item["bytes_returned"]
        allowed = t_delta + MEMORY_FACTOR * returned
        value = e_delta / allowed if allowed > 0 else float("nan")
        records.append(nm_record(
            "overhead", ext["info"], "extra_peak_memory_ratio", value, "ratio",
            workload=workload(ext["seq_len"], e_item["layers"]) | options,
            stats=stats_from_samples([value]).to_dict(),
            extra={"extraction_probe": e_item["probe"], "truncated_probe": t_item["probe"],
                   "bytes_returned": returned, "allowed_bytes": allowed,
                   "extra_bytes_over_truncated": e_delta - t_delta,
                   "stopped_early": e_item["stopped"], "truncated_stopped": t_item["stopped"],
                   "warmup": ext["warmup"], "allocator_env": ext["allocator_env"],
                   "allocator": "fixed glibc mmap threshold in both children (harness.overhead.ALLOCATOR_ENV): the "
                                "peak of live bytes; with the default dynamic threshold one identical forward "
                                "reads tens of MiB apart across processes",
                   "processes": "one fresh process per kind (truncated, extraction), "
                   "each running every layer set in the same order",
                   "bytes_returned_definition": "numel * element_size of every returned tensor: the layer "
                                                "entries, attention_mask and input_ids",
                   "definition": "peak RSS added by ONE extraction / (peak RSS added by ONE truncated forward + "
                                 f"{MEMORY_FACTOR} x bytes returned); VmHWM reset after gc + malloc_trim",
                   "issue_quote": QUOTES["extra_peak_memory_ratio"]}))
    assert info["name"] == ext["info"]["name"]
    _warn_if_untargeted(records)
    _judge(records)
