"""Measurements that need a fresh process per model (run through harness.isolate.run_isolated).

One allocator's history must not leak into the next measurement, so each function here starts in a new
interpreter, loads one model through the public API, measures, and returns plain JSON.

On CUDA (`device` "cuda", "cuda:N" or "auto" with GPUs visible) the same probes also record the GPU side,
through harness.gpu: the CUDA context overhead (measured first, while this process has no context yet),
torch's peak allocated and reserved bytes after `reset_peak_memory_stats`, NVML's device-wide and
per-process figures (None plus the reason where NVML cannot show them), and whether allocated memory went
back to its pre-load baseline after the unload. On the CPU `cuda` is None: no figure, rather than a zero.
"""

from __future__ import annotations

import time
from typing import Any

from harness import gpu
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


def _cuda_start(device: str | None) -> tuple[list[str], dict[str, Any] | None]:
    """The CUDA devices this load may touch, and the context overhead, measured before anything else.

    Must run first in the fresh process: once a CUDA context exists, the overhead reads as ~0.
    """
    if device is None or str(device) == "cpu" or not gpu.cuda_available():
        return [], None
    import torch

    devices = gpu.cuda_devices_for_option(device, torch.cuda.device_count())
    if not devices:
        return [], None
    return devices, gpu.measure_context_overhead(int(devices[0].split(":")[1]))


