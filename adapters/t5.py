"""T5 family (encoder-decoder): integers address the encoder; the decoder runs only when asked for."""

from __future__ import annotations

from typing import Any

import torch

from . import compat
from .base import UniversalModelAdapter
from .capture import Request
from .families import ModelFamily


class T5ModelAdapter(UniversalModelAdapter):
    """T5, Flan-T5, UL2 and kin (BART, mBART, Pegasus, Marian).

    Encoder layers run the encoder alone. Decoder layers ("decoder.3") run the decoder from its start token
    (one position) unless `decoder_input_ids` is set on the adapter.
    """

    family = ModelFamily.T5
    default_auto_class = "AutoModelForSeq2SeqLM"
    decoder_input_ids: torch.Tensor | None = None

    def _forward_fn(self, inputs: dict[str, torch.Tensor], requests: list[Request], **flags: Any) -> Any:
        model, mapping = self._require_loaded()
        if not mapping.is_encoder_decoder:  # the decoder alone of an encoder-decoder (WhisperForCausalLM)
            return super()._forward_fn(inputs, requests, **flags)
        if all(r.stack == "encoder" for r in requests):
            encoder = model.get_encoder()
            return lambda: encoder(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **flags)
        batch = inputs["input_ids"].shape[0]
        dec = self.decoder_input_ids
        if dec is None:
            start = getattr(model.config, "decoder_start_token_id", None)
            start = start if start is not None else model.config.pad_token_id or 0
            dec = torch.full((batch, 1), int(start), dtype=torch.long)
        dec = dec.to(inputs["input_ids"].device)
        kwargs = {**self.model_inputs(inputs), **flags, "decoder_input_ids": dec, **compat.no_cache_kwargs(model)}
        return lambda: model(**kwargs)
