"""GPT family (decoder-only, LayerNorm): what differs is only the causal-LM fallback class."""

from __future__ import annotations

from .base import UniversalModelAdapter
from .families import ModelFamily


class GPTModelAdapter(UniversalModelAdapter):
    """GPT-2, GPT-Neo, GPT-J, CodeGen and kin. GPT tokenizers have no pad token: pad = eos (base does it)."""

    family = ModelFamily.GPT
    default_auto_class = "AutoModelForCausalLM"
