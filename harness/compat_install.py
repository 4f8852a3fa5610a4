"""Install the peers (TransformerLens, nnsight) a user of this transformers release would get, if any.

Why a step of its own: which peer releases install beside a transformers release is itself a finding of the
compatibility matrix (TransformerLens 4.x needs transformers 5; 2.x pins numpy < 2). pip is asked for the
newest of each that fits the installed transformers and torch, pinned so that neither moves; within the
environment's lock unless the environment is a `latest` one. The outcome is written to
`<sys.prefix>/neuronmap-peers.json`, where `harness.compat_peers` reads why a peer is absent.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PEER_PACKAGES = {"transformer_lens": "transformer-lens", "nnsight": "nnsight"}
OUTCOME_FILE = Path(sys.prefix) / "neuronmap-peers.json"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", *args],
                          text=True, capture_output=True)


def install_peers() -> str:
    """Try each peer alone (one that cannot install must not keep the other out); return a summary line."""
    pins = [f"transformers=={_version('transformers')}", f"torch=={_version('torch')}"]
    lock = os.environ.get("NM_LOCK", "")
    latest = os.environ.get("TOX_ENV_NAME", "").endswith("latest")
    constraint = ["-c", lock] if lock and not latest and Path(lock).is_file() else []
    outcome: dict[str, Any] = {"transformers": _version("transformers"), "constraints": None if latest else lock}
    for tool, dist in PEER_PACKAGES.items():
        done = _pip([*constraint, dist, *pins])
        if done.returncode != 0 and constraint:  # the lock may predate the peer: the newest that fits, then
            done = _pip([dist, *pins])
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        outcome[tool] = {"installed": _version(dist), "ok": done.returncode == 0,
                         "pip": None if done.returncode == 0 else " | ".join(tail)[:600]}
    OUTCOME_FILE.write_text(json.dumps(outcome, indent=1), encoding="utf-8")
    return "peers: " + ", ".join(
        f"{tool} {o['installed'] or 'not installable'}" for tool, o in outcome.items() if isinstance(o, dict))


def outcome() -> dict[str, Any]:
    """What install_peers recorded in this environment ({} when it never ran here)."""
    try:
        return json.loads(OUTCOME_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
