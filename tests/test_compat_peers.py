"""harness.compat_peers on whatever this environment holds: values against transformers for each peer that is
installed (skipped with a reason where not), and the rows it must give instead of raising: nothing installed,
a failed install recorded, a peer that installs but breaks, a reference that cannot be built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import compat_peers, peers

KEYS = {"tool", "installed", "version", "api", "model_type", "transformers", "max_abs_diff", "error", "reason"}
TRANSFORMERS = compat_peers._version("transformers")


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compat-fixtures")


@pytest.fixture(scope="module")
def rows(fixture_root: Path) -> dict[str, dict[str, Any]]:
    return compat_peers.check_peers(fixture_root)


def pretend(installed: bool) -> Any:
    """A `_version` that keeps transformers real and says every peer is absent (or some version)."""
    def version(dist: str) -> str | None:
        if dist == "transformers":
            return TRANSFORMERS
        return "0.0.0" if installed else None

    return version


def must_not_run(*_a: Any, **_k: Any) -> Any:
    raise AssertionError("nothing should be loaded here")


@pytest.mark.parametrize("tool", compat_peers.PEER_TOOLS)
def test_installed_peer_matches_transformers(rows, tool):
    """Each peer that is installed here reads blocks 0 and 1 of the gpt2 fixture as transformers does."""
    dist = peers.PEERS[tool][1]
    version = compat_peers._version(dist)
    if version is None:
        pytest.skip(f"{dist} is not installed beside transformers {TRANSFORMERS}: nothing to compare")
    row = rows[tool]
    assert set(row) == KEYS
    assert row["error"] is None, row["error"]
    assert row["installed"] and row["version"] == version and row["reason"] is None
    assert row["model_type"] == "gpt2" and row["transformers"] == TRANSFORMERS
    expected_api = peers.transformer_lens_api() if tool == "transformer_lens" else compat_peers.NNSIGHT_API
    assert row["api"] == expected_api
    assert row["max_abs_diff"] is not None and row["max_abs_diff"] <= 1e-4, row


def test_nothing_installed_gives_reasons_and_loads_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(compat_peers, "_version", pretend(installed=False))
    monkeypatch.setattr(compat_peers, "_install_outcome", dict)
    monkeypatch.setattr(compat_peers, "_fixture_adapter", must_not_run)
    monkeypatch.setattr(peers, "load_peer", must_not_run)
    rows = compat_peers.check_peers(tmp_path)
    assert list(rows) == list(compat_peers.PEER_TOOLS)
    for tool, row in rows.items():
        assert set(row) == KEYS and row["tool"] == tool
        assert row["installed"] is False and row["version"] is None and row["api"] is None
        assert row["max_abs_diff"] is None and row["error"] is None
        assert row["reason"].startswith(f"{peers.PEERS[tool][1]} is not installed in this environment")
        assert TRANSFORMERS in row["reason"]


def test_reason_quotes_the_failed_install_of_this_release(monkeypatch):
    outcome = {"transformers": TRANSFORMERS, "nnsight": {"installed": None, "ok": True, "pip": None},
               "transformer_lens": {"installed": None, "ok": False, "pip": "ERROR: ResolutionImpossible"}}
    monkeypatch.setattr(compat_peers, "_install_outcome", lambda: outcome)
    reason = compat_peers.not_installed_reason("transformer_lens", TRANSFORMERS)
    assert reason == (f"transformer-lens is not installed (no release installs beside transformers {TRANSFORMERS}: "
                      "ERROR: ResolutionImpossible)")
    assert "in this environment" in compat_peers.not_installed_reason("nnsight", TRANSFORMERS)
    # a record left by another release says nothing about this one
    assert "in this environment" in compat_peers.not_installed_reason("transformer_lens", "0.0.1")


def test_peer_that_breaks_on_this_release_is_an_error_row(monkeypatch, fixture_root):
    """Installed, importable, and failing when it wraps the model: an error cell, the reference still built."""
    def broken(group: str, checkpoint: Any) -> Any:
        raise RuntimeError(f"{group} cannot wrap {checkpoint['architecture']} here")

    monkeypatch.setattr(compat_peers, "_version", pretend(installed=True))
    monkeypatch.setattr(compat_peers, "_api", lambda tool: f"{tool} api")
    monkeypatch.setattr(peers, "load_peer", broken)
    rows = compat_peers.check_peers(fixture_root)
    for tool, row in rows.items():
        assert row["installed"] and row["version"] == "0.0.0" and row["api"] == f"{tool} api"
        assert row["error"] == f"RuntimeError: {tool} cannot wrap GPT2LMHeadModel here"
        assert row["max_abs_diff"] is None and row["reason"] is None


def test_peer_that_cannot_import_is_an_error_row(monkeypatch, tmp_path):
    """E.g. TransformerLens 2.x pins numpy < 2 while a dependency was built for numpy 2: installed, not importable."""
    def no_import(tool: str) -> str:
        raise ImportError(f"{tool}: pyarrow requires NumPy 2.0 or newer")

    monkeypatch.setattr(compat_peers, "_version", pretend(installed=True))
    monkeypatch.setattr(compat_peers, "_api", no_import)
    monkeypatch.setattr(compat_peers, "_fixture_adapter", must_not_run)
    rows = compat_peers.check_peers(tmp_path)
    for tool, row in rows.items():
        assert row["installed"] and row["api"] is None and row["max_abs_diff"] is None
        assert row["error"] == f"ImportError: {tool}: pyarrow requires NumPy 2.0 or newer"


def test_reference_failure_fills_every_row(monkeypatch, tmp_path):
    def no_fixture(*_a: Any, **_k: Any) -> Any:
        raise OSError("no space left on device")

    monkeypatch.setattr(compat_peers, "_version", pretend(installed=True))
    monkeypatch.setattr(compat_peers, "_api", lambda tool: "api")
    monkeypatch.setattr("harness.compat.ensure_fixture", no_fixture)
    rows = compat_peers.check_peers(tmp_path)
    assert {row["error"] for row in rows.values()} == {"reference: OSError: no space left on device"}
