"""UniversalModelRegistry: the registered models, their facts, and the adapter class for each family."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import compat, families
from .errors import DetectionError, InvalidInputError, ModelSourceError, UnknownModelError, UnsafeWeightsError
from .families import ModelFamily

MODELS_FILE = Path(__file__).resolve().parent.parent / "models.toml"


@dataclass(frozen=True)
class ModelConfig:
    """The facts of one model that the adapters and the suites need, independent of its family."""

    name: str
    family: ModelFamily
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    vocab_size: int | None = None
    max_positions: int | None = None
    intermediate_size: int | None = None
    num_decoder_layers: int | None = None
    is_encoder_decoder: bool = False
    architecture: str | None = None
    tokenizer: str | None = None
    pretrained_asset: str | None = None
    default: bool = False
    large: bool = False
    aliases: tuple[str, ...] = ()
    hf_config: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def layers(self) -> int:
        """Blocks addressed by integer layer indices (the encoder's, for encoder-decoders)."""
        return self.num_layers

    def build_hf_config(self, **overrides: Any) -> Any:
        """A transformers config with the registered facts (used by the zoo to build the architecture)."""
        from transformers import AutoConfig

        facts = {**self.hf_config, **overrides}
        if self.architecture and "architectures" not in facts:
            facts["architectures"] = [self.architecture]
        return AutoConfig.for_model(self.model_type, **facts)


def _first_int(cfg: Any, *names: str) -> int | None:
    for name in names:
        try:
            value = getattr(cfg, name, None)
        except Exception:  # per-layer configs raise on ambiguous global attributes
            continue
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def facts_from_hf_config(cfg: Any) -> dict[str, Any]:
    """Layer count, width and heads from any transformers config (attribute maps hide the per-model names)."""
    text = compat.text_config(cfg)
    enc_dec = bool(getattr(text, "is_encoder_decoder", False))
    layers = _first_int(text, "num_hidden_layers", "num_layers", "n_layer", "encoder_layers")
    if enc_dec:
        layers = _first_int(text, "encoder_layers", "num_layers", "num_hidden_layers") or layers
    return {
        "model_type": getattr(text, "model_type", "") or "",
        "num_layers": layers or 0,
        "hidden_size": _first_int(text, "hidden_size", "d_model", "n_embd", "dim") or 0,
        "num_heads": _first_int(text, "num_attention_heads", "num_heads", "n_head", "encoder_attention_heads")
        or 0,
        "vocab_size": _first_int(text, "vocab_size"),
        "max_positions": _first_int(text, "max_position_embeddings", "n_positions", "n_ctx", "max_seq_len"),
        "intermediate_size": _first_int(text, "intermediate_size", "d_ff", "n_inner", "ffn_dim", "hidden_dim"),
        "num_decoder_layers": _first_int(text, "num_decoder_layers", "decoder_layers") if enc_dec else None,
        "is_encoder_decoder": enc_dec,
    }


def read_config(path: Path, trust_remote_code: bool = False) -> Any:
    """A checkpoint folder's config; an unreadable or invalid one is a ModelSourceError naming the file."""
    import json

    from transformers import AutoConfig

    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"invalid or unreadable config in {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelSourceError(f"invalid config in {path}: config.json holds a JSON {type(raw).__name__}, not an "
                               "object with a model_type key")
    if raw.get("auto_map") and not trust_remote_code:
        raise UnsafeWeightsError(
            f"{path} needs custom code (config auto_map: {sorted(raw['auto_map'])}); remote code is never run "
            "unless trust_remote_code=True"
        )
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers' validation raises its own classes too (strict dataclass errors)
        raise ModelSourceError(f"invalid or unreadable config in {path}: {str(exc)[:300]}") from exc
    _check_field_types(raw, type(config), path)
    return config


def _check_field_types(raw: dict[str, Any], config_class: type, path: Path) -> None:
    """A number field given as text is caught here, with its name, on every release (5.x validates configs
    itself; 4.x accepts them and fails later inside torch with a message that names no field)."""
    try:
        defaults = config_class().to_dict()
    except Exception:  # configs that need arguments: nothing to compare against
        return
    for key, value in raw.items():
        default = defaults.get(key)
        numeric = isinstance(default, int | float) and not isinstance(default, bool)
        if numeric and isinstance(value, str):  # lists or dicts can be legitimate (per-layer sizes)
            raise ModelSourceError(f"invalid config in {path}: field {key!r} expects {type(default).__name__}, "
                                   f"got {type(value).__name__} ({value!r})")


