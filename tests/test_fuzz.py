"""Property-based fuzzing of extract_activations and get_attention_patterns arguments (hypothesis).

Property: a call either returns one [batch, seq, ...] tensor per requested layer in request order, or raises
a NeuronMapError — never another exception type — and it leaves no hook behind.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import MultiModelAnalyzer, NeuronMapError

EXAMPLES = 300

text = st.one_of(st.text(min_size=0, max_size=40), st.sampled_from(["hello world", "the cat", " ", "\t\n", "é"]))
texts = st.one_of(
    st.lists(text, min_size=0, max_size=4),
    text,
    st.lists(st.one_of(st.integers(), st.none(), st.binary(max_size=5)), min_size=1, max_size=3),
    st.none(), st.integers(), st.binary(max_size=5),
)
layer = st.one_of(
    st.integers(min_value=-6, max_value=6),
    st.integers(),
    st.sampled_from(["0", "-1", "1.mlp", "0.attention", "decoder.0", "decoder.1.cross_attention", "x", "1.5",
                     "encoder.0", "0.cross_attention", ""]),
    st.floats(allow_nan=True), st.booleans(), st.none(),
)
layers = st.one_of(st.lists(layer, min_size=0, max_size=4), layer)


@pytest.fixture(scope="module")
def fuzz_models(tiny_dirs):
    an = MultiModelAnalyzer()
    names = [str(tiny_dirs[k]) for k in ("gpt2", "t5")]
    for n in names:
        an.load_model(n)
    yield an, names
    an.unload_all()


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _check(an, name, method, t, ls):
    model = an.loaded_models[name].model
    before = _hooks(model)
    try:
        out = getattr(an, method)(name, t, ls)
    except NeuronMapError:
        pass
    else:
        requested = ls if isinstance(ls, list) else [ls]
        assert list(out) == requested
        batch = 1 if isinstance(t, str) else len(t)
        for value in out.values():
            assert value.shape[0] == batch and value.device.type == "cpu"
    assert _hooks(model) == before


@pytest.mark.parametrize("method", ["extract_activations", "get_attention_patterns"])
@pytest.mark.parametrize("model_index", [0, 1], ids=["gpt2", "t5"])
def test_fuzz_arguments(fuzz_models, method, model_index):
    an, names = fuzz_models
    name = names[model_index]
    an.extract_activations(name, ["hello"], [0])  # transformers' own first-call hooks

    calls = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(t=texts, ls=layers)
    def run(t, ls):
        calls.append(1)
        _check(an, name, method, t, ls)

    run()
    assert len(calls) >= EXAMPLES  # the volume really ran (hypothesis stops early on an exhausted space)
    print(f"\nfuzz {method} on {name.rsplit('/', 1)[-1]}: {len(calls)} examples")
