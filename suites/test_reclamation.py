"""Memory given back after unload: before load, after load (weights read), after unload; fresh process.

Two verdicts on the same measurement: the original design's ">90%" (metric `reclamation`) and issue 4's
">= 99% for every registered model that fits in RAM" (metric `reclamation_strict`; reduced-depth variants
of large models are not registered models that fit, so they get only the first). On CUDA, allocated
memory must return to its pre-load baseline (metric `cuda_memory_returned`, per device, summed over a device
map's GPUs) and `cuda_reclamation` gives the fraction of the allocated bytes the unload gave back; NVML's
device and per-process figures at the three moments sit in the record's `extra` (None plus the reason
where NVML cannot see them).
"""

from __future__ import annotations

from harness.isolate import IsolatedError, run_isolated
from harness.plugin import load_options
from suites.common import check_verdict


def test_reclamation(benchmark, nm_model, nm_registry, nm_record, nm_device_options):
    from adapters.sources import resolve_source

    options = load_options(nm_registry, nm_model)
    resolve_source(nm_model, nm_registry, **options)
    config = nm_registry.get_model_config(nm_model)
    try:
        out = benchmark.pedantic(run_isolated, args=("harness.probes:reclamation",
                                                     {"model": nm_model, **options, **nm_device_options}),
                                 kwargs={"timeout": 1800}, rounds=1, iterations=1)
    except IsolatedError as exc:
        check_verdict(nm_record("reclamation", {"name": nm_model, "family": config.family.value},
                                "reclamation", None, "fraction", error=str(exc)))
        return
    error = None if out["weakref_dead"] else "the model object is still referenced after unload"
    extra = {k: out[k] for k in ("before_bytes", "loaded_bytes", "after_bytes", "weakref_dead", "unload_seconds",
                                 "cycles", "drift_bytes")}
    extra["definition"] = ("(RSS after load - RSS after unload) / (RSS after load - RSS before load), fresh process, "
                           "after one warm-up cycle; the median of the measured cycles (all in `cycles`)")
    records = [nm_record("reclamation", out["info"], "reclamation", out["reclaimed_fraction"], "fraction",
                         error=error, workload=options, extra=extra)]
    if "depth" not in options:
        records.append(nm_record("reclamation", out["info"], "reclamation_strict", out["reclaimed_fraction"],
                                 "fraction", error=error, workload=options, extra=extra))
    cuda = out.get("cuda")
    if cuda is not None:
        returned = cuda["returned_to_baseline"]
        records.append(nm_record("reclamation", out["info"], "cuda_memory_returned",
                                 None if returned is None else float(returned), "bool",
                                 workload=options, extra=cuda))
        records.append(nm_record("reclamation", out["info"], "cuda_reclamation", cuda["reclaimed_fraction"],
                                 "fraction", workload=options, extra=cuda))
    for record in records:
        if record.value is not None or not record.metric.startswith("cuda_"):
            check_verdict(record)  # a CUDA figure torch could not give is not_measured, its reasons in extra
