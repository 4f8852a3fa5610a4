"""UniversalModelAdapter: load, extract, attention, unload — written once for every family.

Family adapters (gpt.py, bert.py, t5.py, llama.py, domain.py) override only what differs.

What a layer's output means: integer layer k (or "k") is the residual stream leaving block k, exactly as
the block returns it. For every block but the last this equals transformers' `hidden_states[k + 1]`; for
the last block transformers substitutes the output of the final norm, NeuronMap does not (ask for
"final_norm" semantics by applying `model_final_norm` yourself, or compare with `hidden_states[-1]`).
Components "k.attention", "k.mlp", "decoder.k.cross_attention" are the outputs of those sublayer modules
as the model defines them (for post-norm models such as BERT they include the residual and the norm).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from . import checkpoint_checks as checks
from . import compat, memory
from .capture import MissingCaptureError, Request, capture
from .errors import (
    InvalidInputError,
    InvalidLayerError,
    ModelNotLoadedError,
    ModelSourceError,
    NeuronMapError,
    OutOfMemoryError,
    UnsafeWeightsError,
)
from .families import ModelFamily
from .layout import LayerMapping, discover_layout, position_limit
from .registry import ModelConfig, UniversalModelRegistry, facts_from_hf_config, read_config
from .sources import ModelSource, resolve_source


class ActivationResult(dict):
    """One entry per requested layer, in request order, each a CPU tensor [batch, seq, hidden].

    Alongside: `attention_mask` and `input_ids` ([batch, seq], CPU) — padded positions hold values that
    mean nothing; `stopped_early` says whether the forward stopped after the deepest requested layer.
    """

    attention_mask: torch.Tensor
    input_ids: torch.Tensor
    stopped_early: bool


class UniversalModelAdapter:
    """One loaded model of any family, behind one API."""

    family: ClassVar[ModelFamily | None] = None
    default_auto_class: ClassVar[str] = "AutoModel"

    def __init__(self, config: ModelConfig | None = None, registry: UniversalModelRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or UniversalModelRegistry()
        self.model: nn.Module | None = None
        self._max_positions: int | None = None  # set by load_model, read on every tokenize
        self._input_names: frozenset[str] = frozenset()  # what the forward is given (compat.forward_input_names)
        self.tokenizer: Any = None
        self.mapping: LayerMapping | None = None
        self.source: ModelSource | None = None
        self.device: str = "cpu"
        self.dtype: torch.dtype | None = None
        self.load_seconds: float | None = None
        self.plan: memory.DevicePlan | None = None  # the device map planned at load time, if any
        self.last_unload: dict[str, Any] = {}  # what the last unload() gave back (CUDA figures, weakref)
        self._offload_dir: Path | None = None
        self._cuda_baseline: dict[int, int] | None = None

    # ---- loading -------------------------------------------------------------------------------
    def load_model(
        self,
        model_name: str | None = None,
        device: str | dict | None = None,
        dtype: str | torch.dtype | None = None,
        *,
        max_memory: dict | None = None,
        ram_cap: int | str | None = None,
        offload_folder: str | Path | None = None,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
        source: str | None = None,
        depth: int | None = None,
    ) -> nn.Module:
        """Load a registered name, hub id or local folder; safetensors only unless allow_pickle=True.

        device: "cpu" (default), "cuda[:N]", "auto" (a device map planned on the meta device before any
        weights are read: GPUs first, then CPU, then disk) or an explicit accelerate device map.
        max_memory: weights per device for "auto" ({0: "20GB", 1: "20GB", "cpu": "8GB"}; several GPUs
        shard the blocks). ram_cap: a ceiling for this process's RSS; the CPU gets only the weights that
        fit under it and the rest is offloaded to disk. Without either on a CPU-only machine, "auto" caps
        the weights at memory.AUTO_RAM_FRACTION of the RAM available now. offload_folder: where weights
        that must be rewritten for disk offload go (safetensors checkpoints are read in place); default a
        temporary folder under the cache, removed by unload().
        """
        name = model_name or (self.config.name if self.config else None)
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"model name must be a non-empty string, got {name!r}")
        main_device, device_spec = memory.resolve_device(device)
        if device_spec is None and (max_memory is not None or ram_cap is not None or offload_folder is not None):
            raise InvalidInputError("max_memory, ram_cap and offload_folder need device='auto' or a device map "
                                    f"(device={device!r} puts the whole model on one device)")
        if isinstance(device_spec, dict) and (max_memory is not None or ram_cap is not None):
            raise InvalidInputError("max_memory and ram_cap plan a device map; an explicit device map is used "
                                    "as given, so pass one or the other")
        cap = memory.parse_bytes(ram_cap) if ram_cap is not None else None
        torch_dtype = memory.parse_dtype(dtype, main_device)
        cuda_baseline = memory.cuda_allocated()
        src = resolve_source(name, self.registry, source=source, depth=depth)
        if src.origin == "local":
            checks.refuse_pickle_only(Path(src.location), allow_pickle)
        kwargs: dict[str, Any] = {**compat.dtype_kwargs(torch_dtype), "trust_remote_code": trust_remote_code}
        if not allow_pickle:
            kwargs["use_safetensors"] = True
        start = time.perf_counter()
        hf_config = self._load_config(src, trust_remote_code)
        tokenizer = self._load_tokenizer(src, hf_config, trust_remote_code)  # before any weight is read
        cls = self._model_class(hf_config)
        plan: memory.DevicePlan | None = None
        created_offload: Path | None = None
        cast_to: torch.dtype | None = None
        if device_spec is not None:
            plan_dtype = torch_dtype if isinstance(torch_dtype, torch.dtype) else _checkpoint_dtype(hf_config)
            if device_spec == "auto":
                plan = memory.plan_device_map(hf_config, cls, plan_dtype, max_memory, ram_cap_bytes=cap)
            else:
                plan = memory.describe_plan(hf_config, cls, plan_dtype, device_spec)
            main_device = memory.main_device_of(plan.device_map)
            kwargs["device_map"] = plan.device_map
            stored = _checkpoint_dtype(hf_config)
            if plan.offloads_to_disk and isinstance(torch_dtype, torch.dtype) and _declares_dtype(hf_config) \
                    and stored != torch_dtype:
                kwargs.update(compat.dtype_kwargs(stored))  # see memory.cast_dispatched: cast after loading
                cast_to = torch_dtype
            if plan.offloads_to_disk:
                if offload_folder is None:
                    created_offload = _new_offload_folder(name)
                    offload_folder = created_offload
                kwargs["offload_folder"] = str(offload_folder)
        try:
            model = cls.from_pretrained(src.location, config=hf_config, **kwargs)
        except NeuronMapError:
            _remove_folder(created_offload)
            raise
        except Exception as exc:  # safetensors, torch and accelerate raise their own types
            _remove_folder(created_offload)
            if memory.is_out_of_memory(exc):
                raise OutOfMemoryError(f"{name} does not fit: {str(exc)[:300]}; try device='auto' with "
                                       "max_memory/ram_cap (disk offload) or a smaller dtype") from exc
            text = str(exc)
            if not allow_pickle and "safetensors" in text.lower():
                raise UnsafeWeightsError(
                    f"{name}: no safetensors weights found; pickled weights are refused unless "
                    f"allow_pickle=True ({text.splitlines()[0][:200]})"
                ) from exc
            if checks.is_shape_error(text):  # each release words it differently (5.x only in its log)
                detail = checks.first_mismatch(Path(src.location), hf_config, cls) or checks.shape_detail(text)
                raise ModelSourceError(f"cannot load {name!r} from {src.location}: weights and config have "
                                       f"mismatched shapes ({detail})") from exc
            raise ModelSourceError(f"cannot load {name!r} from {src.location}: {text[:500]}") from exc
        if device_spec is None and main_device != "cpu":
            model = model.to(main_device)
        if plan is not None and plan.offloads_to_disk:
            compat.alias_tied_offloaded_weights(model)
        if cast_to is not None:
            memory.cast_dispatched(model, cast_to)
        model.eval()
        self.tokenizer = tokenizer
        self.load_seconds = time.perf_counter() - start
        self.model, self.source, self.device = model, src, main_device
        self.plan, self._offload_dir, self._cuda_baseline = plan, created_offload, cuda_baseline
        self.dtype = next(model.parameters()).dtype
        self.mapping = discover_layout(model)
        self._input_names = compat.forward_input_names(model)
        self._max_positions = position_limit(model, facts_from_hf_config(hf_config)["max_positions"])
        self.config = self._config_for(name, hf_config, depth)
        return model

    def estimate_bytes(self, model_name: str, device: str | dict | None = None,
                       dtype: str | torch.dtype | None = None, *, source: str | None = None,
                       depth: int | None = None, trust_remote_code: bool = False) -> int:
        """Bytes the weights will take once loaded, from the config on the meta device (none are read).

        The model cache uses it to make room before a load; a disk-offloaded load takes less than this.
        """
        main_device, _ = memory.resolve_device(device)
        torch_dtype = memory.parse_dtype(dtype, main_device)
        src = resolve_source(model_name, self.registry, source=source, depth=depth)
        hf_config = self._load_config(src, trust_remote_code)
        cls = self._model_class(hf_config)
        plan_dtype = torch_dtype if isinstance(torch_dtype, torch.dtype) else _checkpoint_dtype(hf_config)
        return memory.model_bytes(hf_config, cls, plan_dtype)

    def _config_for(self, name: str, hf_config: Any, depth: int | None) -> ModelConfig:
        """Registered facts for a registered name at full depth; otherwise facts read from the checkpoint."""
        canonical = self.registry.canonical_name(name)
        if canonical is not None and depth is None:
            return self.registry.get_model_config(canonical)
        found = self.registry.config_from_checkpoint(hf_config, name=name)
        if canonical is not None:  # keep the registered family (domain models look like their architecture)
            found = dataclasses.replace(found, family=self.registry.get_model_config(canonical).family)
        return found

    def _load_config(self, src: ModelSource, trust_remote_code: bool) -> Any:
        from transformers import AutoConfig

        if src.origin in ("local", "zoo"):
            return read_config(Path(src.location), trust_remote_code)
        try:
            return AutoConfig.from_pretrained(src.location, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ModelSourceError(f"invalid or unreadable config for {src.name!r} at {src.location}: "
                                   f"{str(exc)[:300]}") from exc

    def _model_class(self, hf_config: Any) -> Any:
        """The checkpoint's own class (its `architectures`), else the family's Auto class."""
        import transformers

        for arch in getattr(hf_config, "architectures", None) or ():
            cls = getattr(transformers, arch, None)
            if cls is not None:
                return cls
        return getattr(transformers, self.default_auto_class)

    def _load_tokenizer(self, src: ModelSource, hf_config: Any, trust_remote_code: bool) -> Any:
        if src.origin in ("local", "zoo") and not checks.has_tokenizer_files(Path(src.location)):
            # 4.x raises its own OSError here, 5.x builds an empty tokenizer: one message on every release
            raise ModelSourceError(f"no tokenizer files for {src.name!r} at {src.location}: save the tokenizer "
                                   "beside the weights (tokenizer.json or its vocabulary files)")
        try:
            tok = compat.load_tokenizer(src.location, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ModelSourceError(f"no usable tokenizer for {src.name!r} at {src.location}: "
                                   f"{str(exc)[:300]}") from exc
        if len(tok) <= len(tok.all_special_tokens):  # transformers builds an empty one from config alone
            raise ModelSourceError(f"no tokenizer files for {src.name!r} at {src.location}: the tokenizer built "
                                   f"there has {len(tok)} token(s), all special; save the tokenizer beside the "
                                   "weights (tokenizer.json or its vocabulary files)")
        tok.padding_side = "right"  # right padding keeps each text's positions as they are alone
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token or tok.unk_token
        return tok

    # ---- inputs --------------------------------------------------------------------------------
    def _require_loaded(self) -> tuple[nn.Module, LayerMapping]:
        if self.model is None or self.mapping is None:
            raise ModelNotLoadedError("no model is loaded in this adapter; call load_model first")
        return self.model, self.mapping

    def max_positions(self) -> int | None:
        """Tokens one text may have: the config's limit, less rows a position table reserves (RoBERTa)."""
        return self._max_positions if self.model is not None else None

    def tokenize(self, texts: Sequence[str] | str) -> dict[str, torch.Tensor]:
        """Right-padded batch of what the forward takes; over-long texts are truncated with a warning.

        The model decides the keys (compat.forward_input_names), not the tokenizer: tokenizers of one release
        emit token_type_ids where another's do not, and the same checkpoint must give the same activations.
        `attention_mask` is always there (it says which positions are padding); `model_inputs` drops it for a
        forward that takes none (FNet).
        """
        texts = validate_texts(texts)
        limit = self.max_positions()
        enc = self.tokenizer(list(texts), padding=True, return_tensors="pt", truncation=False)
        lengths = enc["attention_mask"].sum(dim=1)
        if bool((lengths == 0).any()):
            i = int((lengths == 0).nonzero()[0])
            raise InvalidInputError(f"texts[{i}] ({texts[i]!r}) tokenizes to zero tokens for this model")
        if limit is not None and enc["input_ids"].shape[1] > limit:
            warnings.warn(
                f"input of {enc['input_ids'].shape[1]} tokens exceeds the model's {limit} positions; "
                f"truncated to {limit}", stacklevel=3,
            )
            enc = self.tokenizer(list(texts), padding=True, return_tensors="pt", truncation=True,
                                 max_length=limit)
        keep = self._input_names | {"attention_mask"}
        return {k: v.to(self.device) for k, v in compat.select_inputs(enc, keep).items()}

    def model_inputs(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The part of `tokenize`'s output that the model's forward takes (what every call passes it)."""
        return compat.select_inputs(inputs, self._input_names)

    def parse_layers(self, layers: Sequence[int | str] | int | str, what: str) -> list[Request]:
        """Requests for layer specs (ints address the primary stack; negative count from the end)."""
        _, mapping = self._require_loaded()
        if isinstance(layers, int | str) and not isinstance(layers, bool):
            layers = [layers]
        if not isinstance(layers, Sequence) or isinstance(layers, bytes) or len(layers) == 0:
            raise InvalidLayerError(f"layers must be a non-empty list of ints or names, got {layers!r}")
        requests = []
        seen: set = set()
        for layer in layers:
            key = layer if isinstance(layer, int | str) and not isinstance(layer, bool) else repr(layer)
            if key in seen:
                raise InvalidLayerError(f"layer {layer!r} is requested twice; the result has one entry per layer")
            seen.add(key)
            stack, index, component = mapping.parse(layer)
            if what == "attn_weights":
                kind = "cross_attn_weights" if component == "cross_attention" else "attn_weights"
                if component == "mlp":
                    raise InvalidLayerError(f"layer {layer!r}: attention patterns exist for blocks and "
                                            "cross-attention, not for MLP outputs")
            else:
                kind = component or "block"
            requests.append(Request(layer, stack, index, kind))
        return requests

    # ---- extraction ----------------------------------------------------------------------------
    def _stack_order(self) -> tuple[str, ...]:
        return tuple(self._require_loaded()[1].stacks)

    def _forward_fn(self, inputs: dict[str, torch.Tensor], requests: list[Request], **flags: Any) -> Any:
        """What to run: the whole model for decoder-only/encoder-only; see T5ModelAdapter for the rest."""
        model, _ = self._require_loaded()
        kwargs = {**self.model_inputs(inputs), **flags, **compat.no_cache_kwargs(model)}
        return lambda: model(**kwargs)

    def _run(self, texts: Sequence[str] | str, requests: list[Request], **flags: Any) -> ActivationResult:
        model, mapping = self._require_loaded()
        inputs = self.tokenize(texts)
        captured = capture(model, mapping, requests, self._forward_fn(inputs, requests, **flags),
                           stack_order=self._stack_order())
        out = ActivationResult((r.key, captured.values[r.key].to("cpu")) for r in requests)
        out.attention_mask = inputs["attention_mask"].to("cpu")
        out.input_ids = inputs["input_ids"].to("cpu")
        out.stopped_early = captured.stopped_early
        return out

    def extract_activations(self, texts: Sequence[str] | str, layers: Sequence[int | str] | int | str
                            ) -> ActivationResult:
        """Residual stream after each requested block (or a named component), [batch, seq, hidden]."""
        return self._run(texts, self.parse_layers(layers, "block"))

    def get_attention_patterns(self, texts: Sequence[str] | str, layers: Sequence[int | str] | int | str
                               ) -> ActivationResult:
        """Attention weights [batch, heads, query, key] per requested layer (eager attention for this call)."""
        model, _ = self._require_loaded()
        requests = self.parse_layers(layers, "attn_weights")
        with compat.attention_implementation(model, "eager") as eager:
            if not eager:  # attention classes fixed at init return weights only when asked
                return self._run(texts, requests, output_attentions=True)
            try:
                return self._run(texts, requests)
            except MissingCaptureError:
                # older-style attention modules return weights only when asked: ask, for this call only
                return self._run(texts, requests, output_attentions=True)

    # ---- memory and info -------------------------------------------------------------------------
    def optimize_memory(self, gradient_checkpointing: bool = True) -> dict[str, Any]:
        """Inference settings: eval mode, no autograd state; gradient checkpointing for training steps.

        Gradient checkpointing changes nothing in a no-grad forward (transformers applies it only in
        training mode); it saves memory only when gradients are computed. Both are measured by
        suites/test_memory_management.py. Returns what was applied.
        """
        model, _ = self._require_loaded()
        model.eval()
        applied = {"eval": True, "requires_grad": False, "gradient_checkpointing": False}
        for p in model.parameters():
            p.requires_grad_(False)
        if gradient_checkpointing and getattr(model, "supports_gradient_checkpointing", False):
            enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            enable()
            applied["gradient_checkpointing"] = True
        return applied

    # ---- batch sizing ----------------------------------------------------------------------------
    def weights_bytes(self) -> int:
        """Bytes of weights resident on the main device (disk-offloaded ones are not)."""
        model, _ = self._require_loaded()
        per = memory.resident_bytes(model)
        return per.get(self.device, 0) if self.device != "cpu" else per.get("cpu", 0)

    def suggest_batch_size(self, budget_bytes: int | str, seq_len: int, layers: Sequence[int | str] | None = None
                           ) -> int:
        """Largest batch of `seq_len`-token texts whose estimated peak fits `budget_bytes` on the main device.

        The estimate is weights + a fixed slack + batch x per-text working set, from the config (see
        memory.activation_bytes_per_sample); it is checked by measurement in `fit_batch_size`.
        Raises OutOfMemoryError when not even one text fits.
        """
        model, _ = self._require_loaded()
        budget = memory.parse_bytes(budget_bytes)
        if not isinstance(seq_len, int) or isinstance(seq_len, bool) or seq_len < 1:
            raise InvalidInputError(f"seq_len must be a positive int, got {seq_len!r}")
        limit = self.max_positions()
        if limit is not None and seq_len > limit:
            raise InvalidInputError(f"seq_len {seq_len} exceeds the model's {limit} positions")
        captured = len(layers) if layers is not None else 1
        per_sample = memory.activation_bytes_per_sample(facts_from_hf_config(model.config), seq_len,
                                                        self.dtype or torch.float32, captured)
        return memory.largest_batch(budget, self.weights_bytes(), per_sample)

    def fit_batch_size(self, budget_bytes: int | str, seq_len: int, layers: Sequence[int | str] | None = None,
                       max_tries: int = 6) -> dict[str, Any]:
        """The suggested batch, confirmed by measuring one extraction at that size; backs off when it does
        not fit (measured peak over budget, or an out-of-memory error) until one does.

        Returns {"batch_size", "estimate_bytes", "measured_bytes", "budget_bytes", "tries": [...]}.
        """
        model, mapping = self._require_loaded()
        budget = memory.parse_bytes(budget_bytes)
        layers = list(layers) if layers is not None else [mapping.num_layers - 1]
        batch = self.suggest_batch_size(budget, seq_len, layers)
        weights = self.weights_bytes()
        per_sample = memory.activation_bytes_per_sample(facts_from_hf_config(model.config), seq_len,
                                                        self.dtype or torch.float32, len(layers))
        text = self._text_of_tokens(seq_len)
        tries: list[dict[str, Any]] = []
        for _ in range(max_tries):
            estimate = weights + memory.FORWARD_FIXED_BYTES + batch * per_sample
            memory.release_memory()  # freed memory kept by the allocator would hide part of the peak
            try:
                _, added = memory.measure_peak(lambda b=batch: self.extract_activations([text] * b, layers),
                                               self.device)
            except Exception as exc:
                if not memory.is_out_of_memory(exc):
                    raise
                tries.append({"batch_size": batch, "estimate_bytes": estimate, "out_of_memory": str(exc)[:200]})
                memory.release_memory()
                if batch == 1:
                    raise OutOfMemoryError(f"one text of {seq_len} tokens does not fit: {exc}") from exc
                batch //= 2
                continue
            measured = weights + (added or 0)
            tries.append({"batch_size": batch, "estimate_bytes": estimate, "measured_bytes": measured})
            if measured <= budget:
                return {"batch_size": batch, "estimate_bytes": estimate, "measured_bytes": measured,
                        "budget_bytes": budget, "weights_bytes": weights, "per_sample_estimate_bytes": per_sample,
                        "tries": tries}
            if batch == 1:
                break
            per_measured = max(1, (added or 0) // batch)
            batch = max(1, min(batch - 1, (budget - weights) // per_measured))
        raise OutOfMemoryError(f"no batch of {seq_len}-token texts fits {budget / 1e9:.3f} GB "
                               f"(tries: {tries})")

    def _text_of_tokens(self, seq_len: int) -> str:
        """A text the tokenizer turns into exactly (or, where words merge, at most) `seq_len` tokens."""
        lo, hi = 1, seq_len
        count = lambda k: len(self.tokenizer(" ".join(["the"] * k))["input_ids"])  # noqa: E731
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(mid) <= seq_len:
                lo = mid
            else:
                hi = mid - 1
        return " ".join(["the"] * lo)

    def get_model_info(self) -> ModelConfig:
        if self.config is None:
            raise ModelNotLoadedError("no model is loaded or configured in this adapter")
        return self.config

    def info(self) -> dict[str, Any]:
        """JSON-friendly facts about the loaded model, for results."""
        model, mapping = self._require_loaded()
        return {
            "name": self.config.name if self.config else None,
            "family": self.family_value(),
            "weights": self.source.weights if self.source else None,
            "origin": self.source.origin if self.source else None,
            "device": self.device,
            "dtype": str(self.dtype).replace("torch.", ""),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "layout": mapping.describe(),
            "load_seconds": self.load_seconds,
            "depth": self.source.provenance.get("depth") if self.source else None,
            "config_hash": config_hash(model.config),
        }

    def family_value(self) -> str | None:
        if self.config is not None:
            return self.config.family.value
        return self.family.value if self.family else None

    def unload(self) -> weakref.ref | None:
        """Drop every reference this adapter holds and give the memory back; returns a weakref to check.

        Removes accelerate's dispatch hooks (they hold the offloaded weights map), drops model, tokenizer
        and layout, collects garbage, trims the C heap and empties the CUDA cache; a temporary offload
        folder made by load_model is removed. `last_unload` says whether CUDA memory returned to the
        allocation it had before the load.
        """
        if self.model is None:
            return None
        model = self.model
        ref = weakref.ref(model)
        _remove_dispatch_hooks(model)
        self.model = self.tokenizer = self.mapping = None
        self._max_positions, self._input_names = None, frozenset()
        del model
        memory.release_memory()
        after = memory.cuda_allocated()
        before = self._cuda_baseline
        self.last_unload = {
            "weakref_dead": ref() is None,
            "cuda_allocated_before_load": before,
            "cuda_allocated_after_unload": after,
            "cuda_returned_to_baseline": (None if before is None or after is None
                                          else all(after.get(i, 0) <= v for i, v in before.items())),
        }
        _remove_folder(self._offload_dir)
        self._offload_dir = None
        return ref

    unload_model = unload


def config_hash(config: Any) -> str:
    """Short sha256 of a model config's diff dict: two figures compare only if their models are the same."""
    import hashlib
    import json

    facts = {k: v for k, v in config.to_diff_dict().items() if k not in ("_name_or_path", "transformers_version")}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def validate_texts(texts: Sequence[str] | str) -> list[str]:
    """A non-empty list of non-empty strings (a single string is one text)."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or isinstance(texts, bytes):
        raise InvalidInputError(f"texts must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise InvalidInputError("texts is empty: give at least one string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInputError(f"texts[{i}] is {type(t).__name__}, not a string")
        if not t.strip():
            raise InvalidInputError(f"texts[{i}] is an empty or blank string")
    return list(texts)


def _checkpoint_dtype(hf_config: Any) -> torch.dtype:
    """The dtype a checkpoint's config declares (for planning a load with dtype="auto"); float32 if none."""
    declared = compat.config_dtype(hf_config)
    if isinstance(declared, torch.dtype):
        return declared
    if isinstance(declared, str) and isinstance(getattr(torch, declared, None), torch.dtype):
        return getattr(torch, declared)
    return torch.float32


def _declares_dtype(hf_config: Any) -> bool:
    return compat.config_dtype(hf_config) is not None


def _new_offload_folder(name: str) -> Path:
    """A fresh folder for weights disk offload must rewrite; unload() removes it."""
    import tempfile

    from .assets import cache_root

    root = cache_root() / "offload"
    root.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
    return Path(tempfile.mkdtemp(prefix=f"{safe}-", dir=root))


def _remove_folder(path: Path | None) -> None:
    if path is not None:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def _remove_dispatch_hooks(model: nn.Module) -> None:
    """accelerate's hooks (device alignment, offload) hold references to weights maps: detach them."""
    if not any(hasattr(m, "_hf_hook") for m in model.modules()):
        return
    from accelerate.hooks import remove_hook_from_submodules

    remove_hook_from_submodules(model)
