"""`python -m harness check`: CI's guard that a run is complete; --models takes the --nm-models SPEC."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.__main__ import main
from harness.check import MODEL_SUITES
from harness.results import Run
from harness.targets import load_targets


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = Run.start("pytest suites/", tmp_path, load_targets(), environment={})
    for suite in MODEL_SUITES:
        run.record(suite=suite, model="gpt2", family="gpt", metric=f"{suite}_figure", value=1.0, unit="fraction")
    run.finish()
    return tmp_path


def test_complete_for_the_models_it_ran(run_dir: Path) -> None:
    assert main(["check", str(run_dir), "--models", "gpt2"]) == 0
    assert main(["check", str(run_dir), "--models", "family:gpt"]) == 1  # gpt2 only: other gpt models missing


def test_default_spec_names_every_default_model(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(run_dir), "--models", "default"]) == 1
    err = capsys.readouterr().err
    assert "no latency record for bert-base-uncased" in err and "for default" not in err


def test_unknown_model_or_family_is_a_usage_error(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(run_dir), "--models", "family:nope"]) == 2
    assert "family:nope" in capsys.readouterr().err
