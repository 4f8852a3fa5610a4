"""What is wrong with a checkpoint folder, said the same way on every transformers release.

Releases word load failures differently (4.x names the tensor in a state-dict error, 5.x only in its log; 4.x
raises on a folder without tokenizer files, 5.x builds an empty tokenizer), so the adapters check the folder
themselves and name what a user must fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import nn

from .errors import ModelSourceError, UnsafeWeightsError


def refuse_pickle_only(path: Path, allow_pickle: bool) -> None:
    """Pickled weights can run arbitrary code on loading: refused unless the caller asks for them."""
    has_safe = any(path.glob("*.safetensors"))
    pickled = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    if not has_safe and pickled and not allow_pickle:
        raise UnsafeWeightsError(
            f"{path} holds only pickled weights ({', '.join(sorted(pickled))}); loading them can run arbitrary "
            "code, so they are refused unless allow_pickle=True"
        )
    if not has_safe and not pickled:
        raise ModelSourceError(f"{path} holds no weights (*.safetensors)")


_SHAPE_ERROR = re.compile(r"size mismatch|mismatched sizes|copying a param with shape|ignore_mismatched_sizes", re.I)


def is_shape_error(text: str) -> bool:
    """A load error about weight shapes, however the release words it."""
    return bool(_SHAPE_ERROR.search(text))


def shape_detail(text: str) -> str:
    """The first line of a load error that mentions a shape or a size (when the tensor cannot be named)."""
    lines = [ln.strip() for ln in text.splitlines() if re.search(r"shape|size", ln, re.I)]
    return (lines[0] if lines else text.splitlines()[0])[:300]


def first_mismatch(folder: Path, hf_config: Any, cls: Any) -> str | None:
    """The first weight whose shape in the checkpoint differs from what the config builds (meta device)."""
    from accelerate import init_empty_weights
    from safetensors import safe_open

    try:
        with init_empty_weights(include_buffers=True):
            model = cls(hf_config) if isinstance(cls, type) and issubclass(cls, nn.Module) else \
                cls.from_config(hf_config)
        built = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        prefix = getattr(model, "base_model_prefix", "")
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                    stored = tuple(f.get_slice(key).get_shape())
                    for candidate in (key, f"{prefix}.{key}", key.split(".", 1)[-1]):
                        if candidate in built:
                            if built[candidate] != stored:
                                return (f"{key}: checkpoint {list(stored)}, the config builds "
                                        f"{list(built[candidate])}")
                            break
    except Exception:  # the detail is a courtesy: never mask the load error with another
        return None
    return None


_TOKENIZER_FILE_PREFIXES = ("tokenizer", "vocab", "merges", "spiece", "sentencepiece", "spm")


def has_tokenizer_files(path: Path) -> bool:
    """A tokenizer's own files (tokenizer.json, vocab.*, merges.txt, a SentencePiece model) are in the folder."""
    return any(f.is_file() and (f.name.lower().startswith(_TOKENIZER_FILE_PREFIXES) or f.suffix == ".model")
               for f in path.iterdir())
