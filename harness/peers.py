"""Side by side with the tools people would pick instead: plain HF, TransformerLens, nnsight (issue 6).

Every tool reads the same blocks (the residual stream after each requested block) of the same weights on the
same texts:

- `bare_forward`: the plain forward on pre-tokenized inputs (`harness.overhead.full_forward`), the reference
  every ratio divides by.
- `neuronmap`: `adapter.extract_activations(texts, layers)`; no flag (its early exit is automatic).
- `hf_hidden_states`: `model(**inputs, output_hidden_states=True)` on NeuronMap's own loaded model.
- `transformer_lens`: `run_with_cache(ids, names_filter=[blocks.{i}.hook_out ...], attention_mask=...)` on a
  TransformerBridge built offline around its own copy of the HF weights (`build_bridge_from_module`, no weight
  folding, so values compare); `transformer_lens_stop_at_layer` adds `stop_at_layer=deepest + 1`. Older
  releases (beside transformers 4.x) are driven through what they offer instead (`TL_APIS`, `wrap_transformer_lens`).
- `nnsight`: `NNsight(model).trace(**inputs)` saving each block's output, on its own copy of the weights;
  `nnsight_stop` adds `tracer.stop()` after the deepest save.

Peers get their own copy because both wrap or patch the module they are given (TransformerLens replaces
submodules in place). Every tool call tokenizes inside (users pay it: `adapter.tokenize`, the same tokenizer
call for all), so the ratios compare like with like; the bare forward does not (it is the floor).

Timing (`side_by_side`) runs all calls in one `harness.timing.interleaved` run in this process. Memory and load
(`memory_child`) run in a fresh process per (model, tool group), under `harness.overhead.ALLOCATOR_ENV`: the
peak RSS of one load, then per workload the peak RSS added by ONE call of each tool and of the bare forward,
each repeated so the run's noise is known. Values are compared with HF `output_hidden_states` at real tokens
(attention mask 1); for models with a final norm, `hidden_states[L]` is after that norm, so the last block's
reference is a forward hook on it in a plain forward (inner blocks of both agree exactly).
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from adapters import compat
from adapters.capture import _first_tensor
from harness.overhead import deepest_block, forward_kwargs, full_forward, ratio_summary
from harness.timing import TimingStats, interleaved

__all__ = [
    "BARE",
    "GROUPS",
    "OURS",
    "PEERS",
    "PEER_MODELS",
    "TABLE_METRICS",
    "TOOLS",
    "Output",
    "load_peer",
    "lowest_verdict",
    "memory_child",
    "memory_records",
    "missing_peer",
    "overhead_verdict_rows",
    "plan",
    "pooled_memory_rows",
    "side_by_side",
    "side_by_side_rows",
    "timing_records",
    "tool_calls",
    "transformer_lens_api",
    "verdict_record",
    "wrap_transformer_lens",
]

BARE = "bare_forward"
TOKENIZE = "tokenize"
TOOLS = ("neuronmap", "hf_hidden_states", "transformer_lens", "transformer_lens_stop_at_layer", "nnsight",
         "nnsight_stop")
# tool -> the peer package it needs (import name, pip name); tools absent here need nothing beyond the project
PEERS = {"transformer_lens": ("transformer_lens", "transformer-lens"), "nnsight": ("nnsight", "nnsight")}
# one load (and one fresh process) per group: the stop rows use their peer's load
GROUPS = {"neuronmap": ("neuronmap",), "hf_hidden_states": ("hf_hidden_states",),
          "transformer_lens": ("transformer_lens", "transformer_lens_stop_at_layer"),
          "nnsight": ("nnsight", "nnsight_stop")}
PEER_MODELS = ("gpt2", "bert-base-uncased", "HuggingFaceTB/SmolLM2-135M-Instruct")  # the models issue 6 names
OURS = "neuronmap"
# how each TransformerLens line wraps an already-loaded HF model offline, newest first (see wrap_transformer_lens)
TL_APIS = TL_MODULE, TL_BOOT, TL_HOOKED = ("TransformerBridge via build_bridge_from_module",
                                          "TransformerBridge via boot_transformers(hf_model=...)", "HookedTransformer")


def group_of(tool: str) -> str:
    """The load group (and peer) a tool row belongs to: transformer_lens_stop_at_layer -> transformer_lens."""
    for group, tools in GROUPS.items():
        if tool in tools:
            return group
    raise ValueError(f"unknown tool {tool!r}; known: {', '.join(TOOLS)}")


def missing_peer(tool: str, find_spec: Callable[[str], Any] = importlib.util.find_spec) -> str | None:
    """Why `tool` cannot run here (its peer package is not installed), or None when it can."""
    peer = PEERS.get(group_of(tool))
    if peer is None:
        return None
    module, pip_name = peer
    try:
        found = find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    return None if found else (f"{pip_name} is not installed (pip install '.[peers]', see pyproject.toml): "
                               f"the {tool} row is not measured")


def plan(model: torch.nn.Module, mapping: Any, find_spec: Callable[[str], Any] = importlib.util.find_spec
         ) -> tuple[list[str], dict[str, str]]:
    """(tools that can run on this model here, {tool: why not} for the others)."""
    runnable, skipped = [], {}
    for tool in TOOLS:
        reason = missing_peer(tool, find_spec) or unsupported_reason(tool, model, mapping)
        if reason:
            skipped[tool] = reason
        else:
            runnable.append(tool)
    return runnable, skipped


def tl_architecture(model: torch.nn.Module) -> str | None:
    """The TransformerLens architecture name for an HF model (its class name) when TL has an adapter for it."""
    name = type(model).__name__
    if transformer_lens_api() != TL_HOOKED:
        from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

        return name if name in SUPPORTED_ARCHITECTURES else None
    from transformer_lens import loading_from_pretrained as loading

    # 2.x keeps no list: HookedTransformer takes the decoder-only classes its weight loader converts
    converted = re.findall(r'"(\w+(?:ForCausalLM|LMHeadModel))"', inspect.getsource(loading.get_pretrained_state_dict))
    return name if name in converted else None


def unsupported_reason(tool: str, model: torch.nn.Module, mapping: Any) -> str | None:
    """Why a peer cannot read this model's blocks (architecture unknown to it, encoder-decoder), or None."""
    if mapping.is_encoder_decoder:
        return "encoder-decoder models are outside this comparison (peers address one stack)"
    if group_of(tool) == "transformer_lens" and tl_architecture(model) is None:
        return f"TransformerLens has no architecture adapter for {type(model).__name__}"
    return None


