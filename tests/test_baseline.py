"""harness.baseline: the folder of a machine class and a refresh that only replaces a baseline with a good run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness import baseline
from harness.results import find_run_files
from tests.report_fixtures import make_run


def test_folder_is_named_after_the_cpu_model(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", evil=False)
    assert baseline.cpu_baseline_dir([run], tmp_path / "b") == tmp_path / "b" / "test-cpu"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(baseline, "REPO", tmp_path)
    return tmp_path


def _suite(monkeypatch: pytest.MonkeyPatch, returncode: int, write: bool) -> None:
    def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
        assert "--nm-profile" in cmd and "suites/" in cmd
        if write:
            make_run(Path(cmd[cmd.index("--nm-results") + 1]), evil=False, scaling=False)
        return subprocess.CompletedProcess(cmd, returncode)

    monkeypatch.setattr(baseline.subprocess, "run", run)


def test_refresh_replaces_the_folder_with_the_new_run(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = repo / "baselines"
    (root / "test-cpu").mkdir(parents=True)
    (root / "test-cpu" / "old.json").write_text("{}")
    _suite(monkeypatch, 1, write=True)  # exit 1: a stated target failed, still a measured run
    target = baseline.refresh(root=root)
    assert target == root / "test-cpu" and not (target / "old.json").exists()
    assert len(find_run_files([target])) == 1 and "baseline refresh" in (target / "BASELINE.md").read_text()
    assert not list((repo / "results").glob(".baseline-*"))  # scratch removed


@pytest.mark.parametrize(("returncode", "write"), [(2, True), (0, False)])
def test_a_failed_run_keeps_the_old_baseline(repo: Path, monkeypatch: pytest.MonkeyPatch, returncode: int,
                                             write: bool) -> None:
    old = repo / "baselines" / "test-cpu" / "old.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    _suite(monkeypatch, returncode, write)
    with pytest.raises(RuntimeError, match="unchanged"):
        baseline.refresh(root=repo / "baselines")
    assert old.read_text() == "{}"
