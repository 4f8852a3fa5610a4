"""BERT family (encoder-only): bidirectional, nothing to override beyond the family tag."""

from __future__ import annotations

from .base import UniversalModelAdapter
from .families import ModelFamily


class BERTModelAdapter(UniversalModelAdapter):
    """BERT, RoBERTa, DistilBERT, DeBERTa and kin."""

    family = ModelFamily.BERT
    default_auto_class = "AutoModel"
