"""Overhead of extraction against the forward it has to run, and the early-exit saving against a full forward.

Three references, all on the same loaded model and the same pre-tokenized batch:

- `full_forward`: the model's plain forward, exactly what a user would run (`torch.no_grad()`,
  `use_cache=False` where the config has `use_cache`; encoder-decoders get the decoder start token, as
  the adapter gives them). Nothing is hooked.
- `truncated_forward`: the same forward stopped right after block `deepest` of the primary stack by one
  forward hook that raises `StopForward` and captures nothing. This is the least work any extraction of
  layers up to `deepest` has to do, so `extraction / truncated` is the price of NeuronMap itself.
- extraction: `adapter.extract_activations(texts, layers)`, including its own tokenization (that is what
  users pay); tokenization alone is timed beside it so a reader can see how much of the gap it explains.

`overhead_ratios` times them all in one `harness.timing.interleaved` run (round-robin, order rotated each
round), so the ratios compare calls that saw the same machine state. Ratios are given as the ratio of
medians (the headline value), the per-round paired ratios (median, IQR and raw samples), which cancel slow
drifts of a shared machine, and the ratio of minimums; the same ratios from process CPU time come beside
them, to tell work from waiting on a machine other jobs share.

`peak_memory_child` is the fresh-process half: it loads the model and, per layer set, warms up one call of
the truncated forward and one extraction, then measures the peak RSS added by ONE call of one kind (VmHWM
reset, exact). The suites run one child per (model, kind) through `harness.isolate.run_isolated`, with
`ALLOCATOR_ENV` set so that the figure is the peak of live bytes, not glibc's cached heap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from adapters.capture import StopForward
from adapters.compat import no_cache_kwargs
from harness.timing import TimingStats, interleaved, stats_from_samples

__all__ = [
    "ALLOCATOR_ENV",
    "KINDS",
    "bytes_returned",
    "deepest_block",
    "forward_kwargs",
    "full_forward",
    "layers_tag",
    "overhead_ratios",
    "peak_memory_child",
    "ratio_summary",
    "summarize",
    "truncated_forward",
]

KINDS = ("truncated", "extraction")  # what a peak-memory child measures
# Environment of a peak-memory child. With glibc's default, dynamic mmap threshold, freed tensors stay in the
# heap and the peak RSS of one identical truncated forward read 73-187 MiB across fresh processes (GPT-2,
# 8x128): allocator history, not work. A fixed threshold gives every allocation >= 128 KiB its own mapping,
# unmapped on free, so VmHWM is the peak of live bytes and repeats to 0.1 MiB.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}

TOKENIZE = "tokenize"
FULL = "full_forward"


def layers_tag(layers: Sequence[int]) -> str:
    """Stable text form of a layer set for names: (0, 6, 11) -> "0_6_11" (negative: "m1" for -1)."""
    return "_".join(str(x) if x >= 0 else f"m{-x}" for x in layers)


def truncated_key(deepest: int) -> str:
    return f"truncated@{deepest}"


def extraction_key(layers: Sequence[int]) -> str:
    return f"extraction[{layers_tag(layers)}]"


def forward_kwargs(adapter: Any, inputs: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Keyword arguments of the plain forward a user would run on `inputs` (built outside any timed region)."""
    model = adapter.model
    config = model.config
    kwargs: dict[str, Any] = dict(adapter.model_inputs(inputs))
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" not in kwargs:
        start = getattr(config, "decoder_start_token_id", None)
        start = start if start is not None else getattr(config, "pad_token_id", None) or 0
        batch = kwargs["input_ids"].shape[0]
        kwargs["decoder_input_ids"] = torch.full((batch, 1), int(start), dtype=torch.long,
                                                 device=kwargs["input_ids"].device)
    return {**kwargs, **no_cache_kwargs(model)}


def full_forward(adapter: Any, inputs: Mapping[str, torch.Tensor]) -> Any:
    """The model's plain forward, no hooks, no grad: every block, the final norm and any head run."""
    kwargs = forward_kwargs(adapter, inputs)
    with torch.no_grad():
        return adapter.model(**kwargs)


def deepest_block(adapter: Any, layers: Sequence[int | str]) -> int:
    """Index (non-negative) of the deepest primary-stack block a layer set needs; other stacks are refused."""
    mapping = adapter.mapping
    deepest = -1
    for layer in layers:
        stack, index, _component = mapping.parse(layer)
        if stack != mapping.primary:
            raise ValueError(f"layer {layer!r} is in stack {stack!r}; overhead is measured on the primary "
                             f"stack ({mapping.primary!r}) only")
        deepest = max(deepest, index)
    if deepest < 0:
        raise ValueError("empty layer set")
    return deepest


