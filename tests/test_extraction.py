"""Extraction and attention on tiny models: parity with transformers, padding, early exit, hook hygiene."""

from __future__ import annotations

import pytest
import torch

from adapters import InvalidLayerError, ModelNotLoadedError, MultiModelAnalyzer
from adapters.capture import StopForward

TEXTS = ["hello world", "the cat sat on the mat and the dog sat on it"]


@pytest.fixture(scope="module")
def analyzer(tiny_dirs):
    an = MultiModelAnalyzer()
    for path in tiny_dirs.values():
        an.load_model(str(path))
    yield an, {k: str(v) for k, v in tiny_dirs.items()}
    an.unload_all()


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama", "distilbert", "albert"])
def test_blocks_match_hidden_states(analyzer, kind):
    an, names = analyzer
    name = names[kind]
    adapter = an.loaded_models[name]
    n = adapter.mapping.num_layers
    acts = an.extract_activations(name, TEXTS, list(range(n)))
    assert list(acts) == list(range(n))
    inputs = adapter.tokenize(TEXTS)
    with torch.no_grad():
        ref = adapter.model(**inputs, output_hidden_states=True).hidden_states
    assert len(ref) == n + 1
    for k in range(n - 1):
        assert acts[k].shape == ref[k + 1].shape
        assert torch.allclose(acts[k], ref[k + 1], atol=1e-5), k
    # the last block's raw output is returned, not the final-norm output transformers substitutes
    final_norm = adapter.mapping.stacks["blocks"].final_norm
    if final_norm is not None:
        normed = adapter.model.get_submodule(final_norm)(acts[n - 1])
        assert torch.allclose(normed, ref[n], atol=1e-5)
        assert not torch.allclose(acts[n - 1], ref[n], atol=1e-3)
    else:
        assert torch.allclose(acts[n - 1], ref[n], atol=1e-5)


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama", "t5"])
def test_padded_batch_gives_each_text_its_own_values(analyzer, kind):
    an, names = analyzer
    batch = an.extract_activations(names[kind], TEXTS, [0, -1])
    for i, text in enumerate(TEXTS):
        alone = an.extract_activations(names[kind], [text], [0, -1])
        n = int(alone.attention_mask.sum())
        assert int(batch.attention_mask[i].sum()) == n
        for layer in (0, -1):
            assert torch.allclose(batch[layer][i, :n], alone[layer][0, :n], atol=1e-5)


def test_request_order_negative_and_components(analyzer):
    an, names = analyzer
    acts = an.extract_activations(names["gpt2"], ["hello world"], [1, -2, "0.mlp", "1.attention", 0])
    assert list(acts) == [1, -2, "0.mlp", "1.attention", 0]
    assert torch.equal(acts[-2], acts[0])
    assert acts["0.mlp"].shape == acts[0].shape
    assert acts.attention_mask.shape == acts.input_ids.shape


def test_early_exit_skips_later_blocks(analyzer):
    an, names = analyzer
    adapter = an.loaded_models[names["gpt2"]]
    calls = []
    h = adapter.model.transformer.h[1].register_forward_hook(lambda *a: calls.append(1))
    try:
        acts = an.extract_activations(names["gpt2"], TEXTS, [0])
    finally:
        h.remove()
    assert acts.stopped_early and calls == []


@pytest.mark.parametrize("kind", ["gpt2", "bert", "t5", "bart", "albert"])
def test_hooks_removed_after_success_and_failure(analyzer, kind):
    an, names = analyzer
    model = an.loaded_models[names[kind]].model
    an.extract_activations(names[kind], TEXTS, [0])  # transformers installs hooks of its own on first call
    before = hook_count(model)
    an.extract_activations(names[kind], TEXTS, [0, -1])
    an.get_attention_patterns(names[kind], TEXTS, [0])
    with pytest.raises(InvalidLayerError):
        an.extract_activations(names[kind], TEXTS, [0, 99])
    assert hook_count(model) == before