# ------------------------------------------------------------------------------------------- loading


def checkpoint_of(adapter: Any) -> dict[str, Any]:
    """Where a peer finds the adapter's weights: folder, model class name, dtype (JSON-ready, for a child)."""
    model = adapter.model
    return {"location": str(adapter.source.location), "architecture": type(model).__name__,
            "dtype": str(model.dtype).replace("torch.", ""), "device": str(next(model.parameters()).device)}


def load_hf(checkpoint: Mapping[str, Any]) -> torch.nn.Module:
    """A fresh instance of the checkpoint's own class from its folder, in its dtype, in eval mode."""
    import transformers

    cls = getattr(transformers, checkpoint["architecture"])
    model = cls.from_pretrained(checkpoint["location"], **compat.dtype_kwargs(getattr(torch, checkpoint["dtype"])))
    return model.to(checkpoint.get("device") or "cpu").eval()


def transformer_lens_api() -> str:
    """Which of TL_APIS the installed TransformerLens offers, told by what it has rather than by its version:
    4.x `build_bridge_from_module`, 3.x only `TransformerBridge.boot_transformers`, 2.x no bridge at all."""
    try:
        from transformer_lens.model_bridge import sources
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("transformer_lens.model_bridge"):
            raise  # TL itself or one of its dependencies is missing: not a 2.x
        return TL_HOOKED
    return TL_MODULE if hasattr(sources, "build_bridge_from_module") else TL_BOOT