def truncated_forward(adapter: Any, inputs: Mapping[str, torch.Tensor], deepest: int) -> bool:
    """The plain forward stopped right after block `deepest` of the primary stack; captures nothing.

    One forward hook on that block raises `StopForward` (weight-shared stacks, where one module serves
    several layers, hook their modules and count calls instead). Returns True when the forward stopped there.
    """
    mapping = adapter.mapping
    stack = mapping.stacks[mapping.primary]
    if not 0 <= deepest < stack.num_layers:
        raise ValueError(f"deepest={deepest} is outside 0..{stack.num_layers - 1}")
    kwargs = forward_kwargs(adapter, inputs)
    if stack.shared:
        calls = [0]

        def counting(_m: torch.nn.Module, _a: Any, _o: Any) -> None:
            calls[0] += 1
            if calls[0] == deepest + 1:
                raise StopForward

        handles = [m.register_forward_hook(counting) for m in dict.fromkeys(stack.modules)]
    else:

        def stop(_m: torch.nn.Module, _a: Any, _o: Any) -> None:
            raise StopForward

        handles = [stack.modules[deepest].register_forward_hook(stop)]
    try:
        with torch.no_grad():
            adapter.model(**kwargs)
    except StopForward:
        return True
    finally:
        for h in handles:
            h.remove()
    return False


def bytes_returned(result: Mapping[Any, torch.Tensor]) -> int:
    """Bytes of every tensor an extraction returned: the layer entries plus `attention_mask` and `input_ids`."""
    tensors = [t for t in result.values() if isinstance(t, torch.Tensor)]
    for name in ("attention_mask", "input_ids"):
        t = getattr(result, name, None)
        if isinstance(t, torch.Tensor):
            tensors.append(t)
    return sum(t.numel() * t.element_size() for t in tensors)


# ------------------------------------------------------------------------------------------- timing


def ratio_summary(numerator: TimingStats, denominator: TimingStats) -> dict[str, Any]:
    """`ratio` = median(numerator) / median(denominator); `paired` = stats of the per-round ratios;
    `ratio_of_mins` = the least disturbed call of each (on a shared machine, the closest to the intrinsic cost).

    Both come from one interleaved run, so sample r of each was taken in round r.
    """
    if numerator.rounds != denominator.rounds:
        raise ValueError(f"samples differ in number ({numerator.rounds} vs {denominator.rounds}): not one run")
    paired = [a / b for a, b in zip(numerator.samples, denominator.samples, strict=True)]
    return {"ratio": numerator.median / denominator.median, "ratio_of_mins": numerator.min / denominator.min,
            "paired": stats_from_samples(paired).to_dict()}


def summarize(timings: Mapping[str, TimingStats], layer_sets: Sequence[tuple[Sequence[int], int]]
              ) -> list[dict[str, Any]]:
    """Per layer set (layers, deepest block): the three ratios from the timings of one interleaved run."""
    full = timings[FULL]
    out = []
    for layers, deepest in layer_sets:
        ext = timings[extraction_key(layers)]
        trunc = timings[truncated_key(deepest)]
        out.append({
            "layers": list(layers),
            "deepest": deepest,
            "extraction_vs_truncated": ratio_summary(ext, trunc),
            "extraction_vs_full": ratio_summary(ext, full),
            "truncated_vs_full": ratio_summary(trunc, full),
            "medians_s": {"extraction": ext.median, "truncated": trunc.median, "full": full.median,
                          "tokenize": timings[TOKENIZE].median},
            "iqrs_s": {"extraction": ext.iqr, "truncated": trunc.iqr, "full": full.iqr,
                       "tokenize": timings[TOKENIZE].iqr},
        })
    return out


