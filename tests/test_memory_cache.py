"""Model cache and batch sizing (issue 4): models within a memory budget, least recently used evicted,
reuse without reload; the largest batch that fits a budget, confirmed by measurement, backing off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adapters import InvalidInputError, MultiModelAnalyzer, OutOfMemoryError, UniversalModelAdapter, memory
from adapters.base import UniversalModelAdapter as Base

KINDS = ("gpt2", "bert", "llama")
SIZES: dict[str, int] = {}  # resident bytes of each tiny checkpoint, filled by the `sizes` fixture


def _expected_bytes(path: Path) -> int:
    """What a loaded checkpoint occupies, counted independently of the code under test: the tensors saved in
    its safetensors file plus the buffers the model class builds but never saves (4.x GPT-2 keeps a causal
    mask per layer that 5.x dropped, so the figure depends on the release)."""
    import transformers
    from safetensors.torch import load_file

    saved = sum(t.numel() * t.element_size() for t in load_file(path / "model.safetensors").values())
    config = transformers.AutoConfig.from_pretrained(path)
    model = getattr(transformers, config.architectures[0]).from_pretrained(path)
    extra = {id(b): b.numel() * b.element_size() for m in model.modules()
             for n, b in m._buffers.items() if b is not None and n in m._non_persistent_buffers_set}
    return saved + sum(extra.values())


@pytest.fixture(autouse=True)
def sizes(tiny_dirs):
    if not SIZES:
        SIZES.update({k: _expected_bytes(Path(tiny_dirs[k])) for k in KINDS})
    return SIZES


@pytest.fixture(autouse=True)
def no_full_collection(monkeypatch):
    """These tests check bookkeeping, not reclamation (suites/test_reclamation.py measures that): skip the
    full gc + malloc_trim of every unload, which costs ~0.3 s each in a process as big as pytest's."""
    monkeypatch.setattr(memory, "release_memory", lambda: None)


@pytest.fixture
def names(tiny_dirs):
    return {k: str(tiny_dirs[k]) for k in KINDS}


