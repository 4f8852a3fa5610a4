"""Fingerprints: what makes two figures comparable (same model, weights, precision, device, libraries,
hardware) and what code produced them (adapter source hash). The gate compares like with like only."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

ADAPTERS_DIR = Path(__file__).resolve().parent.parent / "adapters"
# fields that must match for two records to be comparable; the adapter hash is traceability, not a blocker:
# a change of code is exactly what a regression gate is there to judge
COMPARABLE_KEYS = ("model_config", "weights", "dtype", "device", "libraries", "hardware")
# compared only when both fingerprints carry them (records written before they existed still compare)
OPTIONAL_KEYS = ("runtime",)


@functools.lru_cache(maxsize=1)
def adapter_source_hash() -> str:
    """sha256 over the adapters package's Python sources (sorted by path), first 16 hex digits."""
    digest = hashlib.sha256()
    for path in sorted(ADAPTERS_DIR.rglob("*.py")):
        digest.update(path.relative_to(ADAPTERS_DIR).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(environment: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint of one record from the run's environment and the model's info (adapter.info())."""
    packages = environment.get("packages") or {}
    gpus = environment.get("gpus") or []
    cpu = environment.get("cpu") or {}
    return {
        "adapter_source": adapter_source_hash(),
        "model_config": info.get("config_hash"),
        "weights": info.get("weights"),
        "dtype": info.get("dtype"),
        "device": info.get("device"),
        "libraries": {k: packages.get(k) for k in ("torch", "transformers", "accelerate")},
        "hardware": {
            "cpu": cpu.get("model"),
            "cores": cpu.get("usable_cores"),
            # the board model and driver, not its UUID: any runner with the same GPU model compares
            "gpus": [{k: g.get(k) for k in ("name", "driver")} for g in gpus if g.get("cuda_index") is not None
                     or g.get("source") == "torch"],
        },
        # how the process ran the work: intra-op threads and the allocator's thresholds both move timings
        "runtime": {"torch_threads": (environment.get("torch") or {}).get("threads"),
                    "malloc": (environment.get("malloc") or {}).get("mode")},
    }


def incomparable_reasons(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """Why two fingerprints are not comparable (empty when they are); missing fingerprints compare."""
    if not a or not b:
        return []
    keys = COMPARABLE_KEYS + tuple(k for k in OPTIONAL_KEYS if k in a and k in b)
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
