"""The instrument checks itself: the reclamation probe must see a deliberate leak, and a clean unload."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoModel

from adapters.zoo import save_tiny_checkpoint, tiny_config
from harness.isolate import run_isolated
from tests.tiny import word_tokenizer

_LEAKY = textwrap.dedent(
    """
    from adapters.analyzer import MultiModelAnalyzer

    KEPT = []

    def reclaim(model, leak):
        if leak:  # an adapter bug: something keeps the model alive after unload
            original = MultiModelAnalyzer.unload_model

            def leaky(self, name):
                KEPT.append(self.loaded_models[name].model)
                return original(self, name)

            MultiModelAnalyzer.unload_model = leaky
        from harness.probes import reclamation
        return reclamation(model)
    """
)


@pytest.fixture(scope="module")
def mid_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~100 MB encoder: big enough for RSS to see, small enough to build in a second."""
    tok = word_tokenizer(encoder=True)
    torch.manual_seed(0)
    cfg = tiny_config("bert", vocab_size=len(tok), hidden_size=512, num_attention_heads=8,
                      intermediate_size=2048, num_hidden_layers=8)
    return save_tiny_checkpoint(AutoModel.from_config(cfg), tok, tmp_path_factory.mktemp("mid") / "bert")


@pytest.fixture
def leaky_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "leaky_child.py").write_text(_LEAKY)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    return "leaky_child"


def test_reclamation_probe_detects_a_deliberate_leak(mid_model: Path, leaky_module: str) -> None:
    clean = run_isolated(f"{leaky_module}:reclaim", {"model": str(mid_model), "leak": False}, timeout=300)
    leaky = run_isolated(f"{leaky_module}:reclaim", {"model": str(mid_model), "leak": True}, timeout=300)
    assert clean["weakref_dead"] and clean["reclaimed_fraction"] > 0.9, clean
    assert not leaky["weakref_dead"], leaky
    assert leaky["reclaimed_fraction"] < 0.2, leaky