class UniversalModelRegistry:
    """Knows the registered models (models.toml) and how to tell the family of anything else."""

    def __init__(self, models_file: Path | str | None = None) -> None:
        self.models_file = Path(models_file) if models_file else MODELS_FILE
        self._models: dict[str, ModelConfig] = {}
        self._aliases: dict[str, str] = {}
        for entry in self._read(self.models_file):
            self.register(self._config_from_entry(entry))

    @staticmethod
    def _read(path: Path) -> list[dict[str, Any]]:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInputError(f"cannot read the model registry {path}: {exc}") from exc
        return list(data.get("model", []))

    @staticmethod
    def _config_from_entry(entry: dict[str, Any]) -> ModelConfig:
        from transformers import AutoConfig

        try:
            name, family, model_type = entry["name"], ModelFamily(entry["family"]), entry["model_type"]
        except (KeyError, ValueError) as exc:
            raise InvalidInputError(f"models.toml entry {entry!r} lacks a valid name/family/model_type") from exc
        hf_facts = dict(entry.get("config", {}))
        facts = facts_from_hf_config(AutoConfig.for_model(model_type, **hf_facts))
        facts.pop("model_type")
        return ModelConfig(
            name=name,
            family=family,
            model_type=model_type,
            architecture=entry.get("architecture"),
            tokenizer=entry.get("tokenizer"),
            pretrained_asset=entry.get("pretrained_asset"),
            default=bool(entry.get("default", False)),
            large=bool(entry.get("large", False)),
            aliases=tuple(entry.get("aliases", ())),
            hf_config=hf_facts,
            **facts,
        )

    def register(self, config: ModelConfig) -> None:
        """Add (or replace) a model; its aliases resolve to it."""
        self._models[config.name] = config
        for key in (config.name, *config.aliases):
            self._aliases[key.lower()] = config.name

    def canonical_name(self, name: str) -> str | None:
        """The registered name for a name or alias (case-insensitive), or None."""
        return self._aliases.get(name.lower()) if isinstance(name, str) else None

    def is_registered(self, name: str) -> bool:
        return self.canonical_name(name) is not None

    def list_models(self) -> list[str]:
        return list(self._models)

    def configs(self) -> Iterable[ModelConfig]:
        return self._models.values()

    def get_model_config(self, name: str) -> ModelConfig:
        """The registered facts, or facts read from a local checkpoint's config.json."""
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError(f"model name must be a non-empty string, got {name!r}")
        canonical = self.canonical_name(name)
        if canonical is not None:
            return self._models[canonical]
        path = Path(name).expanduser()
        if (path / "config.json").is_file():
            return self.config_from_checkpoint(path, name=name)
        raise UnknownModelError(
            f"unknown model {name!r}: not registered in {self.models_file.name} and not a local checkpoint "
            f"directory; registered: {', '.join(self._models)}"
        )

    def config_from_checkpoint(self, path: Path | str, name: str | None = None) -> ModelConfig:
        """ModelConfig for an unregistered checkpoint folder or a loaded transformers config."""
        from transformers import PretrainedConfig

        cfg = path if isinstance(path, PretrainedConfig) else read_config(Path(path))
        facts = facts_from_hf_config(cfg)
        archs = getattr(cfg, "architectures", None) or [None]
        return ModelConfig(
            name=name or str(path),
            family=families.detect(cfg),
            architecture=archs[0],
            hf_config=cfg.to_diff_dict(),
            **facts,
        )

    def detect_model_family(self, model: Any) -> ModelFamily:
        """Family of a name, a config (PretrainedConfig or config.json dict) or an nn.Module."""
        if isinstance(model, str):
            canonical = self.canonical_name(model)
            if canonical is not None:
                return self._models[canonical].family
            path = Path(model).expanduser()
            if (path / "config.json").is_file():
                return families.detect(read_config(path))
        return families.detect(model)

    def select(self, spec: str | None) -> list[str]:
        """Model names for a selection: None/"default", "all", "family:t5", or a comma list of names."""
        spec = (spec or "default").strip()
        if spec == "default":
            return [c.name for c in self._models.values() if c.default]
        if spec == "all":
            return list(self._models)
        chosen: list[str] = []
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            if part.startswith("family:"):
                try:
                    family = ModelFamily(part.split(":", 1)[1])
                except ValueError as exc:
                    allowed = ", ".join(f.value for f in ModelFamily)
                    raise InvalidInputError(f"unknown family in {part!r}; allowed: {allowed}") from exc
                chosen += [c.name for c in self._models.values() if c.family is family]
            else:
                canonical = self.canonical_name(part)
                if canonical is None:
                    raise UnknownModelError(
                        f"--nm-models names {part!r}, which is not registered; registered: "
                        f"{', '.join(self._models)}"
                    )
                chosen.append(canonical)
        return list(dict.fromkeys(chosen))

    def get_adapter_class(self, family: ModelFamily) -> type:
        """The adapter class that handles a family (each holds only what differs)."""
        from . import adapter_for_family

        return adapter_for_family(family)


__all__ = ["DetectionError", "ModelConfig", "UniversalModelRegistry", "facts_from_hf_config"]
