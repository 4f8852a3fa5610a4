"""Unit tests of harness.report and the `python -m harness` command line, on a synthetic run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.__main__ import main
from harness.report import write_report
from harness.results import Run
from harness.targets import load_targets
from harness.timing import stats_from_samples

PNG = b"\x89PNG\r\n\x1a\n"
FAKE_ENV = {
    "git": {"commit": "0123456789abcdef", "dirty": True},
    "cpu": {"model": "Test CPU", "usable_cores": 2},
    "packages": {"torch": "2.x", "transformers": "5.x"},
    "torch": {"threads": 2},
    "gpus": None,
}


def _synthetic_run(results_dir: Path) -> Path:
    targets = load_targets()
    run = Run.start("pytest suites -m 'not slow'", results_dir, targets, environment=FAKE_ENV)
    common = {"weights": "synthetic", "device": "cpu", "dtype": "float32"}
    lat = {
        ("gpt2", "gpt"): (0.09, 1.7),
        ("EleutherAI/gpt-neo-125M", "gpt"): (0.11, 1.3),
        ("bert-base-uncased", "bert"): (0.05, 1.0),
        ("distilbert-base-uncased", "bert"): (0.03, 0.5),
    }
    for (model, family), (small, big) in lat.items():
        for wl, base in (
            ({"texts": 1, "tokens": 16, "layers": [0, 6, 11]}, small),
            ({"texts": 8, "tokens": 128, "layers": [0, 6, 11]}, big),
        ):
            st = stats_from_samples([base * f for f in (0.95, 1.0, 1.02, 1.1, 0.98)])
            run.record(
                suite="latency",
                model=model,
                family=family,
                workload=wl,
                metric="extraction_latency",
                value=st.median,
                unit="s",
                stats=st.to_dict(),
                **common,
            )
    for model, family, gb in (
        ("gpt2", "gpt", 0.62),
        ("EleutherAI/gpt-neo-125M", "gpt", 1.2),
        ("bert-base-uncased", "bert", 0.55),
    ):
        run.record(
            suite="memory",
            model=model,
            family=family,
            workload={"texts": 8, "tokens": 128},
            metric="peak_memory",
            value=gb,
            unit="GB",
            **common,
        )
    for model, family, frac in (
        ("gpt2", "gpt", 0.93),
        ("bert-base-uncased", "bert", 0.99),
        ("EleutherAI/gpt-neo-125M", "gpt", 0.85),
    ):
        run.record(
            suite="reclamation", model=model, family=family, metric="reclamation", value=frac, unit="fraction", **common
        )
    run.record(suite="detection", model=None, metric="detection_accuracy", value=1.0, unit="fraction")
    run.record(
        suite="memory",
        model="gpt-j-6B",
        family="gpt",
        metric="device_mapping_large",
        value=None,
        unit="bool",
        error="MemoryError | while\nloading",
        **common,
    )
    return run.finish()


def test_report_renders_every_target_and_charts(tmp_path: Path) -> None:
    path = _synthetic_run(tmp_path / "results")
    out = tmp_path / "out"
    files = write_report([path], out)
    assert set(files) == {"report", "latency", "peak_memory", "reclamation"}
    for key in ("latency", "peak_memory", "reclamation"):
        data = files[key].read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, key
    md = files["report"].read_text()
    for t in load_targets().all():
        assert f"`{t.id}`" in md and t.quote in md, t.id
    assert "not measured" in md and "❌ fail" in md and "✅ pass" in md and "⚠️ error" in md
    assert "MemoryError \\| while loading" in md  # escaped, on one table row
    assert "![Extraction latency](latency.png)" in md
    assert "0123456789" in md and "(dirty)" in md
    assert "distilbert-base-uncased" in md  # a measurement without a target is listed, not dropped
    assert len(md.encode()) < 1_000_000  # CI job summaries are capped at 1 MiB
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_report_without_chart_data_still_lists_targets(tmp_path: Path) -> None:
    run = Run.start("empty", tmp_path, load_targets(), environment={})
    files = write_report([run.finish()], tmp_path / "out")
    assert set(files) == {"report"}
    md = files["report"].read_text()
    assert "no measurements in these runs" in md and md.count("⬜ not measured") == len(load_targets())


def test_cli_report_default_out_is_results_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _synthetic_run(tmp_path)
    assert main(["report", str(path)]) == 0
    out_dir = tmp_path / path.stem
    assert (out_dir / "report.md").exists() and (out_dir / "latency.png").exists()
    assert "report:" in capsys.readouterr().out
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "custom")]) == 0  # a folder works too
    assert (tmp_path / "custom" / "report.md").exists()


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert main(["report", str(tmp_path)]) == 2  # folder without results files
    bad = tmp_path / "other.json"
    bad.write_text('{"benchmarks": []}')
    assert main(["report", str(bad)]) == 2
    with pytest.raises(SystemExit) as e:
        main(["report"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    assert "harness report:" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    r = subprocess.run([sys.executable, "-m", "harness"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 2 and "command is required" in r.stderr
