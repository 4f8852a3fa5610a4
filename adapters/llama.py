"""LLaMA family (decoder-only, RMSNorm, rotary, gated MLP): same mechanics as GPT, its own family tag."""

from __future__ import annotations

from .families import ModelFamily
from .gpt import GPTModelAdapter


class LLaMAModelAdapter(GPTModelAdapter):
    """LLaMA, Alpaca, Vicuna and kin; grouped-query attention is expanded per head by eager attention."""

    family = ModelFamily.LLAMA
