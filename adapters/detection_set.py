"""The labelled detection set (suites/data/detection_set.toml) and what each detection tier should answer.

Kept apart from families.py so detection code never reads its own answer key; the suite and the unit tests
share these helpers so both score the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .families import DOMAIN_MODEL_TYPES, ModelFamily

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "suites" / "data" / "detection_set.toml"
TIERS = ("name", "config", "module")
_FIELDS = {"id", "model_type", "family", "domain_hint", "vocab_size", "opaque", "note"}


def load_detection_set(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Entries of the labelled set, validated (unknown fields or families fail loudly, not silently)."""
    p = Path(path) if path is not None else DEFAULT_PATH
    with p.open("rb") as fh:
        entries = tomllib.load(fh)["models"]
    for e in entries:
        extra = set(e) - _FIELDS
        if extra or not {"id", "model_type", "family"} <= set(e):
            raise ValueError(f"{p.name}: bad entry {e!r} (unknown fields {sorted(extra)})")
        ModelFamily(e["family"])  # raises ValueError on a typo
    return entries


def config_carries_domain(entry: dict[str, Any]) -> bool:
    """Whether the config an entry stands for says "domain" by itself (name, vocabulary or model type)."""
    return (
        bool(entry.get("domain_hint"))
        or entry.get("vocab_size") is not None
        or entry["model_type"] in DOMAIN_MODEL_TYPES
    )


def tier_expectations(entry: dict[str, Any]) -> dict[str, ModelFamily | None]:
    """Expected answer of each tier: name (None for opaque ids), config, module (architecture only)."""
    family = ModelFamily(entry["family"])
    arch = ModelFamily.BERT if family is ModelFamily.DOMAIN_SPECIFIC else family
    return {
        "name": None if entry.get("opaque") else family,
        "config": family if config_carries_domain(entry) else arch,
        "module": arch,
    }


def config_for(entry: dict[str, Any], full: bool = False) -> dict[str, Any]:
    """The config.json dict an entry stands for: model_type, plus the name/vocabulary it carries.

    ``full=True`` starts from transformers' default config of that model_type (every structural key a real
    config.json has), which needs transformers; the default is the bare minimum a config.json guarantees.
    """
    cfg: dict[str, Any] = {}
    if full:
        from transformers import AutoConfig

        cfg = AutoConfig.for_model(entry["model_type"]).to_dict()
        cfg["_name_or_path"] = ""
    cfg["model_type"] = entry["model_type"]
    if entry.get("domain_hint"):
        cfg["_name_or_path"] = entry["domain_hint"]
    if entry.get("vocab_size") is not None:
        cfg["vocab_size"] = entry["vocab_size"]
    return cfg


def shipped_by_installed(entries: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(entries whose model_type the installed transformers knows, the rest): a release older than a type
    cannot build its config or module, so the config (full) and module tiers score the first list only."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    entries = list(entries)
    return ([e for e in entries if e["model_type"] in CONFIG_MAPPING_NAMES],
            [e for e in entries if e["model_type"] not in CONFIG_MAPPING_NAMES])


def score(
    entries: Iterable[dict[str, Any]], tier: str, detect: Callable[[dict[str, Any]], Any]
) -> tuple[float, list[tuple[str, Any, Any]]]:
    """(accuracy, failures as (id, expected, got)) of one tier; an exception counts as a wrong answer."""
    entries = list(entries)
    failures = []
    for e in entries:
        expected = tier_expectations(e)[tier]
        try:
            got = detect(e)
        except Exception as exc:  # a tier that raises has not answered
            got = f"{type(exc).__name__}: {exc}"
        if got != expected:
            failures.append((e["id"], expected, got))
    return (1 - len(failures) / len(entries)) if entries else 0.0, failures
