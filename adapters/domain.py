"""Domain-specific encoders (code, science, biomedicine): BERT mechanics, their own family tag."""

from __future__ import annotations

from .bert import BERTModelAdapter
from .families import ModelFamily


class DomainSpecificModelAdapter(BERTModelAdapter):
    """CodeBERT, SciBERT, BioBERT and kin."""

    family = ModelFamily.DOMAIN_SPECIFIC