def test_hooks_removed_when_forward_raises(analyzer):
    an, names = analyzer
    adapter = an.loaded_models[names["gpt2"]]
    before = hook_count(adapter.model)

    def boom(*_):
        raise RuntimeError("injected")

    h = adapter.model.transformer.h[0].attn.register_forward_hook(boom)
    try:
        with pytest.raises(Exception, match="injected"):
            adapter.extract_activations(TEXTS, [1])
    finally:
        h.remove()
    assert hook_count(adapter.model) == before
    assert StopForward is not None


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama", "distilbert"])
def test_attention_rows_sum_to_one_and_causal(analyzer, kind):
    an, names = analyzer
    adapter = an.loaded_models[names[kind]]
    impl = adapter.model.config._attn_implementation
    attn = an.get_attention_patterns(names[kind], TEXTS, [0, -1])
    assert adapter.model.config._attn_implementation == impl  # restored
    cfg = adapter.model.config
    heads = cfg.num_attention_heads
    mask = attn.attention_mask.bool()
    for layer in (0, -1):
        a = attn[layer]
        assert a.shape == (2, heads, mask.shape[1], mask.shape[1])
        for b in range(2):
            n = int(mask[b].sum())
            rows = a[b, :, :n, :n].sum(-1)
            assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
            if kind in ("gpt2", "llama"):
                assert torch.all(torch.triu(a[b, :, :n, :n], diagonal=1) == 0)


def test_gqa_expanded_per_head(analyzer):
    an, names = analyzer
    cfg = an.loaded_models[names["llama"]].model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads
    attn = an.get_attention_patterns(names["llama"], TEXTS, [0])
    assert attn[0].shape[1] == cfg.num_attention_heads


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_encoder_decoder_stacks(analyzer, kind):
    an, names = analyzer
    adapter = an.loaded_models[names[kind]]
    acts = an.extract_activations(names[kind], TEXTS, [0, "decoder.1", "decoder.0.cross_attention"])
    inputs = adapter.tokenize(TEXTS)
    with torch.no_grad():
        enc = adapter.model.get_encoder()(**inputs, output_hidden_states=True).hidden_states
    assert torch.allclose(acts[0], enc[1], atol=1e-5)
    assert acts["decoder.1"].shape[:2] == (2, 1)  # one decoder position: the start token
    attn = an.get_attention_patterns(names[kind], TEXTS, [0, "decoder.0", "decoder.1.cross_attention"])
    seq = inputs["input_ids"].shape[1]
    assert attn["decoder.1.cross_attention"].shape[-2:] == (1, seq)
    rows = attn["decoder.1.cross_attention"].sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    assert attn[0].shape[-2:] == (seq, seq)


def test_errors_are_typed(analyzer):
    an, names = analyzer
    with pytest.raises(ModelNotLoadedError):
        an.extract_activations("not-loaded", TEXTS, [0])
    for bad in ([], [2.5], [True], ["decoder.0"], [12], [-13], "x.y"):
        with pytest.raises(InvalidLayerError):
            an.extract_activations(names["gpt2"], TEXTS, bad)


def test_roberta_position_table_limits_tokens_before_torch_does(tmp_path):
    """RoBERTa counts positions from padding_idx + 1: a 40-row table takes 38 tokens, and a longer text is
    truncated with a warning instead of an index error inside the embedding."""
    from transformers import AutoModelForMaskedLM

    from adapters import MultiModelAnalyzer
    from adapters.zoo import save_tiny_checkpoint, tiny_config, word_tokenizer

    tok = word_tokenizer(True)
    model = AutoModelForMaskedLM.from_config(tiny_config("roberta", vocab_size=len(tok), max_position_embeddings=40))
    path = save_tiny_checkpoint(model, tok, tmp_path / "roberta")
    an = MultiModelAnalyzer()
    name = str(path)
    adapter = an.load_model(name)
    assert adapter.max_positions() == 40 - model.config.pad_token_id - 1
    with pytest.warns(UserWarning, match="truncated"):
        acts = an.extract_activations(name, [" ".join(["hello"] * 60)], [-1])
    assert acts[-1].shape[1] == adapter.max_positions()
    an.unload_model(name)
