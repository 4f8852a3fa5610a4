"""Measurements that need a fresh process per model (run through harness.isolate.run_isolated).

One allocator's history must not leak into the next measurement, so each function here starts in a new
interpreter, loads one model through the public API, measures, and returns plain JSON.
"""

from __future__ import annotations

import time
from typing import Any

from harness.memory import PeakProbe, rss_bytes


def _prepare(model: str, source: str | None, depth: int | None = None) -> tuple[Any, Any]:
    """Import everything a load needs (model class included) so the baseline excludes import cost."""
    import transformers

    from adapters import MultiModelAnalyzer
    from adapters.sources import resolve_source

    analyzer = MultiModelAnalyzer()
    src = resolve_source(model, analyzer.registry, source=source, depth=depth)  # builds the zoo checkpoint if needed
    config = transformers.AutoConfig.from_pretrained(src.location)
    for arch in getattr(config, "architectures", None) or ():
        getattr(transformers, arch, None)  # the lazy module import happens here, not inside the probe
    transformers.AutoTokenizer.from_pretrained(src.location)
    return analyzer, src


def _touch_weights(model: Any) -> None:
    """Read every weight once: memory-mapped weights count in RSS only when read. (A function of its own,
    so no loop variable outlives it holding a tensor — and with it the whole file mapping.)"""
    import torch

    with torch.no_grad():
        for p in model.parameters():
            p.float().sum()


def _bytes(tensors: dict) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def peak_memory(
    model: str,
    workload: str,
    device: str | None = None,
    dtype: str | None = None,
    source: str | None = None,
    depth: int | None = None,
) -> dict[str, Any]:
    """Peak RSS added by loading `model` and running one extraction of `workload` (fresh process)."""
    from adapters.memory import release_memory
    from harness.workloads import workload_by_name

    analyzer, _ = _prepare(model, source, depth)
    release_memory()
    with PeakProbe() as probe:
        t0 = time.perf_counter()
        adapter = analyzer.load_model(model, device=device, dtype=dtype, source=source, depth=depth)
        load_s = time.perf_counter() - t0
        w = workload_by_name(workload, adapter.tokenizer, adapter.mapping.num_layers, adapter.max_positions())
        acts = analyzer.extract_activations(model, list(w.texts), list(w.layers))
    seq = int(acts.input_ids.shape[1])
    return {
        "probe": probe.to_dict(),
        "load_seconds": load_s,
        "bytes_returned": _bytes(acts),
        "workload": w.describe(tokens_per_text=seq),
        "info": adapter.info(),
    }


def reclamation(
    model: str,
    device: str | None = None,
    dtype: str | None = None,
    source: str | None = None,
    depth: int | None = None,
) -> dict[str, Any]:
    """RSS before load, after load (every weight read once), after unload; and whether the model died."""
    from adapters.memory import release_memory

    analyzer, _ = _prepare(model, source, depth)
    # one full warm-up cycle first: one-time costs (lazy imports, kernel workspaces, tokenizer caches)
    # are not model memory and would read as "not given back"
    analyzer.load_model(model, device=device, dtype=dtype, source=source, depth=depth)
    analyzer.extract_activations(model, ["Hello world"], [-1])
    analyzer.unload_model(model)
    release_memory()
    before = rss_bytes()
    adapter = analyzer.load_model(model, device=device, dtype=dtype, source=source, depth=depth)
    info = adapter.info()
    _touch_weights(adapter.model)
    analyzer.extract_activations(model, ["Hello world"], [-1])
    loaded = rss_bytes()
    ref = __import__("weakref").ref(adapter.model)
    del adapter
    analyzer.unload_model(model)
    after = rss_bytes()
    used = (loaded or 0) - (before or 0)
    return {
        "before_bytes": before,
        "loaded_bytes": loaded,
        "after_bytes": after,
        "reclaimed_fraction": (loaded - after) / used if used > 0 else None,
        "weakref_dead": ref() is None,
        "info": info,
    }
