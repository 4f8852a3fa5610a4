"""Tiny models and a word-level tokenizer for fast unit tests (no assets, no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSeq2SeqLM,
    PreTrainedTokenizerFast,
)

from adapters.zoo import save_tiny_checkpoint, tiny_config

WORDS = tuple(
    "hello world the a cat dog sat on mat and of to in is it was for with as by at from this that "
    "model layer token text one two three four five six seven eight nine ten".split()
)
SPECIALS = ["[PAD]", "<s>", "</s>", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def word_tokenizer(encoder: bool) -> PreTrainedTokenizerFast:
    """Word-level tokenizer: pad=0, bos=1, eos=2; encoders wrap texts in [CLS] ... [SEP]."""
    vocab = {t: i for i, t in enumerate(SPECIALS + list(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if encoder:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="<s>", eos_token="</s>",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=128,
    )


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
