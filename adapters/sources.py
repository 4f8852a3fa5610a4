"""Where a model's weights come from: a local folder, the Hugging Face cache, the hub, or the offline zoo.

Order for NEURONMAP_SOURCE=auto (the default): local folder, HF cache, hub (when reachable), zoo. Set
NEURONMAP_SOURCE=zoo to force the zoo, =hub to refuse it. The provenance goes into every result.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInputError, ModelSourceError, UnknownModelError
from .registry import UniversalModelRegistry

SOURCES = ("auto", "zoo", "hub")


@dataclass(frozen=True)
class ModelSource:
    """What from_pretrained is given, and the facts a result must carry about it."""

    name: str
    location: str
    origin: str  # "local" | "hf_cache" | "hub" | "zoo"
    weights: str  # "pretrained" | "synthetic" | "unknown"
    provenance: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """True when the hub answers a TCP connect; False offline (HF_HUB_OFFLINE=1 short-circuits)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def in_hf_cache(repo_id: str) -> bool:
    """True when the HF cache already holds this repo's config (then no network is needed)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id that is not a valid repo id is simply not cached
        return False


def resolve_source(name: str, registry: UniversalModelRegistry, source: str | None = None,
                   depth: int | None = None) -> ModelSource:
    """Pick where to load `name` from; raise a typed error naming what is missing."""
    mode = (source or os.environ.get("NEURONMAP_SOURCE") or "auto").lower()
    if mode not in SOURCES:
        raise InvalidInputError(f"source {mode!r} is not one of {', '.join(SOURCES)}")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"{path} is a folder but holds no config.json (not a saved checkpoint)")
        marker = path / "neuronmap_zoo.json"
        prov = json.loads(marker.read_text()) if marker.is_file() else {}
        return ModelSource(name, str(path), "local", prov.get("weights", "unknown"), prov)
    if looks_like_path(name):
        raise ModelSourceError(f"model path {name!r} does not exist")
    canonical = registry.canonical_name(name)
    config = registry.get_model_config(canonical) if canonical else None
    hub_id = canonical or name
    if depth is None and mode != "zoo":
        if in_hf_cache(hub_id):
            return ModelSource(name, hub_id, "hf_cache", "pretrained", {"hub_id": hub_id, "cached": True})
        if hub_reachable():
            return ModelSource(name, hub_id, "hub", "pretrained", {"hub_id": hub_id})
    if mode == "hub":
        raise ModelSourceError(f"{name!r} needs the Hugging Face hub, which is not reachable (no network or "
                               "HF_HUB_OFFLINE=1), and NEURONMAP_SOURCE=hub forbids the offline zoo")
    if config is None:
        raise UnknownModelError(
            f"{name!r} is not a local checkpoint, not in the Hugging Face cache, not registered in the offline "
            f"zoo, and the hub is not reachable; registered: {', '.join(registry.list_models())}"
        )
    from .zoo import ensure_checkpoint

    ckpt = ensure_checkpoint(config, depth=depth)
    return ModelSource(name, str(ckpt.path), "zoo", ckpt.weights, ckpt.provenance)


def looks_like_path(name: str) -> bool:
    """Names that can only mean a file-system path (hub ids are 'owner/name' at most)."""
    return name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name
