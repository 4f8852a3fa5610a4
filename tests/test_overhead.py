"""harness.overhead on tiny models: the truncated forward really stops, the full forward runs everything,
and the ratios come out right from known timings."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch

from harness import overhead
from harness.timing import stats_from_samples
from tests.tiny import loaded_tiny

TEXTS = ["hello world", "the cat sat on the mat and the dog sat on it"]


@pytest.fixture(scope="module")
def loaded(tiny_dirs):
    with loaded_tiny(tiny_dirs, ("gpt2", "bert", "albert", "t5")) as adapters:
        yield adapters


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class Calls:
    """Counts the calls of every block of the primary stack (by layer = call order), the final norm and
    every other top-level module of interest, through hooks removed on exit."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        self.modules: Counter[str] = Counter()
        self.block_calls = 0
        self.handles: list[Any] = []

    def __enter__(self) -> Calls:
        model, mapping = self.adapter.model, self.adapter.mapping
        stack = mapping.stacks[mapping.primary]

        def on_block(_m, _a, _o):
            self.block_calls += 1

        for block in dict.fromkeys(stack.modules):
            self.handles.append(block.register_forward_hook(on_block))
        named = {"final_norm": stack.final_norm}
        if "decoder" in mapping.stacks:
            named["decoder_block_0"] = None
            self.handles.append(mapping.stacks["decoder"].modules[0].register_forward_hook(
                lambda *_: self.modules.update(["decoder_block_0"])))
        out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if out_emb is not None:
            self.handles.append(out_emb.register_forward_hook(lambda *_: self.modules.update(["head"])))
        for key, path in named.items():
            if path:
                self.handles.append(model.get_submodule(path).register_forward_hook(
                    lambda *_, k=key: self.modules.update([k])))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("kind", ["gpt2", "bert", "albert", "t5"])
def test_truncated_forward_stops_after_the_deepest_block(loaded, kind):
    adapter = loaded[kind]
    n = adapter.mapping.num_layers
    inputs = adapter.tokenize(TEXTS)
    before = hook_count(adapter.model)
    for deepest in range(n):
        with Calls(adapter) as calls:
            assert overhead.truncated_forward(adapter, inputs, deepest) is True
        assert calls.block_calls == deepest + 1, (deepest, calls.block_calls)  # later blocks never ran
        assert calls.modules["final_norm"] == 0
        assert calls.modules["head"] == 0
        assert calls.modules["decoder_block_0"] == 0
        assert hook_count(adapter.model) == before  # its one hook is gone
    with pytest.raises(ValueError):
        overhead.truncated_forward(adapter, inputs, n)


@pytest.mark.parametrize("kind", ["gpt2", "bert", "albert", "t5"])
def test_full_forward_runs_everything(loaded, kind):
    adapter = loaded[kind]
    n = adapter.mapping.num_layers
    inputs = adapter.tokenize(TEXTS)
    with Calls(adapter) as calls:
        out = overhead.full_forward(adapter, inputs)
    assert calls.block_calls == n
    if adapter.mapping.stacks[adapter.mapping.primary].final_norm:
        assert calls.modules["final_norm"] == 1
    if kind in ("gpt2", "bert", "t5"):  # LM / MLM / seq2seq heads
        assert calls.modules["head"] == 1
        assert out.logits.shape[0] == len(TEXTS)
    if kind == "t5":
        assert calls.modules["decoder_block_0"] == 1
    if kind == "gpt2":
        assert out.past_key_values is None  # use_cache=False, as the adapter runs it


def test_truncated_forward_is_the_extraction_forward(loaded):
    """Extraction of layers up to k runs exactly the blocks the truncated forward at k runs."""
    adapter = loaded["gpt2"]
    with Calls(adapter) as calls:
        acts = adapter.extract_activations(TEXTS, [0, 1])
    assert acts.stopped_early
    assert calls.block_calls == 2 and calls.modules["final_norm"] == 0 and calls.modules["head"] == 0


def test_deepest_block_and_tags(loaded):
    adapter = loaded["gpt2"]
    n = adapter.mapping.num_layers
    assert overhead.deepest_block(adapter, [0, 1]) == 1
    assert overhead.deepest_block(adapter, [-1, 0]) == n - 1
    with pytest.raises(ValueError):
        overhead.deepest_block(loaded["t5"], ["decoder.0"])
    assert overhead.layers_tag((0, 6, 11)) == "0_6_11"
    assert overhead.layers_tag((0, -1)) == "0_m1"


def test_bytes_returned_counts_every_returned_tensor(loaded):
    acts = loaded["bert"].extract_activations(TEXTS, [0, 1])
    expected = sum(t.numel() * 4 for t in acts.values()) + 2 * acts.input_ids.numel() * 8
    assert overhead.bytes_returned(acts) == expected