def wrap_transformer_lens(model: torch.nn.Module, location: str) -> Any:
    """TransformerLens around an already-loaded HF model, offline (the folder is read for config and tokenizer
    only) and without weight processing (no folding or centering), so its values compare with HF's."""
    api = transformer_lens_api()
    if api == TL_MODULE:
        from transformer_lens.model_bridge.sources import build_bridge_from_module

        # no process_weights / compatibility mode: weights are not folded, so values compare with HF
        return build_bridge_from_module(model, type(model).__name__, hf_config=model.config)
    device = str(next(model.parameters()).device)
    if api == TL_BOOT:  # with hf_model the config comes from the model; the folder is the tokenizer's
        from transformer_lens.model_bridge import TransformerBridge

        return TransformerBridge.boot_transformers(location, hf_model=model, device=device, dtype=model.dtype)
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoTokenizer

    # from_pretrained accepts hub names only, so its own two steps run on a config folder: a path is read
    # locally, and must not name a family ("llama" in a path selects a config that never reads the file)
    config = copy.deepcopy(model.config)
    if getattr(config, "n_positions", None) and "n_ctx" not in config.to_dict():
        config.n_ctx = config.n_positions  # hub GPT-2 configs carry n_ctx, which 2.x reads; GPT2Config has none
    with tempfile.TemporaryDirectory(prefix="tl-") as tmp:
        config.save_pretrained(f"{tmp}/config")
        cfg = loading.get_pretrained_model_config(f"{tmp}/config", hf_cfg=config.to_dict(), device=device,
                                                  dtype=model.dtype)
        state = loading.get_pretrained_state_dict(f"{tmp}/config", cfg, model, dtype=model.dtype)
    hooked = HookedTransformer(cfg, AutoTokenizer.from_pretrained(location), move_to_device=False,
                               default_padding_side="right")
    hooked.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                       fold_value_biases=False, refactor_factored_attn_matrices=False)
    return hooked


def tl_block_hook(peer: Any, layer: int) -> str:
    """The hook on the residual stream after block `layer`: a bridge's hook_out, HookedTransformer's resid_post."""
    return f"blocks.{layer}.hook_{'resid_post' if type(peer).__name__ == 'HookedTransformer' else 'out'}"


def load_peer(group: str, checkpoint: Mapping[str, Any]) -> Any:
    """The object a peer's user works with, built offline from the checkpoint folder (no hub), own copy."""
    model = load_hf(checkpoint)
    if group == "transformer_lens":
        return wrap_transformer_lens(model, str(checkpoint["location"]))
    if group == "nnsight":
        from nnsight import NNsight

        return NNsight(model)
    if group == "hf_hidden_states":
        return model
    raise ValueError(f"{group!r} is not a peer group")


# ------------------------------------------------------------------------------------------- the calls


@dataclass
class Output:
    """What one tool call gave: the requested blocks, and every tensor it hands back to its caller."""

    values: dict[int, torch.Tensor]
    returned: list[torch.Tensor] = field(default_factory=list)
    stopped_early: bool | None = None

    @property
    def bytes_returned(self) -> int:
        seen: dict[int, torch.Tensor] = {id(t): t for t in self.returned}
        return sum(t.numel() * t.element_size() for t in seen.values())


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a model output (dataclass-like, tuple, dict), nested."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if hasattr(obj, "to_tuple"):
        obj = obj.to_tuple()
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, tuple | list):
        return [t for item in obj for t in _tensors(item)]
    return []


def _envoy(root: Any, path: str) -> Any:
    """The nnsight envoy at a dotted module path ("transformer.h")."""
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def _nnsight_trace(envoy: Any, blocks_path: str, kwargs: dict[str, Any], layers: Sequence[int], stop: bool
                   ) -> dict[int, Any]:
    """nnsight's documented idiom; it re-reads this function's source, so it stays a plain loop."""
    blocks = _envoy(envoy, blocks_path)
    saved = {}
    with envoy.trace(**kwargs) as tracer:
        for i in layers:
            saved[i] = blocks[i].output.save()
        if stop:
            tracer.stop()
    return saved


