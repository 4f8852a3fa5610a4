"""Constraints (lock) files: the committed ones are complete and consistent, and drift says what changed."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from harness import lock

REPO = Path(__file__).resolve().parent.parent
LOCKS = sorted((REPO / "constraints").glob("*.txt"))
CORE = ("transformers", "huggingface-hub", "tokenizers", "accelerate", "safetensors")


def test_every_tox_lock_is_committed():
    """tox.ini names a lock per release of the matrix; each exists and pins the core packages, never torch."""
    tox = (REPO / "tox.ini").read_text(encoding="utf-8")
    named = set(re.findall(r"\{toxinidir\}/(constraints/[\w.-]+\.txt)", tox))
    assert named and all((REPO / n).is_file() for n in named), named
    for path in LOCKS:
        pins = lock.read_pins(path)
        assert all(name in pins for name in CORE), (path.name, [n for n in CORE if n not in pins])
        assert "torch" not in pins, f"{path.name} pins torch: NM_TORCH chooses the build"


@pytest.mark.parametrize("path", LOCKS, ids=[p.name for p in LOCKS])
def test_matrix_lock_pins_its_release(path: Path):
    pins = lock.read_pins(path)
    m = re.fullmatch(r"transformers-(\d+)\.(\d+)\.txt", path.name)
    if m:
        assert pins["transformers"].split(".")[:2] == [m.group(1), m.group(2)]


def test_locks_satisfy_the_project_ranges():
    """Every lock's transformers is inside the range pyproject.toml declares (a lock outside it is stale)."""
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    reqs = {lock.canonical(Requirement(d).name): Requirement(d) for d in deps}
    for path in LOCKS:
        pins = lock.read_pins(path)
        for name in CORE:
            assert reqs[name].specifier.contains(pins[name], prereleases=True), (path.name, name, pins[name])


def test_drift_names_what_differs(tmp_path: Path):
    f = tmp_path / "c.txt"
    f.write_text("# comment\nTransformers==4.57.6\nhuggingface_hub==0.36.0 ; python_version >= '3.9'\nsix==1.0\n")
    assert lock.read_pins(f) == {"transformers": "4.57.6", "huggingface-hub": "0.36.0", "six": "1.0"}
    info = lock.drift(f, installed={"transformers": "5.25.0", "huggingface-hub": "0.36.0"})
    assert info["pins"] == 3 and info["matches"] == 1 and info["absent"] == ["six"]
    assert info["differs"] == {"transformers": {"locked": "4.57.6", "installed": "5.25.0"}}
    text = lock.format_drift(info)
    assert "transformers: locked 4.57.6 -> installed 5.25.0" in text and "1 not installed here" in text


def test_drift_without_a_lock_file_is_a_note_not_an_error(tmp_path: Path):
    info = lock.drift(tmp_path / "missing.txt")
    assert "error" in info and "missing.txt" in lock.format_drift(info)


def test_nm_lock_chooses_the_file(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("NM_LOCK", str(tmp_path / "x.txt"))
    assert lock.lock_path() == tmp_path / "x.txt"
    monkeypatch.delenv("NM_LOCK")
    assert lock.lock_path() == lock.DEFAULT_LOCK
