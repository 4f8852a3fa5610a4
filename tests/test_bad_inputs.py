"""Catalogue of bad inputs: each gets a typed NeuronMapError naming what was wrong, and leaves the model as
it was (no hooks left behind, attention implementation unchanged, same results afterwards)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from adapters import (
    DetectionError,
    InvalidInputError,
    InvalidLayerError,
    ModelNotLoadedError,
    ModelSourceError,
    MultiModelAnalyzer,
    NeuronMapError,
    UniversalModelRegistry,
    UnknownModelError,
    UnsafeWeightsError,
    sources,
)

TEXTS = ["hello world", "the cat sat on the mat"]


@pytest.fixture(scope="module")
def loaded(tiny_dirs):
    an = MultiModelAnalyzer()
    names = {k: str(tiny_dirs[k]) for k in ("gpt2", "bert", "t5")}
    for name in names.values():
        an.load_model(name)
    yield an, names
    an.unload_all()


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# (id, kind of model, call, expected error, text the message must contain)
EXTRACT_CASES = [
    ("texts-empty-list", "gpt2", ([], [0]), InvalidInputError, "empty"),
    ("texts-empty-string", "gpt2", ([""], [0]), InvalidInputError, "texts[0]"),
    ("texts-blank-string", "bert", (["hello", "   "], [0]), InvalidInputError, "texts[1]"),
    ("texts-none-item", "gpt2", ([None], [0]), InvalidInputError, "NoneType"),
    ("texts-int-items", "gpt2", ([1, 2], [0]), InvalidInputError, "int"),
    ("texts-bytes", "gpt2", (b"hello", [0]), InvalidInputError, "bytes"),
    ("texts-int", "gpt2", (42, [0]), InvalidInputError, "int"),
    ("texts-dict", "gpt2", ({"a": "b"}, [0]), InvalidInputError, "dict"),
    ("texts-none", "gpt2", (None, [0]), InvalidInputError, "NoneType"),
    ("layers-empty", "gpt2", (TEXTS, []), InvalidLayerError, "non-empty"),
    ("layers-none", "gpt2", (TEXTS, None), InvalidLayerError, "None"),
    ("layer-too-high", "gpt2", (TEXTS, [99]), InvalidLayerError, "out of range"),
    ("layer-too-low", "gpt2", (TEXTS, [-99]), InvalidLayerError, "out of range"),
    ("layer-just-past-end", "bert", (TEXTS, [2]), InvalidLayerError, "0..1"),
    ("layer-float", "gpt2", (TEXTS, [1.5]), InvalidLayerError, "float"),
    ("layer-bool", "gpt2", (TEXTS, [True]), InvalidLayerError, "bool"),
    ("layer-nested-list", "gpt2", (TEXTS, [[0]]), InvalidLayerError, "list"),
    ("layer-bad-name", "gpt2", (TEXTS, ["foo"]), InvalidLayerError, "foo"),
    ("layer-bad-component", "gpt2", (TEXTS, ["0.ffn_out"]), InvalidLayerError, "0.ffn_out"),
    ("decoder-on-decoder-only", "gpt2", (TEXTS, ["decoder.0"]), InvalidLayerError, "decoder"),
    ("cross-attention-on-encoder", "bert", (TEXTS, ["0.cross_attention"]), InvalidLayerError, "cross"),
    ("decoder-layer-out-of-range", "t5", (TEXTS, ["decoder.7"]), InvalidLayerError, "decoder"),
    ("cross-attention-in-encoder", "t5", (TEXTS, ["encoder.0.cross_attention"]), InvalidLayerError, "cross"),
]


@pytest.mark.parametrize(("case", "kind", "args", "error", "text"), EXTRACT_CASES, ids=[c[0] for c in EXTRACT_CASES])
def test_extract_bad_input_is_typed_and_harmless(loaded, case, kind, args, error, text):
    an, names = loaded
    adapter = an.loaded_models[names[kind]]
    before = an.extract_activations(names[kind], TEXTS, [0])
    hooks, impl = _hooks(adapter.model), adapter.model.config._attn_implementation
    with pytest.raises(error) as info:
        an.extract_activations(names[kind], *args)
    assert isinstance(info.value, NeuronMapError)
    assert text in str(info.value), str(info.value)
    with pytest.raises(NeuronMapError):
        an.get_attention_patterns(names[kind], *args)
    assert _hooks(adapter.model) == hooks
    assert adapter.model.config._attn_implementation == impl
    after = an.extract_activations(names[kind], TEXTS, [0])
    assert torch.equal(before[0], after[0])


def test_attention_of_an_mlp_is_refused(loaded):
    an, names = loaded
    with pytest.raises(InvalidLayerError, match="MLP"):
        an.get_attention_patterns(names["gpt2"], TEXTS, ["0.mlp"])


@pytest.mark.parametrize("name", ["not-loaded", None, 3])
def test_unloaded_model_is_typed(loaded, name):
    an, _ = loaded
    with pytest.raises(ModelNotLoadedError, match="not loaded"):
        an.extract_activations(name, TEXTS, [0])
    with pytest.raises(ModelNotLoadedError):
        an.get_attention_patterns(name, TEXTS, [0])


def test_input_longer_than_positions_is_truncated_with_a_warning(loaded):
    an, names = loaded
    adapter = an.loaded_models[names["gpt2"]]
    limit = adapter.max_positions()
    long_text = " ".join(["hello"] * (limit + 20))
    with pytest.warns(UserWarning, match="truncated"):
        acts = an.extract_activations(names["gpt2"], [long_text], [0])
    assert acts[0].shape[1] == limit


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sources.hub_reachable.cache_clear()
    yield
    sources.hub_reachable.cache_clear()


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


LOAD_CASES = [
    ("empty-name", lambda d: "", {}, InvalidInputError, "non-empty"),
    ("none-name", lambda d: None, {}, InvalidInputError, "non-empty"),
    ("unknown-name-offline", lambda d: "someone/no-such-model-xyz", {}, UnknownModelError, "hub is not reachable"),
    ("missing-path", lambda d: "/nonexistent/checkpoint", {}, ModelSourceError, "does not exist"),
    ("folder-without-config", lambda d: str(d["empty"]), {}, ModelSourceError, "config.json"),
    ("corrupt-config", lambda d: str(d["bad_config"]), {}, ModelSourceError, "config"),
    ("corrupt-weights", lambda d: str(d["bad_weights"]), {}, ModelSourceError, "cannot load"),
    ("pickle-only-weights", lambda d: str(d["pickle"]), {}, UnsafeWeightsError, "allow_pickle"),
    ("remote-code-config", lambda d: str(d["remote"]), {}, UnsafeWeightsError, "trust_remote_code=True"),
    ("bad-dtype", lambda d: str(d["good"]), {"dtype": "float8"}, InvalidInputError, "float8"),
    ("bad-device", lambda d: str(d["good"]), {"device": "tpu"}, InvalidInputError, "tpu"),
    ("bad-source", lambda d: str(d["good"]), {"source": "ftp"}, InvalidInputError, "ftp"),
]


@pytest.fixture(scope="module")
def broken_dirs(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    good = tiny_dirs["gpt2"]
    d = {"good": good, "empty": root / "empty"}
    d["empty"].mkdir()
    d["bad_config"] = _copy(good, root / "bad_config")
    (d["bad_config"] / "config.json").write_text("{ this is not json")
    d["bad_weights"] = _copy(good, root / "bad_weights")
    (d["bad_weights"] / "model.safetensors").write_bytes(b"\x00" * 64)
    d["pickle"] = _copy(good, root / "pickle")
    (d["pickle"] / "model.safetensors").unlink()
    torch.save({"x": torch.zeros(1)}, d["pickle"] / "pytorch_model.bin")
    d["remote"] = _copy(good, root / "remote")
    cfg = json.loads((d["remote"] / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel", "AutoConfig": "configuration_evil.C"}
    cfg["model_type"] = "evil-remote"
    (d["remote"] / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.mark.parametrize(("case", "name", "options", "error", "text"), LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_load_bad_input_is_typed(offline, broken_dirs, case, name, options, error, text):
    an = MultiModelAnalyzer()
    with pytest.raises(error) as info:
        an.load_model(name(broken_dirs), **options)
    assert text in str(info.value), str(info.value)
    assert not an.loaded_models


def test_cuda_without_a_gpu_is_typed(tiny_dirs):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: asking for cuda is valid here")
    with pytest.raises(InvalidInputError, match="CUDA is not available"):
        MultiModelAnalyzer().load_model(str(tiny_dirs["gpt2"]), device="cuda")


REGISTRY_CASES = [
    ("config-of-unknown", lambda r: r.get_model_config("no-such-model"), UnknownModelError, "no-such-model"),
    ("config-of-empty", lambda r: r.get_model_config(""), InvalidInputError, "non-empty"),
    ("detect-int", lambda r: r.detect_model_family(42), DetectionError, "int"),
    ("detect-empty-dict", lambda r: r.detect_model_family({"foo": 1}), DetectionError, "foo"),
    ("detect-gibberish-name", lambda r: r.detect_model_family("qwzx-9000"), DetectionError, "qwzx-9000"),
    ("select-bad-family", lambda r: r.select("family:nope"), InvalidInputError, "nope"),
    ("select-unknown-model", lambda r: r.select("gpt2,nope"), UnknownModelError, "nope"),
]


@pytest.mark.parametrize(("case", "call", "error", "text"), REGISTRY_CASES, ids=[c[0] for c in REGISTRY_CASES])
def test_registry_bad_input_is_typed(case, call, error, text):
    with pytest.raises(error) as info:
        call(UniversalModelRegistry())
    assert text in str(info.value), str(info.value)


def test_catalogue_size():
    assert len(EXTRACT_CASES) + len(LOAD_CASES) + len(REGISTRY_CASES) + 5 >= 30
    with warnings.catch_warnings():
        warnings.simplefilter("error")


def test_adapter_direct_load_refuses_remote_code(broken_dirs):
    from adapters import GPTModelAdapter

    with pytest.raises(UnsafeWeightsError, match="trust_remote_code=True"):
        GPTModelAdapter().load_model(str(broken_dirs["remote"]))