def tool_calls(adapter: Any, texts: Sequence[str], layers: Sequence[int], peers: Mapping[str, Any],
               tools: Sequence[str], model: torch.nn.Module | None = None) -> dict[str, Callable[[], Output]]:
    """One zero-argument callable per tool; each tokenizes `texts` itself and reads `layers` (primary stack).

    `peers` maps a peer group to what `load_peer` built; `model` is the HF model the hf_hidden_states row runs
    (default: NeuronMap's own loaded model, the same weights the bare forward runs).
    """
    texts, layers = list(texts), [int(x) for x in layers]
    mapping = adapter.mapping
    stack = mapping.stacks[mapping.primary]
    deepest = deepest_block(adapter, layers)
    hf_model = adapter.model if model is None else model

    def neuronmap() -> Output:
        result = adapter.extract_activations(texts, layers)
        extra = [getattr(result, n) for n in ("attention_mask", "input_ids") if hasattr(result, n)]
        return Output({i: result[i] for i in layers}, [*result.values(), *extra], result.stopped_early)

    def hf_hidden_states() -> Output:
        kwargs = forward_kwargs(adapter, adapter.tokenize(texts))
        with torch.no_grad():
            out = hf_model(**kwargs, output_hidden_states=True)
        return Output({i: out.hidden_states[i + 1] for i in layers}, _tensors(out), False)

    def transformer_lens(stop: bool) -> Output:
        bridge = peers["transformer_lens"]
        inputs = adapter.tokenize(texts)
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids",)}
        if stop:
            extra["stop_at_layer"] = deepest + 1
        names = {i: tl_block_hook(bridge, i) for i in layers}
        with torch.no_grad():
            out, cache = bridge.run_with_cache(inputs["input_ids"], names_filter=list(names.values()), **extra)
        values = {i: cache[names[i]] for i in layers}
        # TransformerLens stops at the START of block `stop_at_layer`; at the last block it has nothing to stop at
        return Output(values, [*_tensors(out), *values.values()], stop and deepest + 1 < stack.num_layers)

    def nnsight(stop: bool) -> Output:
        kwargs = forward_kwargs(adapter, adapter.tokenize(texts))
        with torch.no_grad():
            saved = _nnsight_trace(peers["nnsight"], stack.path, kwargs, layers, stop)
        values = {i: _first_tensor(v) for i, v in saved.items()}
        return Output(values, list(values.values()), stop)

    builders: dict[str, Callable[[], Output]] = {
        "neuronmap": neuronmap,
        "hf_hidden_states": hf_hidden_states,
        "transformer_lens": lambda: transformer_lens(False),
        "transformer_lens_stop_at_layer": lambda: transformer_lens(True),
        "nnsight": lambda: nnsight(False),
        "nnsight_stop": lambda: nnsight(True),
    }
    return {tool: builders[tool] for tool in tools}


# ------------------------------------------------------------------------------------------- values


def reference(adapter: Any, inputs: Mapping[str, torch.Tensor], layers: Sequence[int]
              ) -> tuple[dict[int, torch.Tensor], list[int]]:
    """HF's values for `layers`: hidden_states[i + 1]; the last block read by a hook when hidden_states[L] is
    after a final norm. Also returns the layers whose HF hidden state IS the block output (what the
    hf_hidden_states row is compared on)."""
    model, stack = adapter.model, adapter.mapping.stacks[adapter.mapping.primary]
    last = stack.num_layers - 1
    seen: dict[str, torch.Tensor] = {}

    def keep(_m: Any, _a: Any, out: Any) -> None:  # returns None: a value returned would replace the output
        seen.setdefault("last", _first_tensor(out).detach().clone())

    handle = stack.modules[last].register_forward_hook(keep)
    try:
        with torch.no_grad():
            out = model(**forward_kwargs(adapter, inputs), output_hidden_states=True)
    finally:
        handle.remove()
    hidden = out.hidden_states
    values = {i: hidden[i + 1] for i in layers}
    same = [i for i in layers if i != last or torch.equal(hidden[last + 1], seen["last"])]
    if last in values:
        values[last] = seen["last"]
    return values, same


