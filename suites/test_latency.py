"""Extraction latency per model and workload: warm-up, many rounds, median and IQR, raw samples kept.

On CUDA every timed call ends with `torch.cuda.synchronize` on each device the model occupies (inside the
call, so pytest-benchmark's clock sees it); without it the clock would stop when the kernels are queued, not
done. extract_activations returns CPU tensors, which already waits for the device, but the timer must not
depend on that detail. Which method timed it is in the record's `stats.method` and `extra.timing_method`
(harness.timing.TIMING_METHODS: host_clock on the CPU, host_clock_cuda_synchronized on CUDA), the clock in
`extra.timer`.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.reference import RoundReference, model_forward
from harness.timing import cuda_devices, device_sync, measure, stats_from_samples, synchronized, timing_method
from harness.workloads import WORKLOAD_NAMES, workload_by_name
from suites.common import check_verdict

# (warm-up, rounds); each round is followed by the reference forward (~ as long as the batch's extraction),
# so the batch has 7 rounds: 7 vs 7 still lets Mann-Whitney reach p = 0.0006
ROUNDS = {"seed": (3, 30), "batch8x128": (1, 7)}


def model_devices(adapter: Any) -> list[str]:
    """CUDA devices the loaded model occupies: its main device plus every GPU of an accelerate device map."""
    device_map = getattr(adapter.model, "hf_device_map", None) or {}
    return cuda_devices([adapter.device, *device_map.values()])


@pytest.mark.parametrize("workload", WORKLOAD_NAMES)
def test_extraction_latency(benchmark, nm_model, workload, nm_loaded, nm_record):
    adapter = nm_loaded.get(nm_model)
    w = workload_by_name(workload, adapter.tokenizer, adapter.mapping.num_layers, adapter.max_positions())
    texts, layers = list(w.texts), list(w.layers)
    warmup, rounds = ROUNDS[workload]
    devices = model_devices(adapter)
    sync = device_sync(devices)
    sync_text = f" + torch.cuda.synchronize({', '.join(devices)}) inside each timed call" if sync else ""
    benchmark.extra_info.update(model=nm_model, workload=workload, cuda_sync=devices or None)
    reference = RoundReference(model_forward(adapter, texts), sync, texts=len(texts))
    if sync is not None:
        sync()  # start the first round with an empty queue; every round ends synchronised
    result = benchmark.pedantic(synchronized(adapter.extract_activations, sync), args=(texts, layers),
                                teardown=reference, rounds=rounds, warmup_rounds=warmup, iterations=1)
    seq = int(result.input_ids.shape[1])
    if benchmark.enabled:
        stats = stats_from_samples(list(benchmark.stats.stats.data), timing_method(sync)).to_dict()
        timer = "pytest-benchmark (time.perf_counter)" + sync_text
    else:  # --benchmark-disable: measure with the harness's own timer
        stats = measure(lambda: adapter.extract_activations(texts, layers), rounds=rounds, warmup=warmup,
                        teardown=reference, sync=sync).to_dict()
        timer = "harness.timing (time.perf_counter_ns)" + (sync_text.replace("inside each timed call",
                                                                             "before and after each call"))
    stats["reference"] = reference.for_rounds(rounds)
    record = nm_record("latency", adapter.info(), "extraction_latency", stats["median"], "s",
                       workload=w.describe(tokens_per_text=seq), stats=stats,
                       extra={"timer": timer, "timing_method": stats["method"], "cuda_synchronized": devices,
                              "stopped_early": result.stopped_early})
    check_verdict(record)
