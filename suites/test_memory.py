"""Peak memory per model and workload: load + one extraction in a fresh process, VmHWM reset (exact).

Each run also records the load time it measured (metric `load_time`, no stated target). On CUDA
(--nm-device cuda|cuda:N|auto) the same fresh process also measures the GPU side: `cuda_peak_allocated` (peak
allocated by tensors during load + extraction, minus allocated before the load, after
`reset_peak_memory_stats`), `cuda_peak_reserved` (the caching allocator's peak), `nvml_process_memory`
(what the driver attributes to the process, context included: None with the reason where NVML shows host
PIDs) and `cuda_context_overhead` (once per model). Summed over the GPUs of a device map.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.isolate import IsolatedError, run_isolated
from harness.memory import GB
from harness.plugin import load_options
from harness.workloads import WORKLOAD_NAMES
from suites.common import check_verdict


@pytest.mark.parametrize("workload", WORKLOAD_NAMES)
def test_peak_memory(benchmark, nm_model, workload, nm_registry, nm_record, nm_device_options):
    from adapters.sources import resolve_source

    options = load_options(nm_registry, nm_model)
    resolve_source(nm_model, nm_registry, **options)  # build the zoo checkpoint here, not inside the probe
    try:
        out = benchmark.pedantic(run_isolated, args=("harness.probes:peak_memory",
                                                     {"model": nm_model, "workload": workload, **options,
                                                      **nm_device_options}),
                                 kwargs={"timeout": 1800}, rounds=1, iterations=1)
    except IsolatedError as exc:
        config = nm_registry.get_model_config(nm_model)
        record = nm_record("memory", {"name": nm_model, "family": config.family.value}, "peak_memory", None,
                           "GB", error=str(exc))
        check_verdict(record)
        return
    probe = out["probe"]
    workload_facts = {**out["workload"], **options}
    if workload == WORKLOAD_NAMES[0]:  # one load time per model is enough (the load is the same)
        nm_record("memory", out["info"], "load_time", out["load_seconds"], "s", workload=options,
                  extra={"definition": "load_model wall time in a fresh process (memory-mapped safetensors; "
                                       "weights are read later, by the first forward)"})
    record = nm_record(
        "memory", out["info"], "peak_memory", probe["delta_bytes"] / GB, "GB",
        workload=workload_facts,
        extra={"probe": probe, "load_seconds": out["load_seconds"], "bytes_returned": out["bytes_returned"],
               "peak_rss_bytes": probe["peak_bytes"],
               "definition": "peak RSS during load + one extraction minus RSS before the load"},
    )
    check_verdict(record)
    if out.get("cuda") is not None:
        record_cuda(nm_record, out, workload_facts, first=workload == WORKLOAD_NAMES[0])


def _gb(value: int | None) -> float | None:
    return None if value is None else value / GB


def record_cuda(nm_record: Any, out: dict[str, Any], workload: dict[str, Any], first: bool) -> None:
    """The GPU figures of one probe as records; figures NVML cannot see are recorded as None with the reason."""
    cuda = dict(out["cuda"])
    overhead = cuda.pop("context_overhead", None) or {}
    figures = [
        ("cuda_peak_allocated", cuda["peak_allocated_delta_bytes"], None,
         "torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus allocated before the load"),
        ("cuda_peak_reserved", cuda["max_reserved_bytes"], None,
         "torch.cuda.max_memory_reserved (caching allocator) after reset_peak_memory_stats"),
        ("nvml_process_memory", cuda["nvml_process_used_bytes"], cuda["nvml_process_reason"],
         "GPU memory NVML attributes to the probe process after the extraction (CUDA context included)"),
    ]
    if first:
        figures.append(("cuda_context_overhead", overhead.get("overhead_bytes"), overhead.get("reason"),
                        f"CUDA context cost on the model's first GPU ({overhead.get('method')})"))
    for metric, value, reason, definition in figures:
        extra = {"definition": definition, "reason": reason, "cuda": cuda}
        if metric == "cuda_context_overhead":
            extra["context_overhead"] = overhead
        record = nm_record("memory", out["info"], metric, _gb(value), "GB", workload=workload, extra=extra)
        if value is not None:  # None is not_measured, with its reason: visible in the report, not a failure
            check_verdict(record)
