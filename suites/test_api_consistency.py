"""API consistency: the same calls, the same shapes and the same errors for every model of every family."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from typing import Any

import torch

from harness.coverage import parity
from harness.plugin import load_options
from suites.common import check_verdict

TEXTS = ["Hello world", "Activation extraction should behave the same way for every model family."]
MEMORY_FIELDS = ("process_rss_gb", "process_peak_rss_gb", "system_memory_gb", "system_total_gb",
                 "system_available_gb", "gpu_memory_gb", "gpu_reserved_gb", "nvml_used_gb")


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def api_checks(name: str, **load: Any) -> tuple[dict[str, str | None], dict[str, Any]]:
    """Run every check on one model; returns {check: None if it held, else why not} and the model's info.
    `load` goes to load_model (models bigger than the machine run at reduced depth, real width)."""
    from adapters import (
        InvalidInputError,
        InvalidLayerError,
        ModelConfig,
        ModelNotLoadedError,
        MultiModelAnalyzer,
        NeuronMapError,
    )

    results: dict[str, str | None] = {}

    def check(label: str, fn: Callable[[], Any]) -> None:
        try:
            outcome = fn()
            results[label] = None if outcome in (None, True) else str(outcome)
        except Exception as exc:  # a check that raises has failed; the message says why
            results[label] = f"{type(exc).__name__}: {exc}"

    analyzer = MultiModelAnalyzer()
    adapter = analyzer.load_model(name, **load)
    model = analyzer.loaded_models[name].model
    info = adapter.info()
    mapping = adapter.mapping
    n = mapping.num_layers
    hidden = adapter.config.hidden_size
    layers = list(dict.fromkeys([0, n // 2, n - 1]))  # reduced-depth models have 2 blocks
    analyzer.extract_activations(name, TEXTS, [0])  # transformers adds hooks of its own on a first call
    # values against transformers' own hidden states, and padding (its output_hidden_states adds hooks too)
    for kind, outcome in parity(adapter).items():
        label = {"extraction": "blocks equal transformers' output_hidden_states (<= 1e-5)",
                 "final_norm": "last block raw, transformers' last entry = final norm of it",
                 "padded": "each text in a padded batch gets the values it gets alone"}[kind]
        results[label] = None if outcome["status"] != "fail" else outcome["reason"]
    hooks_before = _hooks(model)
    impl_before = getattr(model.config, "_attn_implementation", None)

    check("loaded module", lambda: isinstance(model, torch.nn.Module) or "not an nn.Module")
    check("family detected", lambda: analyzer.registry.detect_model_family(name) == adapter.config.family
          or f"detected {analyzer.registry.detect_model_family(name)} vs registered {adapter.config.family}")
    check("model info", lambda: (isinstance(analyzer.get_model_info(name), ModelConfig)
          and analyzer.get_model_info(name).layers == n) or f"info layers != mapped layers ({n})")

    acts = analyzer.extract_activations(name, TEXTS, layers)
    seq = acts.input_ids.shape[1]
    check("activations keyed in request order", lambda: list(acts) == layers or f"keys {list(acts)}")
    check("activations on CPU [batch, seq, hidden]", lambda: all(
        t.device.type == "cpu" and tuple(t.shape) == (2, seq, hidden) for t in acts.values())
        or f"shapes {[tuple(t.shape) for t in acts.values()]}")
    check("attention mask alongside", lambda: tuple(acts.attention_mask.shape) == (2, seq))
    neg = analyzer.extract_activations(name, TEXTS, [-1])
    check("negative index", lambda: torch.equal(neg[-1], acts[n - 1]) or "layer -1 != layer n-1")
    attn = analyzer.get_attention_patterns(name, TEXTS, layers)
    heads = adapter.config.num_heads

    def attention_ok() -> bool | str:
        for key, a in attn.items():
            if tuple(a.shape) != (2, heads, seq, seq):
                return f"layer {key}: shape {tuple(a.shape)}"
            for b in range(2):
                k = int(attn.attention_mask[b].sum())
                rows = a[b, :, :k, :k].float().sum(-1)
                if not torch.allclose(rows, torch.ones_like(rows), atol=1e-4):
                    return f"layer {key}: rows do not sum to 1 over unmasked keys"
        return True

    check("attention [batch, heads, seq, seq], rows sum to 1", attention_ok)
    check("attention implementation restored",
          lambda: getattr(model.config, "_attn_implementation", None) == impl_before)
    usage = analyzer.get_memory_usage()
    check("memory usage fields", lambda: all(k in usage and (usage[k] is None or usage[k] >= 0)
                                             for k in MEMORY_FIELDS) or f"fields {sorted(usage)}")

    def raises(exc_type: type, fn: Callable[[], Any]) -> Callable[[], bool | str]:
        def run() -> bool | str:
            try:
                fn()
            except exc_type as exc:
                return isinstance(exc, NeuronMapError) or "not a NeuronMapError"
            return f"no {exc_type.__name__} raised"
        return run

    check("out-of-range layer is typed", raises(InvalidLayerError,
                                                lambda: analyzer.extract_activations(name, TEXTS, [n])))
    check("empty texts are typed", raises(InvalidInputError,
                                          lambda: analyzer.extract_activations(name, [], [0])))
    check("unloaded model is typed", raises(ModelNotLoadedError,
                                            lambda: analyzer.extract_activations("no-such-model", TEXTS, [0])))
    check("no hooks left behind", lambda: _hooks(model) == hooks_before or "hook count changed")
    ref = weakref.ref(model)
    model = adapter = acts = neg = attn = None  # drop our references before unloading
    unloaded = analyzer.unload_model(name)
    gc.collect()
    check("unload frees the model", lambda: (unloaded and ref() is None) or "model still referenced")
    check("unloaded name is gone", lambda: name not in analyzer.loaded_models)
    return results, info


def test_api_consistency(benchmark, nm_model, nm_record, nm_loaded, nm_registry):
    nm_loaded.close()  # this check loads and unloads on its own
    results, info = benchmark.pedantic(api_checks, args=(nm_model,), kwargs=load_options(nm_registry, nm_model),
                                       rounds=1, iterations=1)
    failed = {k: v for k, v in results.items() if v is not None}
    record = nm_record("api_consistency", info, "api_consistency", 1 - len(failed) / len(results), "fraction",
                       extra={"checks": len(results), "failed": failed})
    check_verdict(record)
