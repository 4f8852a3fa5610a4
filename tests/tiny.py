"""Tiny models and a word-level tokenizer for fast unit tests (no assets, no network)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
)

from adapters.zoo import save_tiny_checkpoint, tiny_config, word_tokenizer

KINDS: dict[str, tuple[str, Any, bool]] = {
    # name: (model_type, auto class, encoder-style tokenizer)
    "gpt2": ("gpt2", AutoModelForCausalLM, False),
    "bert": ("bert", AutoModelForMaskedLM, True),
    "t5": ("t5", AutoModelForSeq2SeqLM, False),
    "llama": ("llama", AutoModelForCausalLM, False),
    "distilbert": ("distilbert", AutoModel, True),
    "albert": ("albert", AutoModel, True),
    "bart": ("bart", AutoModelForSeq2SeqLM, False),
}


def build_tiny(kind: str, dest: Path, seed: int = 0) -> Path:
    """Save a tiny checkpoint of one kind into dest and return the folder."""
    model_type, auto, encoder = KINDS[kind]
    tok = word_tokenizer(encoder)
    torch.manual_seed(seed)
    model = auto.from_config(tiny_config(model_type, vocab_size=len(tok)))
    return save_tiny_checkpoint(model, tok, dest)


@contextmanager
def loaded_tiny(tiny_dirs: dict[str, Path], kinds: Iterable[str]) -> Iterator[dict[str, Any]]:
    """{kind: adapter} of tiny checkpoints loaded in one analyzer; all unloaded afterwards."""
    from adapters import MultiModelAnalyzer

    an = MultiModelAnalyzer()
    try:
        yield {kind: an.load_model(str(tiny_dirs[kind])) for kind in kinds}
    finally:
        an.unload_all()
