"""The peers (TransformerLens, nnsight) on the installed transformers release: one row per tool, for the matrix.

Why a check of its own: which peer release installs beside a transformers release differs (TransformerLens 4.x
needs transformers 5; pip picks 3.2.1 beside 4.57 and 2.17 beside 4.51, each with another API), and a peer
that installs may still fail on this transformers. A user of either tool would read a block's output; the row
says whether that equals what transformers itself gives on the same checkpoint.

Per tool, on the gpt2 fixture (`harness.compat`, identical bytes on every release), through the very calls the
side-by-side suite times (`harness.peers`: `load_peer`, `tool_calls`, `reference`, `max_abs_diff`): blocks 0
and 1 on `TEXTS`, right-padded, input_ids and attention_mask only, against transformers' hidden_states[1]
(block 0) and a forward hook on the last block (hidden_states[2] is after the final norm). Never raises: a
peer that is absent gives a reason, one that fails gives an error ("Type: message").
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import peers

__all__ = ["MODEL_TYPE", "PEER_TOOLS", "check_peers"]

PEER_TOOLS = ("transformer_lens", "nnsight")
MODEL_TYPE = "gpt2"
NNSIGHT_API = "NNsight.trace"


def _version(dist: str) -> str | None:
    """The installed distribution's version (None when absent): what pip put here, even if it cannot import."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()[:300]}"


def _install_outcome() -> dict[str, Any]:
    """What `harness.compat_install` recorded in this environment (why a peer is absent), {} when nothing."""
    try:
        from harness.compat_install import outcome

        return outcome()
    except Exception:  # the record is an explanation, never a reason to fail
        return {}


def not_installed_reason(tool: str, transformers_version: str | None) -> str:
    """Why `tool` is not run: pip's own words when the install step tried and failed beside this release."""
    dist = peers.PEERS[tool][1]
    record = _install_outcome()
    attempt = record.get(tool) if record.get("transformers") == transformers_version else None
    if isinstance(attempt, dict) and not attempt.get("ok", True):
        tail = f": {attempt['pip']}" if attempt.get("pip") else ""
        return f"{dist} is not installed (no release installs beside transformers {transformers_version}{tail})"
    return f"{dist} is not installed in this environment (beside transformers {transformers_version})"


def _api(tool: str) -> str:
    """What is driven: the TransformerLens entry point the installed release offers, or nnsight's trace."""
    return peers.transformer_lens_api() if tool == "transformer_lens" else NNSIGHT_API


def _row(tool: str, transformers_version: str | None) -> dict[str, Any]:
    version = _version(peers.PEERS[tool][1])
    return {"tool": tool, "installed": version is not None, "version": version, "api": None,
            "model_type": MODEL_TYPE, "transformers": transformers_version, "max_abs_diff": None, "error": None,
            "reason": None if version else not_installed_reason(tool, transformers_version)}


@contextmanager
def _fixture_adapter(root: Path | None) -> Iterator[Any]:
    """The gpt2 fixture loaded by transformers through NeuronMap's adapter (its tokenize is right-padded and
    passes only what the forward takes), unloaded afterwards."""
    from adapters import MultiModelAnalyzer
    from harness.compat import ensure_fixture

    folder, _ = ensure_fixture(MODEL_TYPE, root)
    analyzer = MultiModelAnalyzer()
    adapter = analyzer.load_model(str(folder))
    try:
        yield adapter
    finally:
        analyzer.unload_model(str(folder))


def measure(tool: str, adapter: Any, texts: list[str], layers: list[int], ref: dict[int, Any], mask: Any
            ) -> float | None:
    """The tool's blocks on its own copy of the checkpoint (peers wrap or patch what they are given), called
    as the side-by-side suite calls it, against transformers' values at real tokens."""
    peer = peers.load_peer(tool, peers.checkpoint_of(adapter))
    out = peers.tool_calls(adapter, texts, layers, {tool: peer}, [tool])[tool]()
    return peers.max_abs_diff(out.values, ref, mask, layers)


def check_peers(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """One row per PEER_TOOLS entry (see the module docstring); `root` is the fixture root (tests redirect it)."""
    from harness.compat import TEXTS

    tv = _version("transformers")
    rows = {tool: _row(tool, tv) for tool in PEER_TOOLS}
    todo = [tool for tool in PEER_TOOLS if rows[tool]["installed"]]
    for tool in todo:
        try:
            rows[tool]["api"] = _api(tool)
        except Exception as exc:  # installed but not importable here (e.g. a dependency built for other numpy)
            rows[tool]["error"] = _error(exc)
    todo = [tool for tool in todo if rows[tool]["error"] is None]
    if not todo:
        return rows
    texts = list(TEXTS)
    try:
        with _fixture_adapter(root) as adapter:
            layers = list(range(adapter.mapping.stacks[adapter.mapping.primary].num_layers))
            inputs = adapter.tokenize(texts)
            ref, _ = peers.reference(adapter, inputs, layers)
            for tool in todo:
                try:
                    rows[tool]["max_abs_diff"] = measure(tool, adapter, texts, layers, ref, inputs["attention_mask"])
                except Exception as exc:  # a peer failing on this release is a matrix cell, not a crash
                    rows[tool]["error"] = _error(exc)
    except Exception as exc:  # the reference itself failed: every peer still waiting gets that error
        for tool in todo:
            if rows[tool]["max_abs_diff"] is None and rows[tool]["error"] is None:
                rows[tool]["error"] = f"reference: {_error(exc)}"
    return rows
