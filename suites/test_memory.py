"""Peak memory per model and workload: load + one extraction in a fresh process, VmHWM reset (exact)."""

from __future__ import annotations

import pytest

from harness.isolate import IsolatedError, run_isolated
from harness.memory import GB
from harness.plugin import load_options
from harness.workloads import WORKLOAD_NAMES
from suites.common import check_verdict


@pytest.mark.parametrize("workload", WORKLOAD_NAMES)
def test_peak_memory(benchmark, nm_model, workload, nm_registry, nm_record):
    from adapters.sources import resolve_source

    options = load_options(nm_registry, nm_model)
    resolve_source(nm_model, nm_registry, **options)  # build the zoo checkpoint here, not inside the probe
    try:
        out = benchmark.pedantic(run_isolated, args=("harness.probes:peak_memory",
                                                     {"model": nm_model, "workload": workload, **options}),
                                 kwargs={"timeout": 1800}, rounds=1, iterations=1)
    except IsolatedError as exc:
        config = nm_registry.get_model_config(nm_model)
        record = nm_record("memory", {"name": nm_model, "family": config.family.value}, "peak_memory", None,
                           "GB", error=str(exc))
        check_verdict(record)
        return
    probe = out["probe"]
    record = nm_record(
        "memory", out["info"], "peak_memory", probe["delta_bytes"] / GB, "GB",
        workload={**out["workload"], **options},
        extra={"probe": probe, "load_seconds": out["load_seconds"], "bytes_returned": out["bytes_returned"],
               "definition": "peak RSS during load + one extraction minus RSS before the load"},
    )
    check_verdict(record)
