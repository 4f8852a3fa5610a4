"""Memory given back after unload: before load, after load (weights read), after unload; fresh process."""

from __future__ import annotations

from harness.isolate import IsolatedError, run_isolated
from harness.plugin import load_options
from suites.common import check_verdict


def test_reclamation(benchmark, nm_model, nm_registry, nm_record):
    from adapters.sources import resolve_source

    options = load_options(nm_registry, nm_model)
    resolve_source(nm_model, nm_registry, **options)
    config = nm_registry.get_model_config(nm_model)
    try:
        out = benchmark.pedantic(run_isolated, args=("harness.probes:reclamation", {"model": nm_model, **options}),
                                 kwargs={"timeout": 1800}, rounds=1, iterations=1)
    except IsolatedError as exc:
        check_verdict(nm_record("reclamation", {"name": nm_model, "family": config.family.value},
                                "reclamation", None, "fraction", error=str(exc)))
        return
    error = None if out["weakref_dead"] else "the model object is still referenced after unload"
    record = nm_record(
        "reclamation", out["info"], "reclamation", out["reclaimed_fraction"], "fraction", error=error,
        workload=options,
        extra={k: out[k] for k in ("before_bytes", "loaded_bytes", "after_bytes", "weakref_dead")},
    )
    check_verdict(record)
