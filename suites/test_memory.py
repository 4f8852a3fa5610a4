"""Peak memory per model and workload: load + one extraction in a fresh process, VmHWM reset (exact).

Each run also records the load time it measured (metric `load_time`, no stated target).
"""

from __future__ import annotations

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
