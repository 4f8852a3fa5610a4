"""Extraction latency per model and workload: warm-up, many rounds, median and IQR, raw samples kept."""

from __future__ import annotations

import pytest

from harness.timing import measure, stats_from_samples
from harness.workloads import WORKLOAD_NAMES, workload_by_name
from suites.common import check_verdict

ROUNDS = {"seed": (3, 30), "batch8x128": (2, 8)}  # (warm-up, rounds)


@pytest.mark.parametrize("workload", WORKLOAD_NAMES)
def test_extraction_latency(benchmark, nm_model, workload, nm_loaded, nm_record):
    adapter = nm_loaded.get(nm_model)
    w = workload_by_name(workload, adapter.tokenizer, adapter.mapping.num_layers, adapter.max_positions())
    texts, layers = list(w.texts), list(w.layers)
    warmup, rounds = ROUNDS[workload]
    benchmark.extra_info.update(model=nm_model, workload=workload)
    result = benchmark.pedantic(adapter.extract_activations, args=(texts, layers), rounds=rounds,
                                warmup_rounds=warmup, iterations=1)
    seq = int(result.input_ids.shape[1])
    if benchmark.enabled:
        stats = stats_from_samples(list(benchmark.stats.stats.data)).to_dict()
        timer = "pytest-benchmark (time.perf_counter)"
    else:  # --benchmark-disable: measure with the harness's own timer
        stats = measure(lambda: adapter.extract_activations(texts, layers), rounds=rounds, warmup=warmup).to_dict()
        timer = "harness.timing (time.perf_counter_ns)"
    record = nm_record("latency", adapter.info(), "extraction_latency", stats["median"], "s",
                       workload=w.describe(tokens_per_text=seq), stats=stats,
                       extra={"timer": timer, "stopped_early": result.stopped_early})
    check_verdict(record)
