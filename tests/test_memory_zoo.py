"""Streamed zoo builds (issue 4): the init rule matches transformers' own, shards are valid safetensors,
reduced-depth variants share the full model's tensors, and the build never holds the whole model."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import transformers
from safetensors import safe_open

from adapters import MultiModelAnalyzer, compat, memory, zoo
from adapters.registry import ModelConfig
from harness.memory import PeakProbe


@pytest.mark.parametrize(("model_type", "arch"), [("gptj", "GPTJForCausalLM"), ("llama", "LlamaForCausalLM")])
def test_init_rule_matches_transformers_init(model_type, arch):
    """zeros, ones or normal(0, initializer_range) for each tensor, as transformers' from_config init gives."""
    cfg = zoo.tiny_config(model_type, vocab_size=1000, hidden_size=64, n_embd=64, intermediate_size=128)
    torch.manual_seed(0)
    real = getattr(transformers, arch)(cfg).state_dict()
    specs = zoo.tensor_specs(memory.meta_model(cfg, getattr(transformers, arch), torch.float32), cfg)
    assert {s.name for s in specs} == set(real)
    for spec in specs:
        t = real[spec.name]
        if spec.rule == "zeros":
            assert (t == 0).all(), spec
        elif spec.rule == "ones":
            assert (t == 1).all(), spec
        else:
            assert spec.std == cfg.initializer_range
            assert abs(t.std().item() - spec.std) < 0.15 * spec.std, spec
            assert abs(t.mean().item()) < 0.01, spec


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_streamed_writer_is_valid_safetensors(tmp_path, dtype):
    specs = [zoo.TensorSpec("a.weight", (7, 5), "normal", 0.02), zoo.TensorSpec("a.bias", (7,), "zeros"),
             zoo.TensorSpec("n.weight", (3,), "ones"), zoo.TensorSpec("e.weight", (4, 2), "normal", 1.0, zero_row=1)]
    zoo.write_safetensors_streamed(tmp_path / "x.safetensors", specs, dtype)
    with safe_open(tmp_path / "x.safetensors", framework="pt") as f:
        assert list(f.keys()) == sorted(s.name for s in specs)
        for spec in specs:
            t = f.get_tensor(spec.name)
            assert t.dtype == dtype and tuple(t.shape) == spec.shape
            assert torch.equal(t, zoo.tensor_value(spec, dtype))
        assert f.get_tensor("a.bias").eq(0).all() and f.get_tensor("n.weight").eq(1).all()
        assert f.get_tensor("e.weight")[1].eq(0).all() and f.get_tensor("e.weight")[0].ne(0).all()


def test_tensor_seed_depends_on_name_only():
    a = zoo.tensor_value(zoo.TensorSpec("x.weight", (16,), "normal", 1.0), torch.float32)
    b = zoo.tensor_value(zoo.TensorSpec("x.weight", (16,), "normal", 1.0), torch.float32)
    c = zoo.tensor_value(zoo.TensorSpec("y.weight", (16,), "normal", 1.0), torch.float32)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_shard_plan_groups_consecutive_tensors():
    specs = [zoo.TensorSpec(f"t{i}", (10,), "zeros") for i in range(7)]  # 40 bytes each in float32
    shards = zoo.shard_plan(specs, 4, shard_bytes=100)
    assert [len(s) for s in shards] == [2, 2, 2, 1]
    assert [s.name for shard in shards for s in shard] == [s.name for s in specs]
    big = [zoo.TensorSpec("big", (100,), "zeros"), zoo.TensorSpec("small", (1,), "zeros")]
    assert [len(s) for s in zoo.shard_plan(big, 4, shard_bytes=100)] == [1, 1]


def _large_llama(name: str = "test/large-llama", **sizes: int) -> ModelConfig:
    facts = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 4, "vocab_size": 500, "max_position_embeddings": 64, **sizes}
    return ModelConfig(name=name, family=__import__("adapters").ModelFamily.LLAMA, model_type="llama",
                       num_layers=facts["num_hidden_layers"], hidden_size=facts["hidden_size"], num_heads=4,
                       architecture="LlamaForCausalLM", large=True, hf_config=facts)


