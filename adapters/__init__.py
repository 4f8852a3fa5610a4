"""NeuronMap adapters: universal multi-model support (the names of the original design).

Run from the checkout: a PyPI project is also called `adapters` (AdapterHub); `NEURONMAP = True` lets
callers check they got this one.
"""

from __future__ import annotations

from .analyzer import MultiModelAnalyzer
from .base import ActivationResult, UniversalModelAdapter
from .bert import BERTModelAdapter
from .domain import DomainSpecificModelAdapter
from .errors import (
    DetectionError,
    ExtractionError,
    InvalidInputError,
    InvalidLayerError,
    ModelNotLoadedError,
    ModelSourceError,
    NeuronMapError,
    OutOfMemoryError,
    UnknownModelError,
    UnsafeWeightsError,
)
from .families import ModelFamily
from .gpt import GPTModelAdapter
from .layout import LayerMapping
from .llama import LLaMAModelAdapter
from .memory import get_memory_usage
from .registry import ModelConfig, UniversalModelRegistry
from .t5 import T5ModelAdapter

NEURONMAP = True

_ADAPTERS: dict[ModelFamily, type[UniversalModelAdapter]] = {
    ModelFamily.GPT: GPTModelAdapter,
    ModelFamily.BERT: BERTModelAdapter,
    ModelFamily.T5: T5ModelAdapter,
    ModelFamily.LLAMA: LLaMAModelAdapter,
    ModelFamily.DOMAIN_SPECIFIC: DomainSpecificModelAdapter,
}


def adapter_for_family(family: ModelFamily) -> type[UniversalModelAdapter]:
    """The adapter class of a family."""
    return _ADAPTERS[ModelFamily(family)]


__all__ = [
    "NEURONMAP",
    "ActivationResult",
    "BERTModelAdapter",
    "DetectionError",
    "DomainSpecificModelAdapter",
    "ExtractionError",
    "GPTModelAdapter",
    "InvalidInputError",
    "InvalidLayerError",
    "LLaMAModelAdapter",
    "LayerMapping",
    "ModelConfig",
    "ModelFamily",
    "ModelNotLoadedError",
    "ModelSourceError",
    "MultiModelAnalyzer",
    "NeuronMapError",
    "OutOfMemoryError",
    "T5ModelAdapter",
    "UniversalModelAdapter",
    "UniversalModelRegistry",
    "UnknownModelError",
    "UnsafeWeightsError",
    "adapter_for_family",
    "get_memory_usage",
]
