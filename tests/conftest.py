"""Shared fixtures: tiny checkpoints built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny import KINDS, build_tiny


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {kind: build_tiny(kind, root / kind) for kind in KINDS}
