"""Typed errors: every failure of the public API derives from NeuronMapError, so callers catch one type."""

from __future__ import annotations


class NeuronMapError(Exception):
    """Base of every error NeuronMap raises on purpose."""


class UnknownModelError(NeuronMapError, KeyError):
    """A name that is neither registered, a local directory, a cached hub id, nor reachable on the hub."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelNotLoadedError(NeuronMapError, KeyError):
    """An operation on a model that has not been loaded (or was unloaded)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidInputError(NeuronMapError, ValueError):
    """Texts, layers or options that the call cannot accept."""


class InvalidLayerError(InvalidInputError, IndexError):
    """A layer index or name that does not exist in the model."""


class ModelSourceError(NeuronMapError, OSError):
    """A checkpoint that cannot be read: missing path, corrupt weights, bad config, or a network that is not there."""


class UnsafeWeightsError(ModelSourceError):
    """Pickled weights or remote code that the caller did not explicitly allow."""


class DetectionError(NeuronMapError, ValueError):
    """Something that is not a model name, a config or an nn.Module was given for detection."""


class ExtractionError(NeuronMapError, RuntimeError):
    """A forward pass that failed while capturing activations (hooks are removed before this is raised)."""


class OutOfMemoryError(NeuronMapError, MemoryError):
    """The model or workload does not fit in the memory available."""
