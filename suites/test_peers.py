"""Side by side with TransformerLens, nnsight and plain HF (issue 6), on gpt2, bert-base-uncased and SmolLM2-135M.

Same weights (the registry's checkpoint folder; peers get their own copy, built offline, no weight folding), same
texts, same blocks (the seed layers: first, middle, last): the seed workload (["Hello world"]) and 8 texts x 128
tokens. See harness/peers.py for what each tool row runs.

- `test_peers_overhead`: per workload, one interleaved run in this process of the bare forward and every tool;
  records `overhead_ratio` (median tool / median bare forward, stats = per-round paired ratios, IQR in stats) and
  `max_abs_diff` (against HF output_hidden_states) per tool, and `neuronmap_lowest_overhead` per workload.
- `test_peers_memory`: one fresh process per tool group (neuronmap, hf_hidden_states, transformer_lens,
  nnsight): `load_time`, `load_peak_memory`, and `extra_peak_memory` per (workload, tool) (peak RSS of one call
  minus that of one bare forward, in the same process), and `neuronmap_lowest_extra_memory` per workload.

Every record's workload carries `tool`. Models other than the three are skipped (issue 6 names them); a peer
that is not installed, or cannot read a model, leaves its rows `not_measured` with the reason in
`extra.reason`, and the comparative verdicts `not_measured` too; with no peer at all the tests skip.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from harness.isolate import IsolatedError, run_isolated
from harness.overhead import ALLOCATOR_ENV
from harness.peers import (
    GROUPS,
    MEMORY_RULE,
    OURS,
    OVERHEAD_RULE,
    PEER_MODELS,
    PEERS,
    checkpoint_of,
    load_peer,
    memory_records,
    overhead_verdict_rows,
    plan,
    pooled_memory_rows,
    side_by_side,
    timing_records,
    verdict_record,
    workload_of,
)
from harness.plugin import load_options
from harness.workloads import standard_workloads
from suites.common import check_verdict
from suites.test_overhead import _environment

pytestmark = pytest.mark.nm_extended  # full profile (harness/plugin.py --nm-profile)

ROUNDS = {"seed": 15, "batch8x128": 7}
WARMUP = 1
MEM_REPEATS = 2


def _setup(nm_model: str, nm_loaded: Any) -> tuple[Any, list[str], dict[str, str]]:
    """The adapter and the runnable tools, or a skip with the reason."""
    if nm_model not in PEER_MODELS:
        pytest.skip(f"issue 6 compares peers on {', '.join(PEER_MODELS)} only; {nm_model} is not one of them")
    adapter = nm_loaded.get(nm_model)
    tools, skipped = plan(adapter.model, adapter.mapping)
    if not any(t in tools for g in PEERS for t in GROUPS[g]):
        pytest.skip("no peer can run here: " + "; ".join(f"{t}: {r}" for t, r in skipped.items()))
    for tool, reason in skipped.items():
        warnings.warn(f"{nm_model}: {tool} not measured: {reason}", stacklevel=2)
    return adapter, tools, skipped


def _workloads(adapter: Any) -> list[Any]:
    return standard_workloads(adapter.tokenizer, adapter.mapping.num_layers, adapter.max_positions())


def _write(nm_record: Any, info: dict[str, Any], recs: list[dict[str, Any]]) -> list[Any]:
    return [nm_record("peers", info, r["metric"], r["value"], r["unit"], workload=r["workload"],
                      stats=r.get("stats"), extra=r.get("extra", {})) for r in recs]


def _missing(nm_record: Any, info: dict[str, Any], metric: str, unit: str, workload: dict[str, Any],
             skipped: dict[str, str]) -> list[Any]:
    """A not_measured row per tool that could not run, with its reason."""
    return [nm_record("peers", info, metric, None, unit, workload={**workload, "tool": tool},
                      extra={"reason": reason}) for tool, reason in skipped.items()]


def _judge(records: list[Any]) -> None:
    """check_verdict on every verdict record after all are written: one failure must not hide the others."""
    lines = []
    for r in records:
        try:
            check_verdict(r)
        except AssertionError as exc:
            ex = r.extra
            lines.append(f"{exc} [workload {r.workload.get('name')}; best other: {ex.get('best_other')} = "
                         f"{ex.get('best_other_value')}; neuronmap: {ex.get('ours')}]")
    if lines:
        raise AssertionError("\n".join(lines))


def _overhead_run(adapter: Any, tools: list[str]) -> dict[str, Any]:
    checkpoint = checkpoint_of(adapter)
    peers = {g: load_peer(g, checkpoint) for g in PEERS if any(t in tools for t in GROUPS[g])}
    try:
        return {w.name: side_by_side(adapter, w.texts, w.layers, peers, tools, ROUNDS[w.name], WARMUP)
                for w in _workloads(adapter)}
    finally:
        peers.clear()


def test_peers_overhead(benchmark, nm_model, nm_loaded, nm_record):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nnsight already serves.*")
        adapter, tools, skipped = _setup(nm_model, nm_loaded)
        benchmark.extra_info.update(model=nm_model, tools=tools)
        runs = benchmark.pedantic(_overhead_run, args=(adapter, tools), rounds=1, iterations=1)
    info = adapter.info()
    verdicts = []
    for name, out in runs.items():
        _write(nm_record, info, timing_records(name, out))
        shape = workload_of(name, out["texts"], out["seq_len"], out["layers"], OURS)
        for metric, unit in (("overhead_ratio", "ratio"), ("max_abs_diff", "abs")):
            _missing(nm_record, info, metric, unit, shape, skipped)
        verdicts += _write(nm_record, info, [verdict_record("neuronmap_lowest_overhead", name,
                                                            overhead_verdict_rows(out), skipped, OVERHEAD_RULE)])
    _judge(verdicts)


def _memory_run(nm_model: str, options: dict[str, Any], checkpoint: dict[str, Any], workloads: list[dict[str, Any]],
                groups: list[str]) -> dict[str, Any]:
    out = {}
    with _environment(ALLOCATOR_ENV):
        for group in groups:
            try:
                out[group] = run_isolated("harness.peers:memory_child", {
                    "model": nm_model, "group": group, "checkpoint": checkpoint, "workloads": workloads,
                    "repeats": MEM_REPEATS, "options": options}, timeout=900)
            except IsolatedError as exc:
                out[group] = {"error": str(exc)}
    return out


def test_peers_memory(benchmark, nm_model, nm_loaded, nm_registry, nm_record):
    adapter, tools, skipped = _setup(nm_model, nm_loaded)
    info = adapter.info()
    workloads = _workloads(adapter)
    shapes = {}
    for w in workloads:
        seq = int(adapter.tokenize(list(w.texts))["input_ids"].shape[1])
        shapes[w.name] = {"texts": len(w.texts), "seq_len": seq, "layers": list(w.layers)}
    groups = [g for g in GROUPS if any(t in tools for t in GROUPS[g])]
    payload = [{"name": w.name, "texts": list(w.texts), "layers": list(w.layers)} for w in workloads]
    benchmark.extra_info.update(model=nm_model, groups=groups)
    children = benchmark.pedantic(_memory_run, args=(nm_model, load_options(nm_registry, nm_model),
                                                     checkpoint_of(adapter), payload, groups), rounds=1, iterations=1)
    failed = dict(skipped)
    for group, child in children.items():
        if "error" in child:
            for tool in GROUPS[group]:
                failed[tool] = child["error"]
            nm_record("peers", info, "extra_peak_memory", None, "GB", workload={"name": "load", "tool": group},
                      error=child["error"])
            continue
        _write(nm_record, info, memory_records(child, shapes))
    rows = pooled_memory_rows([c for c in children.values() if "error" not in c])
    verdicts = []
    for name in shapes:
        by_tool = rows.get(name, {})
        s = shapes[name]
        _missing(nm_record, info, "extra_peak_memory", "GB", workload_of(name, s["texts"], s["seq_len"], s["layers"],
                                                                         OURS), skipped)
        if OURS not in by_tool:
            continue
        verdicts += _write(nm_record, info, [verdict_record("neuronmap_lowest_extra_memory", name, by_tool,
                                                            failed, MEMORY_RULE)])
    _judge(verdicts)