def overhead_ratios(
    adapter: Any,
    texts: Sequence[str],
    layer_sets: Sequence[Sequence[int]],
    rounds: int,
    warmup: int,
    *,
    timer: Callable[..., dict[str, TimingStats]] = interleaved,
) -> dict[str, Any]:
    """Time tokenization, the full forward, the truncated forward at each deepest block and the extraction
    of each layer set, all in one interleaved run; return medians, IQRs, raw samples and the ratios.

    The forwards run on inputs tokenized once, outside the timed region; the extraction tokenizes inside
    (what a user pays). `timer` is `harness.timing.interleaved` (tests pass a fake).
    """
    texts = list(texts)
    sets = [(tuple(layers), deepest_block(adapter, layers)) for layers in layer_sets]
    if not sets:
        raise ValueError("no layer sets given")
    inputs = adapter.tokenize(texts)
    fns: dict[str, Callable[[], Any]] = {
        TOKENIZE: lambda: adapter.tokenize(texts),
        FULL: lambda: full_forward(adapter, inputs),
    }
    for _layers, deepest in sets:
        fns.setdefault(truncated_key(deepest), lambda d=deepest: truncated_forward(adapter, inputs, d))
    for layers, _deepest in sets:
        fns.setdefault(extraction_key(layers), lambda ls=list(layers): adapter.extract_activations(texts, ls))
    # CPU time of the process beside the wall clock: on a shared machine it shows whether a wall-clock gap is
    # work this process did or time it waited (two process_time() reads, ~1 us, inside the timed region)
    cpu: dict[str, list[float]] = {name: [] for name in fns}

    def with_cpu(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            c0 = time.process_time()
            out = fn()
            cpu[name].append(time.process_time() - c0)
            return out

        return run

    fns = {name: with_cpu(name, fn) for name, fn in fns.items()}
    # one untimed call of each kind, to check what is being timed (not to warm up: `timer` does that)
    checks = {}
    for layers, deepest in sets:
        result = adapter.extract_activations(texts, list(layers))
        checks[layers_tag(layers)] = {"stopped_early": bool(result.stopped_early),
                                      "truncated_stopped": truncated_forward(adapter, inputs, deepest),
                                      "bytes_returned": bytes_returned(result)}
        del result
    timings = timer(fns, rounds=rounds, warmup=warmup)
    summary = summarize(timings, sets)
    cpu_stats = {name: stats_from_samples(xs[warmup:]) for name, xs in cpu.items() if len(xs) > warmup}
    cpu_summary = summarize(cpu_stats, sets) if len(cpu_stats) == len(fns) else None
    for i, item in enumerate(summary):
        item.update(checks[layers_tag(item["layers"])])
        item["cpu"] = cpu_summary[i] if cpu_summary else None
    return {
        "texts": len(texts),
        "seq_len": int(inputs["input_ids"].shape[1]),
        "num_layers": adapter.mapping.num_layers,
        "rounds": rounds,
        "warmup": warmup,
        "order": list(fns),
        "timings": {name: s.to_dict() for name, s in timings.items()},
        "cpu_timings": {name: s.to_dict() for name, s in cpu_stats.items()},
        "layer_sets": summary,
        "definitions": {
            "full_forward": "model(**inputs) under torch.no_grad(), use_cache=False where the config has it; "
                            "inputs tokenized outside the timed region",
            "truncated": "the same forward stopped by one forward hook (raises StopForward, captures nothing) "
                         "right after the deepest requested block; inputs tokenized outside the timed region",
            "extraction": "adapter.extract_activations(texts, layers), tokenization included",
            "tokenize": "adapter.tokenize(texts) alone",
            "cpu": "the same ratios from process CPU time (time.process_time, all threads) of the same calls",
            "ratio": "median(numerator) / median(denominator) of one interleaved run (round-robin, order "
                     "rotated each round); 'paired' = per-round ratios",
        },
    }


# ------------------------------------------------------------------------------------------- memory


def peak_memory_child(
    model: str,
    kind: str,
    layer_sets: list[list[int]],
    texts: int = 8,
    tokens: int = 128,
    depth: int | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """In a fresh process: peak RSS added by ONE call of `kind` ("truncated" or "extraction") per layer set.

    Before each measured call the model has been loaded, the layer set's truncated forward and extraction
    have run once in this process (one-time allocations excluded), garbage is collected and the C heap
    trimmed; the probe resets VmHWM. Both kinds run the same sequence, so their allocator histories match.
    Run it with `ALLOCATOR_ENV` in the environment (the suite does) for a reproducible peak of live bytes.
    """
    import os

    from adapters import MultiModelAnalyzer
    from adapters.memory import release_memory
    from harness.memory import PeakProbe
    from harness.workloads import texts_of_tokens

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    analyzer = MultiModelAnalyzer()
    t0 = time.perf_counter()
    options: dict[str, Any] = {}
    if depth is not None:
        options["depth"] = depth
    if source is not None:
        options["source"] = source
    adapter = analyzer.load_model(model, **options)
    load_s = time.perf_counter() - t0
    limit = adapter.max_positions()
    text_list = list(texts_of_tokens(adapter.tokenizer, texts, tokens if limit is None else min(tokens, limit)))
    inputs = adapter.tokenize(text_list)
    sets = [(list(layers), deepest_block(adapter, layers)) for layers in layer_sets]
    out = []
    for layers, deepest in sets:
        truncated_forward(adapter, inputs, deepest)  # warm-up: one call of each kind right before measuring
        warm = adapter.extract_activations(text_list, layers)
        returned = bytes_returned(warm)
        del warm
        release_memory()
        if kind == "truncated":
            with PeakProbe() as probe:
                stopped = truncated_forward(adapter, inputs, deepest)
        else:
            with PeakProbe() as probe:
                result = adapter.extract_activations(text_list, layers)
            stopped = bool(result.stopped_early)
            returned = bytes_returned(result)
            del result
        out.append({"layers": layers, "deepest": deepest, "probe": probe.to_dict(), "stopped": stopped,
                    "bytes_returned": returned})
        release_memory()
    return {
        "kind": kind,
        "load_seconds": load_s,
        "seq_len": int(inputs["input_ids"].shape[1]),
        "texts": len(text_list),
        "layer_sets": out,
        "info": adapter.info(),
        "allocator_env": {k: os.environ.get(k) for k in ALLOCATOR_ENV},
        "warmup": "before each measured call: one truncated forward and one extraction of that layer set "
                  "(one-time allocations excluded), then gc + malloc_trim, then the VmHWM reset",
    }