@pytest.fixture
def loads(monkeypatch):
    """Count real loads (from_pretrained reads) through the adapter."""
    counter = {"n": 0}
    original = Base.load_model

    def counting(self, *args, **kwargs):
        counter["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Base, "load_model", counting)
    return counter


def budget_gb(*kinds: str) -> float:
    return (sum(SIZES[k] for k in kinds) + 1000) / memory.GB


def test_footprints_are_measured(names):
    an = MultiModelAnalyzer(memory_budget_gb=1.0)
    for kind, size in SIZES.items():
        an.load_model(names[kind])
        assert an.footprints[names[kind]] == size
    assert an.cache_used_bytes() == sum(SIZES.values())
    an.unload_all()
    assert an.cache_used_bytes() == 0 and an.footprints == {}


def test_least_recently_used_is_evicted(names, loads):
    an = MultiModelAnalyzer(memory_budget_gb=budget_gb("gpt2", "bert"))
    an.load_model(names["gpt2"])
    an.load_model(names["bert"])
    an.extract_activations(names["gpt2"], ["hello world"], [0])  # gpt2 is now the most recently used
    evicted = an.loaded_models[names["bert"]]
    an.load_model(names["llama"])
    assert list(an.loaded_models) == [names["gpt2"], names["llama"]]
    assert an.cache_stats["evicted"] == [names["bert"]]
    assert evicted.model is None  # unloaded, not just forgotten
    assert an.cache_used_bytes() <= an.memory_budget_bytes
    assert loads["n"] == 3
    an.unload_all()


def test_reuse_without_reload(names, loads):
    an = MultiModelAnalyzer(memory_budget_gb=budget_gb("gpt2", "bert"))
    first = an.load_model(names["gpt2"])
    an.load_model(names["bert"])
    again = an.load_model(names["gpt2"])
    assert again is first and loads["n"] == 2 and an.cache_stats["reuses"] == 1
    assert list(an.loaded_models)[-1] == names["gpt2"]  # reuse counts as use
    an.load_model(names["llama"])  # now bert is the least recently used
    assert names["bert"] not in an.loaded_models and names["gpt2"] in an.loaded_models
    an.unload_all()


def test_a_model_bigger_than_the_budget_is_refused_without_evicting(names):
    an = MultiModelAnalyzer(memory_budget_gb=budget_gb("llama"))
    an.load_model(names["llama"])
    with pytest.raises(OutOfMemoryError, match="memory budget"):
        an.load_model(names["gpt2"])
    assert list(an.loaded_models) == [names["llama"]]
    an.unload_all()


def test_without_budget_nothing_is_evicted(names):
    an = MultiModelAnalyzer()
    for kind in SIZES:
        an.load_model(names[kind])
    assert len(an.loaded_models) == 3 and an.cache_stats["evicted"] == []
    usage = an.get_memory_usage()
    assert usage["model_cache"]["budget_gb"] is None
    assert usage["model_cache"]["loads"] == 3
    assert usage["loaded_models"] == [names[k] for k in SIZES]
    an.unload_all()


def test_usage_reports_the_cache(names):
    an = MultiModelAnalyzer(memory_budget_gb=budget_gb("gpt2", "bert"))
    an.load_model(names["gpt2"])
    an.load_model(names["bert"])
    an.load_model(names["llama"])
    cache = an.get_memory_usage()["model_cache"]
    byte = 1 / memory.GB  # usage figures are rounded to whole bytes
    assert cache["budget_gb"] == pytest.approx(budget_gb("gpt2", "bert"), abs=byte)
    assert cache["used_gb"] == pytest.approx((SIZES["bert"] + SIZES["llama"]) / memory.GB, abs=byte)
    assert cache["evicted"] == [names["gpt2"]] and set(cache["models_gb"]) == {names["bert"], names["llama"]}
    an.unload_all()


@pytest.mark.parametrize("bad", [0, -1, "1GB", True])
def test_bad_budgets_are_typed_errors(bad):
    with pytest.raises(InvalidInputError):
        MultiModelAnalyzer(memory_budget_gb=bad)


# ---- batch sizing ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2_adapter(tiny_dirs):
    adapter = UniversalModelAdapter()
    adapter.load_model(str(tiny_dirs["gpt2"]))
    yield adapter
    adapter.unload()


def test_suggested_batch_grows_with_the_budget(gpt2_adapter):
    weights = gpt2_adapter.weights_bytes()
    assert weights == SIZES["gpt2"]
    per = memory.activation_bytes_per_sample({"hidden_size": 32, "intermediate_size": 128, "num_heads": 4}, 64,
                                             torch.float32, 1)
    small = gpt2_adapter.suggest_batch_size(weights + memory.FORWARD_FIXED_BYTES + 3 * per, 64)
    large = gpt2_adapter.suggest_batch_size(weights + memory.FORWARD_FIXED_BYTES + 30 * per, 64)
    assert small == 3 and large == 30
    assert gpt2_adapter.suggest_batch_size("1GB", 16) >= gpt2_adapter.suggest_batch_size("1GB", 64)


def test_no_batch_fits_is_out_of_memory(gpt2_adapter):
    with pytest.raises(OutOfMemoryError, match="does not fit one text"):
        gpt2_adapter.suggest_batch_size(1000, 64)


@pytest.mark.parametrize("seq_len", [0, -3, 1.5, 10_000])
def test_bad_sequence_lengths(gpt2_adapter, seq_len):
    with pytest.raises(InvalidInputError):
        gpt2_adapter.suggest_batch_size("1GB", seq_len)


def test_fit_is_confirmed_by_measurement(gpt2_adapter):
    fit = gpt2_adapter.fit_batch_size("200MB", 32)
    assert fit["batch_size"] >= 1 and fit["measured_bytes"] <= fit["budget_bytes"]
    assert fit["tries"][-1]["batch_size"] == fit["batch_size"]


def test_fit_backs_off_on_out_of_memory(gpt2_adapter, monkeypatch):
    real = Base.extract_activations

    def limited(self, texts, layers):
        if len(texts) > 5:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return real(self, texts, layers)

    monkeypatch.setattr(Base, "extract_activations", limited)
    monkeypatch.setattr(memory, "largest_batch", lambda *a, **k: 40)
    fit = gpt2_adapter.fit_batch_size("1GB", 16)
    assert [t["batch_size"] for t in fit["tries"]] == [40, 20, 10, 5]
    assert all("out_of_memory" in t for t in fit["tries"][:3]) and fit["batch_size"] == 5


def test_fit_backs_off_when_the_measurement_exceeds_the_budget(gpt2_adapter, monkeypatch):
    seen = {"batch": 0}

    def tracking(self, texts, layers):
        seen["batch"] = len(texts)

    monkeypatch.setattr(Base, "extract_activations", tracking)
    # each text "measures" 10 MB: the measurement, not the estimate, decides
    monkeypatch.setattr(memory, "measure_peak", lambda fn, device="cpu": (fn(), 10_000_000 * seen["batch"]))
    monkeypatch.setattr(memory, "largest_batch", lambda *a, **k: 8)
    budget = SIZES["gpt2"] + 35_000_000  # 3 texts fit, 8 do not
    fit = gpt2_adapter.fit_batch_size(budget, 16)
    assert fit["tries"][0]["batch_size"] == 8 and fit["tries"][0]["measured_bytes"] > budget
    assert fit["batch_size"] == 3 and fit["measured_bytes"] <= budget