def cuda_reclamation(before: dict[str, Any], loaded: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """CUDA figures of one load/unload cycle from three `gpu_memory_snapshot`s per device (pure: testable).

    returned_to_baseline: every device's allocated bytes after the unload are at most those before the load.
    reclaimed_fraction: (allocated loaded - after) / (loaded - before), summed over devices; None when the
    load allocated nothing; both None when a figure is unknown. NVML figures are kept as read (None plus
    a reason where invisible).
    """
    stages = {"before": before, "loaded": loaded, "after": after}
    devices = list(before)

    def fig(stage: dict[str, Any], d: str, part: str, key: str) -> Any:
        return ((stage.get(d) or {}).get(part) or {}).get(key)

    def per_stage(part: str, key: str) -> dict[str, dict[str, Any]]:
        return {name: {d: fig(stage, d, part, key) for d in devices} for name, stage in stages.items()}

    alloc = per_stage("torch", "allocated_bytes")
    known = all(v is not None for stage in alloc.values() for v in stage.values())
    used = sum(alloc["loaded"][d] - alloc["before"][d] for d in devices) if known else None
    used = used if used is not None and used > 0 else None
    freed = sum(alloc["loaded"][d] - alloc["after"][d] for d in devices) if known else None
    reasons = sorted({str(r) for stage in stages.values() for d in devices
                      for r in ((stage.get(d) or {}).get("reason"), fig(stage, d, "nvml_device", "reason"),
                                fig(stage, d, "nvml_process", "reason")) if r})
    return {
        "devices": devices,
        "allocated_before": alloc["before"], "allocated_loaded": alloc["loaded"], "allocated_after": alloc["after"],
        "reserved_after": per_stage("torch", "reserved_bytes")["after"],
        "returned_to_baseline": all(alloc["after"][d] <= alloc["before"][d] for d in devices) if known else None,
        "reclaimed_fraction": freed / used if freed is not None and used else None,
        "nvml_device_used": per_stage("nvml_device", "used_bytes"),
        "nvml_process_used": per_stage("nvml_process", "used_bytes"),
        "reasons": reasons,
    }


def peak_memory(
    model: str,
    workload: str,
    device: str | None = None,
    dtype: str | None = None,
    source: str | None = None,
    depth: int | None = None,
) -> dict[str, Any]:
    """Peak RSS added by loading `model` and running one extraction of `workload` (fresh process); on CUDA
    also the allocator's peaks, NVML's figures and the context overhead (`cuda`, None on the CPU)."""
    from adapters.memory import release_memory
    from harness.workloads import workload_by_name

    cuda_devices, overhead = _cuda_start(device)
    analyzer, _ = _prepare(model, source, depth)
    release_memory()
    with PeakProbe() as probe, gpu.CudaMemoryProbe(cuda_devices) as cuda_probe:
        t0 = time.perf_counter()
        adapter = analyzer.load_model(model, device=device, dtype=dtype, source=source, depth=depth)
        load_s = time.perf_counter() - t0
        w = workload_by_name(workload, adapter.tokenizer, adapter.mapping.num_layers, adapter.max_positions())
        acts = analyzer.extract_activations(model, list(w.texts), list(w.layers))
    seq = int(acts.input_ids.shape[1])
    cuda = cuda_probe.to_dict()
    if cuda is not None:
        cuda["context_overhead"] = overhead
    return {
        "probe": probe.to_dict(),
        "cuda": cuda,
        "load_seconds": load_s,
        "bytes_returned": _bytes(acts),
        "workload": w.describe(tokens_per_text=seq),
        "info": adapter.info(),
    }


RECLAMATION_CYCLES = 3  # measured load/unload cycles after the warm-up; the verdict takes their median


def _reclamation_cycle(analyzer: Any, model: str, cuda_devices: list[int], **load: Any) -> dict[str, Any]:
    """One measured cycle: RSS (and CUDA) before the load, after it (weights read), after the unload."""
    from adapters.memory import release_memory

    release_memory()
    before = rss_bytes()
    cuda_before = {d: gpu.gpu_memory_snapshot(d) for d in cuda_devices}
    adapter = analyzer.load_model(model, **load)
    info = adapter.info()
    _touch_weights(adapter.model)
    analyzer.extract_activations(model, ["Hello world"], [-1])
    loaded = rss_bytes()
    cuda_loaded = {d: gpu.gpu_memory_snapshot(d) for d in cuda_devices}
    ref = __import__("weakref").ref(adapter.model)
    del adapter
    unload_seconds = time.perf_counter()
    analyzer.unload_model(model)
    unload_seconds = time.perf_counter() - unload_seconds
    after = rss_bytes()
    cuda_after = {d: gpu.gpu_memory_snapshot(d) for d in cuda_devices}
    used = (loaded or 0) - (before or 0)
    return {"before_bytes": before, "loaded_bytes": loaded, "after_bytes": after,
            "reclaimed_fraction": (loaded - after) / used if used > 0 else None,
            "weakref_dead": ref() is None, "unload_seconds": unload_seconds, "info": info,
            "cuda": (cuda_before, cuda_loaded, cuda_after)}


def reclamation(
    model: str,
    device: str | None = None,
    dtype: str | None = None,
    source: str | None = None,
    depth: int | None = None,
    cycles: int = RECLAMATION_CYCLES,
) -> dict[str, Any]:
    """RSS before load, after load (every weight read once), after unload; and whether the model died.

    After one warm-up cycle (one-time costs — lazy imports, kernel workspaces, tokenizer caches — are not
    model memory), `cycles` measured cycles; the figures are those of the cycle with the median reclaimed
    fraction. Why several: RSS after an unload moves by about +-1 MB between identical cycles (heap
    granularity), which is 1% of a 100 MB model; a real leak shows in every cycle, and `drift_bytes` (RSS
    after the last cycle minus before the first) shows one that accumulates.
    On CUDA also allocated bytes and NVML figures at the same three moments (`cuda`, None on the CPU)."""
    cuda_devices, overhead = _cuda_start(device)
    analyzer, _ = _prepare(model, source, depth)
    load = {"device": device, "dtype": dtype, "source": source, "depth": depth}
    analyzer.load_model(model, **load)
    analyzer.extract_activations(model, ["Hello world"], [-1])
    analyzer.unload_model(model)
    runs = [_reclamation_cycle(analyzer, model, cuda_devices, **load) for _ in range(max(1, cycles))]
    ranked = sorted(runs, key=lambda r: -1.0 if r["reclaimed_fraction"] is None else r["reclaimed_fraction"])
    chosen = ranked[len(ranked) // 2]
    keys = ("before_bytes", "loaded_bytes", "after_bytes", "reclaimed_fraction", "unload_seconds")
    return {
        **{k: chosen[k] for k in keys},
        "weakref_dead": all(r["weakref_dead"] for r in runs),
        "cycles": [{k: r[k] for k in keys} for r in runs],
        "drift_bytes": (runs[-1]["after_bytes"] or 0) - (runs[0]["before_bytes"] or 0),
        # on CUDA: allocated bytes per device before the load and after the unload (must not exceed)
        "cuda": None if not cuda_devices else {**cuda_reclamation(*chosen["cuda"]), "context_overhead": overhead},
        "info": chosen["info"],
    }


# ---- gradient checkpointing and mixed precision (issue 4) ----------------------------------------------
PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def training_memory(
    model: str,
    mode: str,
    precision: str = "fp32",
    checkpointing: bool = False,
    batch: int = 8,
    seq_len: int = 128,
    source: str | None = None,
) -> dict[str, Any]:
    """Peak RSS of one inference forward (no grad) or one training step (forward + backward), fresh process.

    inference: the model is loaded in `precision` and runs one full no-grad forward in eval mode.
    training: float32 weights; fp16/bf16 run the forward under torch.autocast (mixed precision); one loss
    (the model's own LM/MLM loss on the inputs as labels) and one backward, no optimizer (no state).
    checkpointing: transformers' activation (gradient) checkpointing enabled before the step.
    Figures: `total` = peak RSS while loading and stepping minus RSS before the load (weights,
    gradients, activations); `step` = peak RSS during the step minus RSS after the load.
    """
    import torch

    from adapters.compat import no_cache_kwargs
    from adapters.memory import release_memory
    from harness.workloads import texts_of_tokens

    if mode not in ("inference", "training"):
        raise ValueError(f"mode must be 'inference' or 'training', got {mode!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    analyzer, _ = _prepare(model, source)
    load_dtype = PRECISIONS[precision] if mode == "inference" else "float32"
    release_memory()
    with PeakProbe() as total:
        adapter = analyzer.load_model(model, dtype=load_dtype, source=source)
        net = adapter.model
        _touch_weights(net)
        texts = texts_of_tokens(adapter.tokenizer, batch, seq_len)
        inputs = adapter.tokenize(list(texts))
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
        if checkpointing:
            enable = getattr(net, "activation_checkpointing_enable", None) or net.gradient_checkpointing_enable
            enable()
        extra = no_cache_kwargs(net)
        release_memory()
        loaded = rss_bytes()
        t0 = time.perf_counter()
        with PeakProbe() as step:
            if mode == "inference":
                net.eval()
                with torch.no_grad():
                    out = net(**adapter.model_inputs(inputs), **extra)
                del out
            else:
                net.train()
                autocast = (torch.autocast("cpu", dtype=getattr(torch, PRECISIONS[precision]))
                            if precision != "fp32" else torch.autocast("cpu", enabled=False))
                with autocast:
                    out = net(**adapter.model_inputs(inputs), labels=labels, **extra)
                out.loss.backward()
                loss = float(out.loss.detach().float())
                del out
        step_seconds = time.perf_counter() - t0
    grads = sum(p.grad.numel() * p.grad.element_size() for p in net.parameters() if p.grad is not None)
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    info = adapter.info()
    return {
        "mode": mode, "precision": precision, "checkpointing": checkpointing,
        "checkpointing_active": bool(getattr(net, "is_gradient_checkpointing", False)) and net.training,
        "batch": batch, "tokens_per_text": int(inputs["input_ids"].shape[1]),
        "total": total.to_dict(), "step": step.to_dict(), "loaded_bytes": loaded,
        "weights_bytes": weights, "grad_bytes": grads, "step_seconds": step_seconds,
        "loss": loss if mode == "training" else None,
        "info": info,
    }


def batch_fit(model: str, headroom_gb: float, seq_len: int = 128, source: str | None = None) -> dict[str, Any]:
    """Batch sizing checked by measurement (fresh process): budget = the model's weights + `headroom_gb`;
    the suggested batch runs once under a peak probe, a batch 2x larger is estimated, not run."""
    from adapters.memory import GB, release_memory

    analyzer, _ = _prepare(model, source)
    adapter = analyzer.load_model(model, source=source)
    _touch_weights(adapter.model)
    release_memory()
    layers = [adapter.mapping.num_layers - 1]
    budget = adapter.weights_bytes() + int(headroom_gb * GB)
    suggested = adapter.suggest_batch_size(budget, seq_len, layers)
    fit = adapter.fit_batch_size(budget, seq_len, layers)
    return {"budget_bytes": budget, "seq_len": seq_len, "suggested": suggested, "fit": fit, "layers": layers,
            "info": adapter.info()}
