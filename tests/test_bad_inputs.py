"""Catalogue of bad inputs: each gets a typed NeuronMapError naming what was wrong, and leaves the model as
it was (no hooks left behind, attention implementation unchanged, same results afterwards).

Every case records the error it got; the last test renders the catalogue (docs/bad-inputs.md) from those
observations and fails when the committed file differs: `NM_WRITE_DOCS=1 pytest tests/test_bad_inputs.py`
rewrites it."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from adapters import (
    DetectionError,
    ExtractionError,
    InvalidInputError,
    InvalidLayerError,
    ModelNotLoadedError,
    ModelSourceError,
    MultiModelAnalyzer,
    NeuronMapError,
    OutOfMemoryError,
    UniversalModelRegistry,
    UnknownModelError,
    UnsafeWeightsError,
    sources,
)

TEXTS = ["hello world", "the cat sat on the mat"]
DOC = Path(__file__).resolve().parent.parent / "docs" / "bad-inputs.md"
OBSERVED: dict[str, tuple[str, str, str, str]] = {}  # case id -> (group, call, error class, message)


BASETEMP: list[str] = []  # the session's temporary root, set by the autouse fixture below


@pytest.fixture(scope="module", autouse=True)
def _basetemp(tmp_path_factory):
    BASETEMP[:] = [str(tmp_path_factory.getbasetemp())]


def _normalise(text: str) -> str:
    """Messages without what changes between sessions: temporary paths, the registered and loaded models."""
    for root in BASETEMP:
        text = re.sub(re.escape(root) + r"/([A-Za-z_]+?)\d*/", r"<tmp>/\1/", text)
    text = re.sub(r"(;|,)? registered: .*", r"\1 registered: …", text, flags=re.S)
    text = re.sub(r"\(loaded: [^)]*\)", "(loaded: …)", text)
    text = " ".join(text.split())
    return text if len(text) <= 220 else text[:219] + "…"


def _observe(case: str, group: str, call: str, exc: BaseException) -> None:
    OBSERVED[case] = (group, _normalise(call), type(exc).__name__, _normalise(str(exc)))


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
    ("texts-set", "gpt2", ({"hello"}, [0]), InvalidInputError, "set"),
    ("texts-nested-list", "gpt2", ([["hello"]], [0]), InvalidInputError, "texts[0] is list"),
    ("texts-mixed-types", "bert", (["hello", 3.5], [0]), InvalidInputError, "texts[1]"),
    ("layer-nan", "gpt2", (TEXTS, [float("nan")]), InvalidLayerError, "nan"),
    ("layer-huge-int", "gpt2", (TEXTS, [2**70]), InvalidLayerError, "out of range"),
    ("layer-name-out-of-range", "gpt2", (TEXTS, ["3"]), InvalidLayerError, "'3' is out of range"),
    ("layer-negative-name-out-of-range", "bert", (TEXTS, ["-3.mlp"]), InvalidLayerError, "out of range"),
    ("layer-twice", "gpt2", (TEXTS, [0, 0]), InvalidLayerError, "twice"),
    ("layer-unknown-sublayer", "gpt2", (TEXTS, ["1.attn"]), InvalidLayerError, "1.attn"),
    ("layer-empty-name", "t5", (TEXTS, [""]), InvalidLayerError, "''"),
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
    _observe(case, "extract_activations / get_attention_patterns", f"({kind}, {args[0]!r}, {args[1]!r})", info.value)
    with pytest.raises(type(info.value)):  # the same refusal from the attention path
        an.get_attention_patterns(names[kind], *args)
    assert _hooks(adapter.model) == hooks
    assert adapter.model.config._attn_implementation == impl
    after = an.extract_activations(names[kind], TEXTS, [0])
    assert torch.equal(before[0], after[0])


def test_attention_of_an_mlp_is_refused(loaded):
    an, names = loaded
    with pytest.raises(InvalidLayerError, match="MLP") as info:
        an.get_attention_patterns(names["gpt2"], TEXTS, ["0.mlp"])
    _observe("attention-of-an-mlp", "get_attention_patterns", f"(gpt2, {TEXTS!r}, ['0.mlp'])", info.value)


@pytest.mark.parametrize("name", ["not-loaded", None, 3])
def test_unloaded_model_is_typed(loaded, name):
    an, _ = loaded
    with pytest.raises(ModelNotLoadedError, match="not loaded") as info:
        an.extract_activations(name, TEXTS, [0])
    case = {"not-loaded": "model-not-loaded", None: "model-name-none", 3: "model-name-int"}[name]
    _observe(case, "extract_activations / get_attention_patterns",
             f"({name!r}, {TEXTS!r}, [0])", info.value)
    with pytest.raises(ModelNotLoadedError):
        an.get_attention_patterns(name, TEXTS, [0])


def test_input_longer_than_positions_is_truncated_with_a_warning(loaded):
    an, names = loaded
    adapter = an.loaded_models[names["gpt2"]]
    limit = adapter.max_positions()
    long_text = " ".join(["hello"] * (limit + 20))
    with pytest.warns(UserWarning, match="truncated") as caught:
        acts = an.extract_activations(names["gpt2"], [long_text], [0])
    assert acts[0].shape[1] == limit
    warning = next(w.message for w in caught if "truncated" in str(w.message))
    _observe("input-longer-than-positions", "extract_activations (truncated with a warning, not refused)",
             f"(gpt2, ['hello ' * {limit + 20}], [0])", warning)


FAULTS = {  # what the block raises -> what the caller gets
    "fault": (lambda: RuntimeError("injected fault in block 0"), ExtractionError,
              "RuntimeError: injected fault in block 0"),
    "oom": (lambda: torch.OutOfMemoryError("injected: tried to allocate 8 GiB"), OutOfMemoryError,
            "out of memory during the forward"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("method", ["extract_activations", "get_attention_patterns"])
@pytest.mark.parametrize("kind", ["gpt2", "bert", "t5"])
def test_fault_mid_forward_leaves_the_model_as_it_was(loaded, monkeypatch, kind, method, fault):
    """An exception inside the forward (after hooks are in place and, for attention, eager attention is
    switched on) surfaces as ExtractionError naming it — OutOfMemoryError when it is one; hooks and the
    attention implementation are restored."""
    an, names = loaded
    adapter = an.loaded_models[names[kind]]
    before = getattr(an, method)(names[kind], TEXTS, [0])
    hooks, impl = _hooks(adapter.model), adapter.model.config._attn_implementation
    make, error, text = FAULTS[fault]

    def broken(*_a, **_k):
        raise make()

    block = adapter.mapping.stacks[adapter.mapping.primary].modules[0]
    monkeypatch.setattr(block, "forward", broken)  # runs after the capture hooks' pre-hooks
    with pytest.raises(error, match=text) as info:
        getattr(an, method)(names[kind], TEXTS, [0])
    _observe(f"{fault}-mid-forward-{kind}-{method}", method,
             f"({kind}, TEXTS, [0]) with a forward that raises {type(make()).__name__}", info.value)
    monkeypatch.undo()
    assert _hooks(adapter.model) == hooks
    assert adapter.model.config._attn_implementation == impl
    assert torch.equal(before[0], getattr(an, method)(names[kind], TEXTS, [0])[0])


@pytest.fixture
def offline(monkeypatch):
    """No network and an empty Hugging Face cache, whatever this machine has."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sources, "in_hf_cache", lambda _repo: False)
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
    ("hub-only-offline", lambda d: "gpt2", {"source": "hub"}, ModelSourceError, "not reachable"),
    ("config-not-an-object", lambda d: str(d["config_list"]), {}, ModelSourceError, "model_type"),
    ("config-unknown-model-type", lambda d: str(d["config_type"]), {}, ModelSourceError, "no-such-type"),
    ("config-wrong-value-type", lambda d: str(d["config_value"]), {}, ModelSourceError, "n_embd"),
    ("config-shape-mismatch", lambda d: str(d["config_shape"]), {}, ModelSourceError, "mismatched"),
    ("weights-truncated", lambda d: str(d["weights_cut"]), {}, ModelSourceError, "cannot load"),
    ("weights-empty-file", lambda d: str(d["weights_empty"]), {}, ModelSourceError, "cannot load"),
    ("no-tokenizer-files", lambda d: str(d["no_tokenizer"]), {}, ModelSourceError, "no tokenizer files"),
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
    good_config = json.loads((good / "config.json").read_text())
    for key, change in (("config_type", {"model_type": "no-such-type"}), ("config_value", {"n_embd": "wide"}),
                        ("config_shape", {"n_embd": 64})):
        d[key] = _copy(good, root / key)
        (d[key] / "config.json").write_text(json.dumps({**good_config, **change}))
    d["config_list"] = _copy(good, root / "config_list")
    (d["config_list"] / "config.json").write_text("[1, 2]")
    weights = (good / "model.safetensors").read_bytes()
    d["weights_cut"] = _copy(good, root / "weights_cut")
    (d["weights_cut"] / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    d["weights_empty"] = _copy(good, root / "weights_empty")
    (d["weights_empty"] / "model.safetensors").write_bytes(b"")
    d["no_tokenizer"] = _copy(good, root / "no_tokenizer")
    for f in d["no_tokenizer"].iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            f.unlink()
    return d


@pytest.mark.parametrize(("case", "name", "options", "error", "text"), LOAD_CASES, ids=[c[0] for c in LOAD_CASES])
def test_load_bad_input_is_typed(offline, broken_dirs, case, name, options, error, text):
    an = MultiModelAnalyzer()
    with pytest.raises(error) as info:
        an.load_model(name(broken_dirs), **options)
    assert text in str(info.value), str(info.value)
    assert not an.loaded_models
    shown = "" if case == "none-name" else repr(name(broken_dirs))
    _observe(case, "load_model", f"({shown or 'None'}{''.join(f', {k}={v!r}' for k, v in options.items())})",
             info.value)


def test_cuda_without_a_gpu_is_typed(tiny_dirs):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: asking for cuda is valid here")
    with pytest.raises(InvalidInputError, match="CUDA is not available"):
        MultiModelAnalyzer().load_model(str(tiny_dirs["gpt2"]), device="cuda")


REGISTRY_CASES = [
    # (id, registry method, argument, expected error, text the message must contain)
    ("config-of-unknown", "get_model_config", "no-such-model", UnknownModelError, "no-such-model"),
    ("config-of-empty", "get_model_config", "", InvalidInputError, "non-empty"),
    ("config-of-non-string", "get_model_config", 12, InvalidInputError, "12"),
    ("detect-int", "detect_model_family", 42, DetectionError, "int"),
    ("detect-empty-dict", "detect_model_family", {"foo": 1}, DetectionError, "foo"),
    ("detect-gibberish-name", "detect_model_family", "qwzx-9000", DetectionError, "qwzx-9000"),
    ("select-bad-family", "select", "family:nope", InvalidInputError, "nope"),
    ("select-unknown-model", "select", "gpt2,nope", UnknownModelError, "nope"),
]


@pytest.mark.parametrize(("case", "method", "arg", "error", "text"), REGISTRY_CASES, ids=[c[0] for c in REGISTRY_CASES])
def test_registry_bad_input_is_typed(case, method, arg, error, text):
    with pytest.raises(error) as info:
        getattr(UniversalModelRegistry(), method)(arg)
    assert text in str(info.value), str(info.value)
    _observe(case, f"registry.{method}", f"({arg!r})", info.value)


def test_unreadable_registry_file_is_typed(tmp_path):
    bad = tmp_path / "models.toml"
    bad.write_text("[[model]\nname = ")
    with pytest.raises(InvalidInputError, match=r"models\.toml") as info:
        UniversalModelRegistry(bad)
    _observe("registry-file-not-toml", "UniversalModelRegistry", "('<tmp>/models.toml' holding broken TOML)",
             info.value)


def test_adapter_direct_load_refuses_remote_code(broken_dirs):
    from adapters import GPTModelAdapter

    with pytest.raises(UnsafeWeightsError, match="trust_remote_code=True"):
        GPTModelAdapter().load_model(str(broken_dirs["remote"]))


GROUPS = ("load_model", "registry.", "UniversalModelRegistry", "extract_activations / get_attention_patterns",
          "get_attention_patterns", "extract_activations")


def _render_catalogue() -> str:
    """docs/bad-inputs.md: every case this module ran, the error class it got and the message, as observed."""
    from harness.render import md_text

    def order(item: tuple[str, tuple[str, str, str, str]]) -> tuple[int, str, str]:
        group = item[1][0]
        return next(i for i, g in enumerate(GROUPS) if group.startswith(g)), group, item[0]

    rows = sorted(OBSERVED.items(), key=order)
    out = ["# Bad-input catalogue", "",
           "Generated by `NM_WRITE_DOCS=1 pytest tests/test_bad_inputs.py` from the cases that test module runs; "
           "the module fails when this file differs from what it observes. Every error is a `NeuronMapError` "
           "subclass (the one long-input row is a warning: such texts are truncated, not refused). After each "
           "failure the tests check that no hook and no attention-implementation switch is left behind and that "
           "the model returns the same activations as before. Paths under the test session's temporary folder "
           "read `<tmp>/`. Messages that quote transformers are as the release below words them; on other "
           "releases of the supported range the cases and error classes are the same (the test checks that).",
           "", f"{len(rows)} cases, observed with transformers {transformers.__version__}.", "",
           "| # | case | call | arguments | error | message |", "|---|---|---|---|---|---|"]
    for n, (case, (group, call, error, message)) in enumerate(rows, 1):
        call_md = call.replace("`", "'").replace("|", "\\|")
        message_md = md_text(message).replace("|", "\\|")
        out.append(f"| {n} | {case} | {group} | `{call_md}` | `{error}` | {message_md} |")
    return "\n".join(out) + "\n"


def test_catalogue_doc_is_current():
    """Runs last: the committed catalogue matches what the cases above observed (all of them, >= 30)."""
    expected = len(EXTRACT_CASES) + len(LOAD_CASES) + len(REGISTRY_CASES) + 3 + 1 + 1 + 6 * len(FAULTS) + 1
    if len(OBSERVED) < expected:
        pytest.skip(f"{len(OBSERVED)} of {expected} cases ran: the catalogue is rendered from the whole module")
    assert len(OBSERVED) == expected >= 30
    text = _render_catalogue()
    if os.environ.get("NM_WRITE_DOCS"):
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text, encoding="utf-8")
    assert DOC.is_file(), "docs/bad-inputs.md is missing: NM_WRITE_DOCS=1 pytest tests/test_bad_inputs.py writes it"
    committed = DOC.read_text(encoding="utf-8")
    if f"observed with transformers {transformers.__version__}." not in committed:
        # another release words its own messages differently: the cases and error classes must still agree
        assert _without_messages(committed) == _without_messages(text), (
            "the cases or error classes differ from docs/bad-inputs.md on transformers "
            f"{transformers.__version__}")
        return
    assert committed == text, (
        "docs/bad-inputs.md is out of date: NM_WRITE_DOCS=1 pytest tests/test_bad_inputs.py rewrites it")


def _without_messages(doc: str) -> list[str]:
    """The table rows of a catalogue without their message column."""
    return [row.rsplit(" | ", 1)[0] for row in doc.splitlines() if row.startswith("| ") and row[2:3].isdigit()]
