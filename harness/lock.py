"""The constraints (lock) file a run was installed from, and how the installed packages differ from it.

Why: tox installs every environment from a committed constraints file (`constraints/tested.txt`, or the
file of a compatibility-matrix version), so a new upstream release cannot change a fresh clone's result;
`tox -e latest` installs the newest releases on purpose. Either way each results file says which lock it
was compared with and which installed versions differ from it, so "what changed" is a field, not a guess.

`NM_LOCK` names the lock (tox sets it); without it the checkout's `constraints/tested.txt` is used.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LOCK = REPO / "constraints" / "tested.txt"
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash (pip freeze and metadata spell names differently)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_path() -> Path:
    """The lock this process is compared with: $NM_LOCK, else the checkout's constraints/tested.txt."""
    named = os.environ.get("NM_LOCK", "").strip()
    return Path(named).expanduser() if named else DEFAULT_LOCK


def read_pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of every `name==version` line of a constraints file."""
    pins: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _PIN.match(line)
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def installed_versions() -> dict[str, str]:
    """{canonical name: version} of every distribution importable here."""
    out: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            out.setdefault(canonical(name), dist.version)
    return out


def drift(path: Path | None = None, installed: dict[str, str] | None = None) -> dict[str, Any]:
    """Lock file, its hash, and each pinned package whose installed version differs (or is absent).

    `differs` {name: {"locked", "installed"}} for installed packages only; `absent` lists pinned packages this
    environment does not have; `matches` counts the pins that hold. A missing lock file gives
    `{"file": ..., "error": ...}` rather than an exception: the environment record must never cost a run.
    """
    path = path or lock_path()
    try:
        data = path.read_bytes()
    except OSError as exc:
        return {"file": str(path), "error": f"{type(exc).__name__}: {exc}"}
    pins = read_pins(path)
    have = installed if installed is not None else installed_versions()
    # a pin constrains, it does not require: a pinned package this environment never installed (the peers'
    # dependencies in a tests environment) is absent, not a change
    absent = sorted(name for name in pins if name not in have)
    differs = {name: {"locked": version, "installed": have[name]}
               for name, version in sorted(pins.items()) if name in have and have[name] != version}
    try:
        shown = str(path.resolve().relative_to(REPO))
    except ValueError:
        shown = str(path)
    return {"file": shown, "sha256": hashlib.sha256(data).hexdigest()[:16], "pins": len(pins),
            "matches": len(pins) - len(differs) - len(absent), "differs": differs, "absent": absent}


def format_drift(info: dict[str, Any]) -> str:
    """One line per package that differs from the lock: what a `latest` environment changed."""
    if "error" in info:
        return f"lock {info['file']}: {info['error']}"
    head = (f"lock {info['file']} ({info['sha256']}): {info['matches']}/{info['pins']} pins hold, "
            f"{len(info.get('absent', []))} not installed here")
    if not info["differs"]:
        return head + "; every installed package is at its tested version"
    rows = [f"  {name}: locked {d['locked']} -> installed {d['installed']}" for name, d in info["differs"].items()]
    return "\n".join([head + f"; {len(rows)} differ:", *rows])
