"""Models bigger than the machine (issue 4): GPT-J-6B and LLaMA-2-7B at full size under a RAM cap.

Each function here runs in a fresh process (harness.isolate.run_isolated), so the peak RSS it reports is
the process's own: the checkpoint build (streamed, tensor by tensor), the device map planned on the meta
device, the capped load with disk offload plus extractions, and per-layer costs from reduced-depth,
real-width variants. Anything computed for full depth from those variants is labelled "extrapolated".
"""

from __future__ import annotations

import math
import time
from typing import Any

from harness.memory import PeakProbe, peak_rss_bytes, rss_bytes

# the two models issue 4 names; other large registered models run only at reduced depth
BIG_MODELS = ("EleutherAI/gpt-j-6B", "meta-llama/Llama-2-7b-hf")
DEFAULT_RAM_CAP_GB = 8.0  # the cap the big runs are held to (the machine has 24 GB, shared)
LAYER_COST_DEPTHS = (1, 2)
TEXTS = ("Hello world",)


def build_checkpoint(model: str, depth: int | None = None) -> dict[str, Any]:
    """Build (or find) the zoo checkpoint; the build's seconds and peak RSS, measured when built here."""
    from adapters import UniversalModelRegistry
    from adapters.zoo import checkpoint_dir, ensure_checkpoint

    config = UniversalModelRegistry().get_model_config(model)
    cached = (checkpoint_dir(config, depth) / "neuronmap_zoo.json").is_file()
    with PeakProbe() as probe:
        t0 = time.perf_counter()
        ckpt = ensure_checkpoint(config, depth=depth, progress=False)
        seconds = time.perf_counter() - t0
    build = dict(ckpt.provenance.get("build") or {})
    if not cached:
        build.update(measured_here=True, seconds=seconds, probe=probe.to_dict())
    else:
        build.update(measured_here=False)
    return {"path": str(ckpt.path), "cached": cached, "build": build, "provenance": ckpt.provenance}


def _finite(acts: dict[Any, Any]) -> bool:
    import torch

    return all(bool(torch.isfinite(v).all()) for v in acts.values())


def capped_run(model: str, ram_cap_gb: float = DEFAULT_RAM_CAP_GB, rounds: int = 2,
               reference_depth: int = 2) -> dict[str, Any]:
    """Load the full-size model with device="auto" under a RAM cap (disk offload), extract, unload.

    The peak covers load and every extraction; it is the process's absolute RSS (VmHWM after a reset),
    compared with the cap. Correctness: layer 0 (embeddings + block 0 read from the full checkpoint) must
    equal layer 0 of the reduced-depth variant, whose tensors are the same by construction (per-name
    seeds); and a disk-offloaded real-width block must give what it gives in RAM.
    """
    import torch

    from adapters.memory import GB, release_memory
    from harness.probes import _prepare
    from harness.workloads import seed_layers

    cap = int(ram_cap_gb * GB)
    analyzer, src = _prepare(model, None)
    release_memory()
    start_rss = rss_bytes()
    extraction_seconds: list[float] = []
    with PeakProbe() as probe:
        t0 = time.perf_counter()
        adapter = analyzer.load_model(model, device="auto", ram_cap=cap)
        load_seconds = time.perf_counter() - t0
        after_load_rss = rss_bytes()
        plan = adapter.plan.summary() if adapter.plan else None
        layers = list(seed_layers(adapter.mapping.num_layers))
        acts = None
        for _ in range(rounds):
            t0 = time.perf_counter()
            acts = analyzer.extract_activations(model, list(TEXTS), layers)
            extraction_seconds.append(time.perf_counter() - t0)
    assert acts is not None
    layer0 = acts[layers[0]].clone()
    shapes = {str(k): list(v.shape) for k, v in acts.items()}
    finite = _finite(acts)
    info = adapter.info()
    num_params = info["num_parameters"]
    del acts, adapter
    t0 = time.perf_counter()
    gone = analyzer.unload_model(model)
    unload_seconds = time.perf_counter() - t0
    after_unload_rss = rss_bytes()

    # correctness against the reduced-depth variant (same tensors by construction), after the capped run
    ref_name = model
    ref = analyzer.load_model(ref_name, depth=reference_depth)
    block_path = ref.mapping.stacks[ref.mapping.primary].path
    ref_acts = analyzer.extract_activations(ref_name, list(TEXTS), list(range(reference_depth)))
    prefix_diff = float((ref_acts[0] - layer0).abs().max())
    analyzer.unload_model(ref_name)
    del ref
    disk = _disk_block_check(model, reference_depth, f"{block_path}.{reference_depth - 1}", ref_acts)
    del ref_acts
    peak = probe.peak_bytes or 0
    ok = bool(finite and gone and peak <= cap and prefix_diff <= 1e-4 and disk["max_abs_diff"] <= 1e-4
              and plan is not None and plan["blocks"].get("disk", 0) > 0)
    return {
        "ram_cap_bytes": cap, "plan": plan, "num_parameters": num_params,
        "start_rss_bytes": start_rss, "after_load_rss_bytes": after_load_rss,
        "after_unload_rss_bytes": after_unload_rss, "probe": probe.to_dict(),
        "peak_rss_bytes": peak, "under_cap": peak <= cap, "process_vmhwm_end_bytes": peak_rss_bytes(),
        "load_seconds": load_seconds, "extraction_seconds": extraction_seconds, "unload_seconds": unload_seconds,
        "layers": layers, "tokens": int(layer0.shape[1]), "shapes": shapes, "finite": finite, "weakref_dead": gone,
        "prefix_check": {"reference_depth": reference_depth, "layer": 0, "max_abs_diff": prefix_diff},
        "disk_block_check": disk, "success": ok, "info": info, "source": src.provenance.get("build"),
        "torch_threads": torch.get_num_threads(),
    }


