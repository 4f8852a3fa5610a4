"""Machine-speed reference for latency: the model's own forward, timed next to every extraction round.

Why: on a shared machine the same code in two processes a minute apart can differ by 10-40 % (measured on
the project's 2-core VM: gpt2's one-text extraction moved -30 %..+43 % between consecutive runs while the
8 x 128-token batch moved about 12 %). A statistic taken inside one run cannot see that, so a gate that
compares raw medians of two runs raises false alarms. The reference is timed right after each extraction
round on the same loaded weights, the same device and the same texts, so it sees the same machine state; the
gate then judges the per-round ratio extraction / reference, in which machine speed cancels.

Why the same texts, not a cheaper subset: a forward of the batch's first text alone settled per model load in
one of two speeds (gpt2 1 x 128 tokens: 137-149 ms or 162-172 ms), which the 8 x 128 extraction did not
follow, so the ratio jumped by 17 % between identical runs; the forward of the whole batch tracked the
extraction within 1 % in six fresh processes (extraction / forward 0.997-1.009).

What the reference is, and why it is independent of the code under test: transformers' own forward of the
model (`base_model`, or the encoder of an encoder-decoder), on the workload's texts, tokenised by the model's
tokenizer, no hooks, no adapter code in the call. A slowdown in the extraction path (hooks, capture,
tokenising, copying out) moves the ratio; a slower machine moves both. What it cannot tell apart: a change that
makes the model's own forward slower (dtype, device, library versions: those are in the fingerprint, so such
pairs are incomparable), see README's gate section.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from harness.timing import stats_from_samples, time_once

REFERENCE_KIND = "model_forward_same_texts"  # what `stats.reference.kind` names; the gate pairs equal kinds only


def model_forward(adapter: Any, texts: Sequence[str]) -> Callable[[], Any]:
    """A callable running transformers' forward of the adapter's loaded model on `texts`, no hooks.

    The inputs are built once, here, by the adapter's own `tokenize` (the batch exactly as extraction pads it);
    the timed call holds transformers' forward only.

    Raises ValueError for an empty `texts` and when no model is loaded.
    """
    import torch

    from adapters.compat import no_cache_kwargs

    if not texts:
        raise ValueError("model_forward: no texts given")
    model = getattr(adapter, "model", None)
    if model is None or getattr(adapter, "tokenizer", None) is None:
        raise ValueError("model_forward: the adapter has no loaded model and tokenizer")
    inputs = adapter.model_inputs(adapter.tokenize(texts))
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        module, kwargs = model.get_encoder(), inputs
    else:
        module = model.base_model
        kwargs = {**inputs, **no_cache_kwargs(module, config)}

    def forward() -> Any:
        with torch.inference_mode():
            return module(**kwargs)

    return forward


class RoundReference:
    """Times `fn` once per call and keeps every sample; used as the `teardown` of each timed round.

    After the round, not before: a model whose forward fails then fails inside the extraction first, with the
    adapter's typed error, not inside the reference. Arguments (pedantic passes the round's) are ignored.
    """

    def __init__(self, fn: Callable[[], Any], sync: Callable[[], Any] | None = None, texts: int = 1) -> None:
        self.fn = fn
        self.texts = texts
        self.sync = sync
        self.samples: list[float] = []

    def __call__(self, *_args: Any, **_kwargs: Any) -> None:
        self.samples.append(time_once(self.fn, self.sync))

    def for_rounds(self, rounds: int) -> dict[str, Any]:
        """The record's `stats.reference`: the samples of the last `rounds` calls (warm-up calls come first).

        Raises ValueError when fewer than `rounds` calls were made.
        """
        if rounds < 1 or len(self.samples) < rounds:
            raise ValueError(f"RoundReference: {len(self.samples)} samples, {rounds} rounds asked for")
        samples = self.samples[-rounds:]
        return {"kind": REFERENCE_KIND, "texts": self.texts, "samples": samples,
                "median": stats_from_samples(samples).median}
