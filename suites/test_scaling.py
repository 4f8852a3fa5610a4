"""Scaling: extraction latency and extraction working-set memory against sequence length and batch size.

The report fits the growth exponent (log-log) per model and family. Memory here is the peak RSS added by
one extraction of an already loaded, warmed-up model (freed memory trimmed first, VmHWM reset), not the load: metric
`extraction_peak_memory`, so it is never judged against the load-and-extract targets.
"""

from __future__ import annotations

import pytest

from adapters.memory import release_memory
from harness.memory import GB, PeakProbe
from harness.timing import measure
from harness.workloads import seed_layers, texts_of_tokens

pytestmark = pytest.mark.nm_extended  # full profile (harness/plugin.py --nm-profile)

SEQ_LENS = (16, 64, 256)
BATCHES = (1, 4, 16)
FIXED_SEQ, FIXED_BATCH = 64, 1


def points(max_positions: int | None) -> list[tuple[str, int, int]]:
    limit = max_positions or max(SEQ_LENS)
    seq = [("scaling-seq", s, FIXED_BATCH) for s in SEQ_LENS if s <= limit]
    return seq + [("scaling-batch", min(FIXED_SEQ, limit), b) for b in BATCHES]


def scaling_run(adapter) -> list[dict]:
    out = []
    layers = list(seed_layers(adapter.mapping.num_layers))
    for name, seq, batch in points(adapter.max_positions()):
        texts = list(texts_of_tokens(adapter.tokenizer, batch, seq))
        adapter.extract_activations(texts, layers)  # warm-up: one-time allocations are not the working set
        release_memory()  # hand the allocator's free pool back, or the working set reads as zero
        with PeakProbe() as probe:
            acts = adapter.extract_activations(texts, layers)
        stats = measure(lambda t=texts: adapter.extract_activations(t, layers), rounds=3, warmup=0)
        out.append({"workload": {"name": name, "seq_len": int(acts.input_ids.shape[1]), "batch": batch,
                                 "layers": layers},
                    "stats": stats.to_dict(), "peak": probe.to_dict()})
    return out


def test_scaling(benchmark, nm_model, nm_loaded, nm_record):
    adapter = nm_loaded.get(nm_model)
    results = benchmark.pedantic(scaling_run, args=(adapter,), rounds=1, iterations=1)
    info = adapter.info()
    for point in results:
        nm_record("scaling", info, "extraction_latency", point["stats"]["median"], "s",
                  workload=point["workload"], stats=point["stats"])
        nm_record("scaling", info, "extraction_peak_memory", point["peak"]["delta_bytes"] / GB, "GB",
                  workload=point["workload"], extra={"probe": point["peak"]})
    assert len(results) == len(points(adapter.max_positions()))
    if not results:
        pytest.fail("no scaling point measured")
