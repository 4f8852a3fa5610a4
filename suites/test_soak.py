"""Soak: 1,000 consecutive extractions on a real-size model; RSS growth after warm-up must stay under 2 %.

Runs on the first selected model only (one long run says what it has to; every model would cost minutes).
"""

from __future__ import annotations

import pytest

from adapters.memory import release_memory
from harness.memory import rss_bytes
from harness.workloads import SEED_TEXTS, seed_layers
from suites.common import check_verdict

pytestmark = pytest.mark.nm_extended  # full profile (harness/plugin.py --nm-profile)

CALLS, WARMUP = 1000, 50


def soak(adapter) -> dict:
    layers = list(seed_layers(adapter.mapping.num_layers))
    texts = list(SEED_TEXTS)
    for _ in range(WARMUP):
        adapter.extract_activations(texts, layers)
    release_memory()
    start = rss_bytes()
    trace = []
    for i in range(CALLS):
        adapter.extract_activations(texts, layers)
        if i % 100 == 99:
            trace.append(rss_bytes())
    release_memory()
    end = rss_bytes()
    return {"start_bytes": start, "end_bytes": end, "trace_bytes": trace, "layers": layers}


def test_soak(benchmark, request, nm_model, nm_loaded, nm_record):
    from adapters import UniversalModelRegistry

    first = UniversalModelRegistry().select(request.config.getoption("nm_models"))[0]
    if nm_model != first:
        pytest.skip(f"the soak runs on the first selected model only ({first})")
    adapter = nm_loaded.get(nm_model)
    out = benchmark.pedantic(soak, args=(adapter,), rounds=1, iterations=1)
    growth = (out["end_bytes"] - out["start_bytes"]) / out["start_bytes"]
    record = nm_record("soak", adapter.info(), "soak_rss_growth", growth, "fraction",
                       workload={"name": "soak", "calls": CALLS, "warmup": WARMUP, "texts": len(SEED_TEXTS),
                                 "layers": out["layers"]},
                       extra={k: out[k] for k in ("start_bytes", "end_bytes", "trace_bytes")})
    check_verdict(record)