def max_abs_diff(values: Mapping[int, torch.Tensor], ref: Mapping[int, torch.Tensor], mask: torch.Tensor,
                 layers: Sequence[int]) -> float | None:
    """Largest |value - reference| over `layers` at real tokens (mask 1); None when no layer is compared."""
    keep = mask.to(torch.bool).cpu()
    diffs = [float((values[i].detach().cpu().float() - ref[i].cpu().float())[keep].abs().max()) for i in layers]
    return max(diffs) if diffs else None


# ------------------------------------------------------------------------------------------- timing


def side_by_side(
    adapter: Any,
    texts: Sequence[str],
    layers: Sequence[int],
    peers: Mapping[str, Any],
    tools: Sequence[str],
    rounds: int,
    warmup: int,
    *,
    timer: Callable[..., dict[str, TimingStats]] = interleaved,
) -> dict[str, Any]:
    """Time the bare forward and every tool in one interleaved run; per tool: the overhead ratio (median tool /
    median bare), per-round paired ratios, values against HF, bytes returned."""
    texts, layers = list(texts), [int(x) for x in layers]
    inputs = adapter.tokenize(texts)
    calls = tool_calls(adapter, texts, layers, peers, tools)
    ref, hf_layers = reference(adapter, inputs, layers)
    checks: dict[str, dict[str, Any]] = {}
    for tool, call in calls.items():  # untimed: what each call gives
        out = call()
        compared = hf_layers if tool == "hf_hidden_states" else layers
        checks[tool] = {"max_abs_diff": max_abs_diff(out.values, ref, inputs["attention_mask"], compared),
                        "compared_layers": compared, "bytes_returned": out.bytes_returned,
                        "stopped_early": out.stopped_early}
        del out
    fns: dict[str, Callable[[], Any]] = {BARE: lambda: full_forward(adapter, inputs),
                                         TOKENIZE: lambda: adapter.tokenize(texts), **calls}
    timings = timer(fns, rounds=rounds, warmup=warmup)
    bare = timings[BARE]
    rows = {tool: {**ratio_summary(timings[tool], bare), "median_s": timings[tool].median,
                   "iqr_s": timings[tool].iqr, **checks[tool]} for tool in calls}
    return {
        "texts": len(texts),
        "seq_len": int(inputs["input_ids"].shape[1]),
        "layers": layers,
        "rounds": rounds,
        "warmup": warmup,
        "order": list(fns),
        "timings": {name: s.to_dict() for name, s in timings.items()},
        "tools": rows,
        "definitions": {
            "overhead_ratio": "median(tool call) / median(bare forward) of one interleaved run (round-robin, "
                              "order rotated each round); stats = the per-round paired ratios",
            "bare_forward": "model(**inputs) under torch.no_grad(), use_cache=False where the config has it, "
                            "inputs tokenized outside the timed region",
            "tool call": "tokenization (adapter.tokenize, the same for every tool) + the tool's own call",
            "max_abs_diff": "max |tool - HF output_hidden_states| at real tokens over the compared layers; the "
                            "last block of a model with a final norm is compared with a hook on that block",
        },
    }


# ------------------------------------------------------------------------------------------- verdicts


def lowest_verdict(rows: Mapping[str, Mapping[str, float]], ours: str = OURS) -> dict[str, Any]:
    """Is `ours` lowest? rows: tool -> {"value", "lo", "hi"} (lo/hi: the run's noise band, e.g. the IQR).

    A tie within noise counts as lowest: ours' `lo` <= the best other's `hi` (the bands overlap).
    """
    if ours not in rows:
        raise ValueError(f"no {ours} row")
    others = {t: r for t, r in rows.items() if t != ours and r.get("value") is not None}
    mine = rows[ours]
    if not others:
        return {"lowest": None, "reason": "no other tool was measured", "ours": dict(mine)}
    best_tool = min(others, key=lambda t: others[t]["value"])
    best = others[best_tool]
    strictly = mine["value"] <= best["value"]
    tie = not strictly and mine["lo"] <= best["hi"]
    return {"lowest": strictly or tie, "strictly_lowest": strictly, "tie_within_noise": tie,
            "best_other": best_tool, "best_other_value": best["value"], "ours": dict(mine),
            "others": {t: dict(r) for t, r in others.items()},
            "rule": "lowest when ours <= every other tool's value, or ours' noise band (lo..hi) reaches the best "
                    "other's band (lo <= best hi): a tie within the run's noise"}