def _disk_block_check(model: str, depth: int, block: str, ref_acts: dict[Any, Any]) -> dict[str, Any]:
    """The reduced-depth variant with its last block forced to disk must match it in RAM (real width)."""
    from adapters import MultiModelAnalyzer

    analyzer = MultiModelAnalyzer()
    adapter = analyzer.load_model(model, device={"": "cpu", block: "disk"}, depth=depth)
    acts = analyzer.extract_activations(model, list(TEXTS), [depth - 1])
    diff = float((acts[depth - 1] - ref_acts[depth - 1]).abs().max())
    plan = adapter.plan.summary() if adapter.plan else None
    del acts, adapter
    analyzer.unload_model(model)
    return {"depth": depth, "disk_block": block, "max_abs_diff": diff, "blocks": plan["blocks"] if plan else None}


def layer_cost(model: str, depth: int, rounds: int = 3) -> dict[str, Any]:
    """Load the reduced-depth, real-width variant in RAM; load time, peak RSS (load + extractions) and the
    median extraction time of the seed text through every block (fresh process)."""
    from adapters.memory import release_memory
    from harness.probes import _prepare

    analyzer, _ = _prepare(model, None, depth)
    release_memory()
    times: list[float] = []
    with PeakProbe() as probe:
        t0 = time.perf_counter()
        adapter = analyzer.load_model(model, depth=depth)
        load_seconds = time.perf_counter() - t0
        layers = [adapter.mapping.num_layers - 1]
        for _ in range(rounds + 1):  # the first call is a warm-up (reads the memory-mapped weights)
            t0 = time.perf_counter()
            analyzer.extract_activations(model, list(TEXTS), layers)
            times.append(time.perf_counter() - t0)
    warm = sorted(times[1:])
    return {"depth": depth, "load_seconds": load_seconds, "probe": probe.to_dict(),
            "extraction_seconds": warm[len(warm) // 2], "extraction_samples": times,
            "first_extraction_seconds": times[0], "info": adapter.info()}


def extrapolate(costs: dict[int, dict[str, float]], full_depth: int) -> dict[str, Any]:
    """Per-layer cost from two depths (difference) and a straight-line extrapolation to full depth."""
    (d1, a), (d2, b) = sorted(costs.items())[:2]
    out: dict[str, Any] = {"from_depths": [d1, d2], "full_depth": full_depth, "basis": "extrapolated"}
    for key in a:
        per = (b[key] - a[key]) / (d2 - d1)
        full = a[key] + (full_depth - d1) * per
        out[key] = {"per_layer": per, "full_depth": full if math.isfinite(full) else None}
    return out