def test_ratio_summary_from_known_timings():
    num = stats_from_samples([2.0, 4.0, 3.0, 3.0])
    den = stats_from_samples([1.0, 2.0, 2.0, 3.0])
    out = overhead.ratio_summary(num, den)
    assert out["ratio"] == pytest.approx(3.0 / 2.0)  # ratio of medians
    assert out["ratio_of_mins"] == pytest.approx(2.0 / 1.0)
    assert out["paired"]["samples"] == pytest.approx([2.0, 2.0, 1.5, 1.0])  # round by round
    assert out["paired"]["median"] == pytest.approx(1.75)
    assert out["paired"]["iqr"] == pytest.approx(2.0 - 1.375)
    with pytest.raises(ValueError):
        overhead.ratio_summary(num, stats_from_samples([1.0]))


def test_overhead_ratios_with_a_fake_timer(loaded):
    """The whole path with fake, known timings: names, pairing and every ratio."""
    adapter = loaded["gpt2"]
    n = adapter.mapping.num_layers
    fake = {
        "tokenize": [0.01, 0.01, 0.01],
        "full_forward": [1.0, 2.0, 1.0],
        f"truncated@{n - 1}": [0.5, 1.0, 0.6],
        "truncated@0": [0.2, 0.4, 0.2],
        f"extraction[0_{n - 1}]": [0.55, 1.0, 0.6],
        "extraction[0]": [0.3, 0.4, 0.2],
    }
    seen: dict[str, Any] = {}

    def timer(fns, *, rounds, warmup):
        seen.update(names=list(fns), rounds=rounds, warmup=warmup)
        return {name: stats_from_samples(fake[name]) for name in fns}

    out = overhead.overhead_ratios(adapter, TEXTS, [(0, n - 1), (0,)], rounds=3, warmup=1, timer=timer)
    assert seen == {"names": list(fake), "rounds": 3, "warmup": 1}
    assert out["order"] == list(fake)
    deep, shallow = out["layer_sets"]
    assert deep["layers"] == [0, n - 1] and deep["deepest"] == n - 1
    assert deep["extraction_vs_truncated"]["ratio"] == pytest.approx(0.6 / 0.6)
    assert deep["extraction_vs_truncated"]["paired"]["samples"] == pytest.approx([1.1, 1.0, 1.0])
    assert deep["extraction_vs_full"]["ratio"] == pytest.approx(0.6 / 1.0)
    assert deep["truncated_vs_full"]["ratio"] == pytest.approx(0.6 / 1.0)
    assert shallow["extraction_vs_truncated"]["ratio"] == pytest.approx(0.3 / 0.2)
    assert shallow["extraction_vs_full"]["paired"]["samples"] == pytest.approx([0.3, 0.2, 0.2])
    assert shallow["medians_s"] == pytest.approx({"extraction": 0.3, "truncated": 0.2, "full": 1.0,
                                                  "tokenize": 0.01})
    assert deep["stopped_early"] and deep["truncated_stopped"] and deep["bytes_returned"] > 0
    assert deep["cpu"] is None  # the fake timer ran nothing
    assert out["timings"]["full_forward"]["samples"] == [1.0, 2.0, 1.0]  # raw samples kept


def test_overhead_ratios_real_timer_runs_every_callable(loaded):
    adapter = loaded["bert"]
    out = overhead.overhead_ratios(adapter, TEXTS, [(0, 1), (0,)], rounds=2, warmup=1)
    assert set(out["timings"]) == {"tokenize", "full_forward", "truncated@1", "truncated@0", "extraction[0_1]",
                                   "extraction[0]"}
    for item in out["layer_sets"]:
        assert item["extraction_vs_truncated"]["ratio"] > 0
        assert item["cpu"]["extraction_vs_truncated"]["paired"]["rounds"] == 2  # warm-up calls dropped
    assert all(s["rounds"] == 2 for s in out["cpu_timings"].values())


def test_peak_memory_child_in_process(tiny_dirs):
    out = overhead.peak_memory_child(str(tiny_dirs["gpt2"]), "extraction", [[0, 1], [0]], texts=2, tokens=16)
    assert [x["layers"] for x in out["layer_sets"]] == [[0, 1], [0]]
    for x in out["layer_sets"]:
        assert x["stopped"] is True
        assert x["bytes_returned"] > 0
        assert x["probe"]["delta_bytes"] is not None
    assert set(out["allocator_env"]) == set(overhead.ALLOCATOR_ENV)  # what was in effect is recorded
    trunc = overhead.peak_memory_child(str(tiny_dirs["gpt2"]), "truncated", [[0]], texts=2, tokens=16)
    assert trunc["layer_sets"][0]["stopped"] is True
    with pytest.raises(ValueError):
        overhead.peak_memory_child(str(tiny_dirs["gpt2"]), "other", [[0]])