# ------------------------------------------------------------------------------------------- memory


def memory_child(model: str, group: str, checkpoint: dict[str, Any], workloads: list[dict[str, Any]],
                 repeats: int = 2, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """In a fresh process: load time and load peak of one tool group, then per workload the peak RSS added by
    ONE call of the bare forward and of each tool of the group (each `repeats` times, round-robin).

    `workloads`: [{"name", "texts": [...], "layers": [...]}]. The group's load is measured first (for a peer:
    `from_pretrained` of the checkpoint folder + its wrapper; its import is timed apart, not counted); then the
    NeuronMap adapter (tokenizer, layout, bare forward) is loaded beside it for the other groups.
    """
    import importlib

    from transformers import AutoTokenizer

    from adapters import MultiModelAnalyzer
    from adapters.memory import release_memory
    from harness.memory import PeakProbe

    options = dict(options or {})
    tokenizer = None
    t0 = time.perf_counter()
    importlib.import_module(PEERS[group][0] if group in PEERS else "transformers")
    import_s = time.perf_counter() - t0
    analyzer = MultiModelAnalyzer()
    release_memory()
    with PeakProbe() as probe:
        t0 = time.perf_counter()
        if group == OURS:
            loaded = analyzer.load_model(model, **options)
        else:  # a peer's user needs the tokenizer too (NeuronMap's load includes it)
            loaded = load_peer(group, checkpoint)
            tokenizer = AutoTokenizer.from_pretrained(checkpoint["location"])
        load_s = time.perf_counter() - t0
    adapter = loaded if group == OURS else analyzer.load_model(model, **options)
    peers = {} if group == OURS else {group: loaded}
    hf_model = loaded if group == "hf_hidden_states" else None
    results = []
    for w in workloads:
        inputs = adapter.tokenize(w["texts"])
        calls = tool_calls(adapter, w["texts"], w["layers"], peers, GROUPS[group], model=hf_model)
        fns: dict[str, Callable[[], Any]] = {BARE: lambda inputs=inputs: full_forward(adapter, inputs), **calls}
        returned = {}
        for name, fn in fns.items():  # warm-up: one-time allocations are not the call's
            res = fn()
            if isinstance(res, Output):
                returned[name] = res.bytes_returned
            del res
        peaks: dict[str, list[int]] = {name: [] for name in fns}
        method = None
        for _ in range(repeats):
            for name, fn in fns.items():
                release_memory()
                with PeakProbe() as p:
                    res = fn()
                del res
                peaks[name].append(int(p.delta_bytes or 0))
                method = p.method
        results.append({"name": w["name"], "peaks": peaks, "bytes_returned": returned, "method": method})
        release_memory()
    del tokenizer
    return {"group": group, "load_seconds": load_s, "load_probe": probe.to_dict(), "import_seconds": import_s,
            "workloads": results, "info": adapter.info()}


# ------------------------------------------------------------------------------------------- records

GB = 1e9
OVERHEAD_RULE = "noise band = IQR of the per-round paired ratios (tool / bare forward) of the one interleaved run"
MEMORY_RULE = ("noise band = the spread of the repeated probes: lo = min(tool) - max(bare), hi = max(tool) - "
               "min(bare), the bare forward's probes pooled over every tool's process (the same call everywhere)")


def workload_of(name: str, texts: int, seq_len: int, layers: Sequence[int], tool: str) -> dict[str, Any]:
    """A record's workload: the workload's usual keys plus `tool`, which tells the rows of one comparison apart."""
    return {"name": name, "texts": texts, "tokens_per_text": seq_len, "layers": list(layers), "tool": tool}


def timing_records(name: str, out: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per tool of one `side_by_side` run: `overhead_ratio` and `max_abs_diff` (kwargs for a record)."""
    recs = []
    bare = out["timings"][BARE]
    for tool, row in out["tools"].items():
        w = workload_of(name, out["texts"], out["seq_len"], out["layers"], tool)
        extra = {"ratio_of_mins": row["ratio_of_mins"], "median_s": row["median_s"], "iqr_s": row["iqr_s"],
                 "bare_forward_median_s": bare["median"], "tokenize_median_s": out["timings"][TOKENIZE]["median"],
                 "stopped_early": row["stopped_early"], "bytes_returned": row["bytes_returned"],
                 "max_abs_diff": row["max_abs_diff"], "compared_layers": row["compared_layers"],
                 "interleaving": f"{out['rounds']} rounds after {out['warmup']} warm-up round(s), order rotated "
                                 "each round: " + ", ".join(out["order"]),
                 "definitions": out["definitions"]}
        recs.append({"metric": "overhead_ratio", "value": row["ratio"], "unit": "ratio", "workload": w,
                     "stats": row["paired"], "extra": extra})
        recs.append({"metric": "max_abs_diff", "value": row["max_abs_diff"], "unit": "abs", "workload": w,
                     "extra": {"compared_layers": row["compared_layers"],
                               "definition": out["definitions"]["max_abs_diff"]}})
    return recs


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return float(s[n // 2]) if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def memory_rows(child: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """workload -> tool -> extra peak over the bare forward (bytes): value (medians), lo/hi (noise band)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for w in child["workloads"]:
        bare = w["peaks"][BARE]
        for tool, peaks in w["peaks"].items():
            if tool == BARE:
                continue
            out.setdefault(w["name"], {})[tool] = {
                "value": _median(peaks) - _median(bare), "lo": min(peaks) - max(bare), "hi": max(peaks) - min(bare),
                "tool_peaks": list(peaks), "bare_peaks": list(bare), "bytes_returned": w["bytes_returned"].get(tool),
                "method": w["method"]}
    return out


def pooled_memory_rows(children: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """memory_rows of several children (one per tool group), with each noise band widened by the bare forward's
    spread over ALL children: the bare forward is the same call in every process, so its spread across processes
    (measured: ~1-2 MB at 8x128) is noise of the reference each extra is taken against."""
    per = [memory_rows(c) for c in children]
    bare: dict[str, list[int]] = {}
    for child in children:
        for w in child["workloads"]:
            bare.setdefault(w["name"], []).extend(w["peaks"][BARE])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for rows in per:
        for name, tools in rows.items():
            for tool, row in tools.items():
                out.setdefault(name, {})[tool] = {**row, "lo": min(row["tool_peaks"]) - max(bare[name]),
                                                  "hi": max(row["tool_peaks"]) - min(bare[name])}
    return out


def memory_records(child: Mapping[str, Any], shapes: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`extra_peak_memory` per (workload, tool) and `load_time` / `load_peak_memory` for the child's group.

    `shapes`: workload name -> {"texts", "seq_len", "layers"} (as the timing run saw them)."""
    recs = []
    group = child["group"]
    for name, tools in memory_rows(child).items():
        shape = shapes[name]
        for tool, row in tools.items():
            returned = row["bytes_returned"]
            recs.append({
                "metric": "extra_peak_memory", "value": row["value"] / GB, "unit": "GB",
                "workload": workload_of(name, shape["texts"], shape["seq_len"], shape["layers"], tool),
                "stats": {"lo": row["lo"] / GB, "hi": row["hi"] / GB, "rounds": len(row["tool_peaks"])},
                "extra": {**row, "extra_bytes": row["value"],
                          "extra_per_byte_returned": row["value"] / returned if returned else None,
                          "definition": "median peak RSS added by ONE tool call minus median peak RSS added by ONE "
                                        "bare forward, same workload, same fresh process (fixed glibc mmap "
                                        "threshold); negative = less than the bare forward (early exit)",
                          "noise": MEMORY_RULE}})
    load = child["load_probe"]
    w = {"name": "load", "tool": group}
    common = {"import_seconds": child["import_seconds"], "load_probe": load,
              "definition": "NeuronMap: analyzer.load_model; peers: from_pretrained of the same checkpoint folder "
                            "+ the peer's wrapper + AutoTokenizer.from_pretrained;"
                            " the peer's import is timed apart (import_seconds). "
                            "transformers memory-maps safetensors, so the peak counts the weights read so far"}
    recs.append({"metric": "load_time", "value": child["load_seconds"], "unit": "s", "workload": w, "extra": common})
    recs.append({"metric": "load_peak_memory", "value": (load.get("delta_bytes") or 0) / GB, "unit": "GB",
                 "workload": w, "extra": common})
    return recs


def verdict_record(metric: str, name: str, rows: Mapping[str, Mapping[str, float]], missing: Mapping[str, str],
                   rule: str) -> dict[str, Any]:
    """`neuronmap_lowest_overhead` / `neuronmap_lowest_extra_memory` (bool) for one (model, workload).

    Not measured (value None) when a peer row could not be measured: the claim is about every peer."""
    verdict = lowest_verdict(rows)
    value = None if missing or verdict["lowest"] is None else float(verdict["lowest"])
    return {"metric": metric, "value": value, "unit": "bool", "workload": {"name": name, "tool": OURS},
            "extra": {**verdict, "missing": dict(missing), "noise": rule}}


def overhead_verdict_rows(out: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """tool -> {"value": overhead ratio, "lo"/"hi": q1/q3 of the per-round paired ratios}."""
    return {t: {"value": r["ratio"], "lo": r["paired"]["q1"], "hi": r["paired"]["q3"]} for t, r in out["tools"].items()}


# ------------------------------------------------------------------------------------------- the table

TABLE_METRICS = ("overhead_ratio", "extra_peak_memory", "max_abs_diff", "load_time", "load_peak_memory")


def side_by_side_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, workload, tool) from the `peers` suite's records, in model / workload / TOOLS order.

    Load figures belong to a tool group (the stop rows share their peer's load). Missing figures are None;
    `note` carries why a row was not measured."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    loads: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        w = r.get("workload") or {}
        tool, model, metric = w.get("tool"), r.get("model"), r.get("metric")
        if r.get("suite") != "peers" or tool not in TOOLS or metric not in TABLE_METRICS:
            continue
        if metric in ("load_time", "load_peak_memory"):
            loads.setdefault((model, tool), {})[metric] = r.get("value")
            continue
        row = rows.setdefault((model, w.get("name"), tool), {
            "model": model, "workload": w.get("name"), "tool": tool, "note": None, "q1": None, "q3": None,
            "texts": w.get("texts"), "tokens_per_text": w.get("tokens_per_text"), "stopped_early": None,
            "bytes_returned": None, **dict.fromkeys(TABLE_METRICS)})
        stats = r.get("stats") or {}
        extra = r.get("extra") or {}
        if metric == "overhead_ratio":
            row.update(overhead_ratio=r.get("value"), q1=stats.get("q1"), q3=stats.get("q3"),
                       stopped_early=extra.get("stopped_early"))
        elif metric == "extra_peak_memory":
            row.update(extra_peak_memory=r.get("value"), bytes_returned=extra.get("bytes_returned"))
        else:
            row[metric] = r.get("value")
        if r.get("value") is None and extra.get("reason"):
            row["note"] = extra["reason"]
    for (model, _name, tool), row in rows.items():
        load = loads.get((model, group_of(tool)), {})
        row.update(load_time=load.get("load_time"), load_peak_memory=load.get("load_peak_memory"))
    order = {t: i for i, t in enumerate(TOOLS)}
    workloads = {"seed": 0, "batch8x128": 1}
    return sorted(rows.values(), key=lambda x: (str(x["model"]), workloads.get(x["workload"], 9), str(x["workload"]),
                                                order[x["tool"]]))
