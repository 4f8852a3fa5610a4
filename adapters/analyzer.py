"""MultiModelAnalyzer: several models side by side behind one API, each through its family's adapter.

With `memory_budget_gb`, the loaded models form a cache: their weights together stay within the budget,
the least recently used model is unloaded to make room, and a model that is already loaded is reused
without reading its weights again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch

from . import memory
from .base import ActivationResult, UniversalModelAdapter
from .errors import DetectionError, InvalidInputError, ModelNotLoadedError, OutOfMemoryError
from .registry import ModelConfig, UniversalModelRegistry


class MultiModelAnalyzer:
    """Load models by registered name, hub id or local folder; extract activations and attention."""

    def __init__(self, registry: UniversalModelRegistry | None = None, memory_budget_gb: float | None = None
                 ) -> None:
        self.registry = registry or UniversalModelRegistry()
        # least recently used first: load, extraction and attention calls move a model to the end
        self.loaded_models: OrderedDict[str, UniversalModelAdapter] = OrderedDict()
        if memory_budget_gb is not None and (isinstance(memory_budget_gb, bool)
                                             or not isinstance(memory_budget_gb, int | float)
                                             or not memory_budget_gb > 0):
            raise InvalidInputError(f"memory_budget_gb must be a positive number, got {memory_budget_gb!r}")
        self.memory_budget_bytes: int | None = (int(memory_budget_gb * memory.GB)
                                                if memory_budget_gb is not None else None)
        self.footprints: dict[str, int] = {}  # resident weight bytes of each loaded model
        self.cache_stats: dict[str, Any] = {"loads": 0, "reuses": 0, "evicted": []}

    def _adapter_class(self, name: str) -> type[UniversalModelAdapter]:
        try:
            family = self.registry.detect_model_family(name)
        except DetectionError:
            return UniversalModelAdapter  # family is read from the config once loaded
        return self.registry.get_adapter_class(family)

    def load_model(self, model_name: str, device: str | dict | None = None,
                   dtype: str | torch.dtype | None = None, **options: Any) -> UniversalModelAdapter:
        """Load (or reuse, if already loaded) a model; options go to UniversalModelAdapter.load_model."""
        if not isinstance(model_name, str) or not model_name.strip():
            raise InvalidInputError(f"model name must be a non-empty string, got {model_name!r}")
        if model_name in self.loaded_models:
            self.loaded_models.move_to_end(model_name)
            self.cache_stats["reuses"] += 1
            return self.loaded_models[model_name]
        config = self.registry.get_model_config(model_name) if self.registry.is_registered(model_name) else None
        adapter = self._adapter_class(model_name)(config, registry=self.registry)
        if self.memory_budget_bytes is not None:
            keys = ("source", "depth", "trust_remote_code")
            needed = adapter.estimate_bytes(model_name, device=device, dtype=dtype,
                                            **{k: options[k] for k in keys if k in options})
            self._make_room(needed, model_name)
        adapter.load_model(model_name, device=device, dtype=dtype, **options)
        self.cache_stats["loads"] += 1
        self.footprints[model_name] = sum(memory.resident_bytes(adapter.model).values())
        if type(adapter) is UniversalModelAdapter:  # now that the config is known, use the family's adapter
            family_cls = self.registry.get_adapter_class(adapter.config.family)
            adapter.__class__ = family_cls
        self.loaded_models[model_name] = adapter
        if self.memory_budget_bytes is not None:  # the estimate can be low: the measured size decides
            self._make_room(0, model_name, keep=model_name)
        return adapter

    def _make_room(self, needed: int, model_name: str, keep: str | None = None) -> None:
        """Unload least recently used models until `needed` more bytes fit the budget."""
        budget = self.memory_budget_bytes
        if budget is None:
            return
        if needed > budget:
            raise OutOfMemoryError(
                f"{model_name} needs ~{needed / memory.GB:.3f} GB of weights, more than the analyzer's "
                f"memory budget of {budget / memory.GB:.3f} GB"
            )
        while self.cache_used_bytes() + needed > budget:
            victim = next((n for n in self.loaded_models if n != keep), None)
            if victim is None:
                break
            self.unload_model(victim)
            self.cache_stats["evicted"].append(victim)

    def cache_used_bytes(self) -> int:
        """Resident weight bytes of every loaded model (what the memory budget counts)."""
        return sum(self.footprints.get(n, 0) for n in self.loaded_models)

    def _get(self, model_name: str) -> UniversalModelAdapter:
        try:
            adapter = self.loaded_models[model_name]
            self.loaded_models.move_to_end(model_name)  # recently used: evicted last
            return adapter
        except (KeyError, TypeError):
            loaded = ", ".join(self.loaded_models) or "none"
            raise ModelNotLoadedError(
                f"model {model_name!r} is not loaded (loaded: {loaded}); call load_model({model_name!r}) first"
            ) from None

    def extract_activations(self, model_name: str, texts: Sequence[str] | str,
                            layers: Sequence[int | str] | int | str) -> ActivationResult:
        return self._get(model_name).extract_activations(texts, layers)

    def get_attention_patterns(self, model_name: str, texts: Sequence[str] | str,
                               layers: Sequence[int | str] | int | str) -> ActivationResult:
        return self._get(model_name).get_attention_patterns(texts, layers)

    def get_model_info(self, model_name: str) -> ModelConfig:
        """Facts of a loaded model, or of a registered one that is not loaded."""
        if model_name in self.loaded_models:
            return self.loaded_models[model_name].get_model_info()
        return self.registry.get_model_config(model_name)

    def get_memory_usage(self) -> dict[str, Any]:
        """memory.get_memory_usage() plus `loaded_models` (least recently used first) and `model_cache`:
        budget_gb (None without a budget), used_gb, per-model GB, loads, reuses and evicted names."""
        usage = memory.get_memory_usage()
        usage["loaded_models"] = list(self.loaded_models)
        budget = self.memory_budget_bytes
        usage["model_cache"] = {
            "budget_gb": budget / memory.GB if budget is not None else None,
            "used_gb": self.cache_used_bytes() / memory.GB,
            "models_gb": {n: self.footprints.get(n, 0) / memory.GB for n in self.loaded_models},
            "loads": self.cache_stats["loads"],
            "reuses": self.cache_stats["reuses"],
            "evicted": list(self.cache_stats["evicted"]),
        }
        return usage

    def unload_model(self, model_name: str) -> bool:
        """Drop a model and give its memory back; True when nothing references it any more."""
        adapter = self._get(model_name)
        del self.loaded_models[model_name]
        self.footprints.pop(model_name, None)
        ref = adapter.unload()  # collects, trims and empties the CUDA cache once the model is dropped
        return ref is None or ref() is None

    def unload_all(self) -> None:
        for name in list(self.loaded_models):
            self.unload_model(name)