@pytest.fixture
def zoo_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURONMAP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_streamed_build_is_a_sharded_hub_checkpoint(zoo_cache, monkeypatch):
    monkeypatch.setattr(zoo, "SHARD_BYTES", 60_000)
    config = _large_llama()
    assert zoo.is_streamed(config)
    ckpt = zoo.ensure_checkpoint(config, progress=False)
    files = sorted(p.name for p in ckpt.path.glob("*.safetensors"))
    assert len(files) == ckpt.provenance["shards"] > 1
    index = json.loads((ckpt.path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(files)
    assert index["metadata"]["total_size"] == ckpt.provenance["total_bytes"]
    assert "per-tensor-seeded" in ckpt.provenance["init"] and ckpt.provenance["storage_dtype"] == "float32"
    assert ckpt.provenance["build"]["method"].startswith("streamed")
    model = transformers.LlamaForCausalLM.from_pretrained(ckpt.path, **compat.dtype_kwargs(torch.float32))
    meta = memory.meta_model(model.config, transformers.LlamaForCausalLM, torch.float32)
    for spec in zoo.tensor_specs(meta, model.config):
        assert torch.equal(model.state_dict()[spec.name], zoo.tensor_value(spec, torch.float32)), spec.name
    # the lock/marker scheme: a second call finds it, builds nothing
    again = zoo.ensure_checkpoint(config, progress=False)
    assert again.path == ckpt.path and again.provenance == ckpt.provenance


def test_storage_dtype_and_depth_prefix(zoo_cache, monkeypatch):
    config = _large_llama("test/half-llama")
    monkeypatch.setitem(zoo.STORAGE_DTYPES, config.name, "float16")
    full = zoo.ensure_checkpoint(config, progress=False)
    short = zoo.ensure_checkpoint(config, depth=2, progress=False)
    assert full.path != short.path and full.provenance["storage_dtype"] == "float16"
    assert json.loads((full.path / "config.json").read_text())[compat.DTYPE_KEYWORD] == "float16"
    with safe_open(full.path / "model.safetensors", "pt") as f, safe_open(short.path / "model.safetensors", "pt") as g:
        short_keys = g.keys()
        assert set(short_keys) < set(f.keys())
        for key in short_keys:  # embeddings, head and the first blocks: the same tensors
            assert f.get_tensor(key).dtype == torch.float16
            assert torch.equal(f.get_tensor(key), g.get_tensor(key)), key


def test_reduced_depth_variant_gives_the_full_models_first_layers(zoo_cache):
    config = _large_llama("test/prefix-llama")
    full = zoo.ensure_checkpoint(config, progress=False)
    short = zoo.ensure_checkpoint(config, depth=1, progress=False)
    from tests.tiny import word_tokenizer

    for ckpt in (full, short):
        word_tokenizer(False).save_pretrained(ckpt.path)
    an = MultiModelAnalyzer()
    a = an.load_model(str(full.path)).extract_activations(["hello world"], [0])
    b = an.load_model(str(short.path)).extract_activations(["hello world"], [0])
    an.unload_all()
    assert torch.equal(a[0], b[0])


def test_streamed_build_never_holds_the_model(zoo_cache):
    """~230 MB of weights, largest tensor 65 MB: the build's peak stays near one tensor, not the model."""
    config = _large_llama("test/mid-llama", hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                          vocab_size=32000, num_attention_heads=8, num_key_value_heads=8)
    config = dataclasses.replace(config, num_heads=8)
    with PeakProbe() as probe:
        ckpt = zoo.ensure_checkpoint(config, progress=False)
    total = ckpt.provenance["total_bytes"]
    largest = 32000 * 512 * 4
    assert total > 3 * largest
    assert probe.delta_bytes < 2 * largest + 64_000_000, (probe.delta_bytes, total)
