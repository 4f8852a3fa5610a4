"""MultiModelAnalyzer: several models side by side behind one API, each through its family's adapter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import memory
from .base import ActivationResult, UniversalModelAdapter
from .errors import DetectionError, InvalidInputError, ModelNotLoadedError
from .registry import ModelConfig, UniversalModelRegistry


class MultiModelAnalyzer:
    """Load models by registered name, hub id or local folder; extract activations and attention."""

    def __init__(self, registry: UniversalModelRegistry | None = None) -> None:
        self.registry = registry or UniversalModelRegistry()
        self.loaded_models: dict[str, UniversalModelAdapter] = {}

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
            return self.loaded_models[model_name]
        config = self.registry.get_model_config(model_name) if self.registry.is_registered(model_name) else None
        adapter = self._adapter_class(model_name)(config, registry=self.registry)
        adapter.load_model(model_name, device=device, dtype=dtype, **options)
        if type(adapter) is UniversalModelAdapter:  # now that the config is known, use the family's adapter
            family_cls = self.registry.get_adapter_class(adapter.config.family)
            adapter.__class__ = family_cls
        self.loaded_models[model_name] = adapter
        return adapter

    def _get(self, model_name: str) -> UniversalModelAdapter:
        try:
            return self.loaded_models[model_name]
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
        usage = memory.get_memory_usage()
        usage["loaded_models"] = list(self.loaded_models)
        return usage

    def unload_model(self, model_name: str) -> bool:
        """Drop a model and give its memory back; True when nothing references it any more."""
        adapter = self._get(model_name)
        del self.loaded_models[model_name]
        ref = adapter.unload()
        del adapter
        memory.release_memory()
        return ref is None or ref() is None

    def unload_all(self) -> None:
        for name in list(self.loaded_models):
            self.unload_model(name)
