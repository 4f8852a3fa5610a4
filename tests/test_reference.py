"""harness.reference: the machine-speed reference is transformers' own forward, hook-free, timed after rounds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.reference import REFERENCE_KIND, RoundReference, model_forward
from harness.timing import measure
from tests.tiny import loaded_tiny


@pytest.mark.parametrize("kind", ["gpt2", "bert", "t5", "llama"])
def test_reference_is_the_models_own_forward_without_hooks(tiny_dirs: dict[str, Path], kind: str) -> None:
    with loaded_tiny(tiny_dirs, [kind]) as adapters:
        adapter = adapters[kind]
        model = adapter.model
        hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        texts = ["the cat sat on the mat", "a dog"]
        out = model_forward(adapter, texts)()
        hooks_after = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        assert hooks_after == hooks_before
        enc = adapter.tokenize(texts)  # the batch exactly as the extraction pads it
        module = model.get_encoder() if model.config.is_encoder_decoder else model.base_model
        with torch.inference_mode():
            expected = module(**enc)
        assert out.last_hidden_state.shape[:2] == enc["input_ids"].shape
        torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state)


def test_reference_refuses_what_it_cannot_run() -> None:
    with pytest.raises(ValueError, match="no texts"):
        model_forward(object(), [])
    with pytest.raises(ValueError, match="no loaded model"):
        model_forward(object(), ["text"])


def test_round_reference_pairs_one_sample_with_each_timed_round() -> None:
    calls: list[str] = []
    ref = RoundReference(lambda: calls.append("ref"))
    stats = measure(lambda: calls.append("fn"), rounds=4, warmup=2, teardown=ref)
    assert calls == ["fn", "ref"] * 6  # after every call, warm-up included
    out = ref.for_rounds(stats.rounds)
    assert out["kind"] == REFERENCE_KIND and out["texts"] == 1
    assert RoundReference(lambda: None, texts=8).texts == 8
    assert out["samples"] == ref.samples[-4:] and len(out["samples"]) == 4  # warm-up samples dropped
    assert min(out["samples"]) <= out["median"] <= max(out["samples"])
    with pytest.raises(ValueError, match="6 samples, 7 rounds"):
        ref.for_rounds(7)
    with pytest.raises(ValueError):
        ref.for_rounds(0)
