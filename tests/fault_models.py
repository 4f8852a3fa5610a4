"""pytest plugin for tests/test_faults.py: a suite run whose registered models fail on purpose.

Loaded with `-p tests.fault_models` in a child pytest run over suites/; NM_FAULTS_ROOT names a folder with
`models.toml` (tiny-good, tiny-noload, tiny-forward, tiny-oom), a tiny checkpoint `good/` and a checkpoint with
corrupt weights `corrupt/`. Names resolve to those folders (as if they were the hub or the zoo), so loading
and extraction run the real code; only the faults themselves are injected:
  tiny-noload   loads `corrupt/`: the real loader fails (ModelSourceError)
  tiny-forward  the embedding raises RuntimeError when the forward reaches it
  tiny-oom      the embedding raises torch.OutOfMemoryError when the forward reaches it
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

import adapters.base
import adapters.registry
from adapters.base import UniversalModelAdapter
from adapters.sources import ModelSource

ROOT = Path(os.environ["NM_FAULTS_ROOT"])
FOLDERS = {"tiny-good": "good", "tiny-noload": "corrupt", "tiny-forward": "good", "tiny-oom": "good"}
FORWARD_FAULTS: dict[str, Any] = {
    "tiny-forward": lambda: RuntimeError("injected fault: the forward pass broke in the embedding"),
    "tiny-oom": lambda: torch.OutOfMemoryError("injected fault: CUDA out of memory. Tried to allocate 2.00 GiB"),
}

adapters.registry.MODELS_FILE = ROOT / "models.toml"
_resolve = adapters.base.resolve_source
_load = UniversalModelAdapter.load_model


def _resolve_source(name: str, registry: Any, source: str | None = None, depth: int | None = None) -> Any:
    if name in FOLDERS:
        return ModelSource(name, str(ROOT / FOLDERS[name]), "local", "synthetic", {"fault_injection": True})
    return _resolve(name, registry, source=source, depth=depth)


def _load_model(self: UniversalModelAdapter, model_name: str, *args: Any, **kwargs: Any) -> Any:
    out = _load(self, model_name, *args, **kwargs)
    fault = FORWARD_FAULTS.get(model_name)
    if fault is not None:
        def raise_fault(*_: Any) -> None:
            raise fault()

        self.model.get_input_embeddings().register_forward_pre_hook(raise_fault)
    return out


adapters.base.resolve_source = _resolve_source
UniversalModelAdapter.load_model = _load_model  # type: ignore[method-assign]
