"""Unit tests of harness.export (Bencher Metric Format, github-action-benchmark) and `python -m harness export`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.__main__ import main
from harness.collate import load_runs, run_records
from harness.export import bmf, export, gab, measure_slug
from harness.results import Run
from harness.targets import load_targets
from tests.report_fixtures import make_run


@pytest.fixture(scope="module")
def run_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("export"), seed=3)


def _records(path: Path) -> list[dict]:
    return run_records(load_runs([path]))


def test_bmf_shape_and_units(run_path: Path) -> None:
    out = bmf(_records(run_path))
    assert out and all(isinstance(k, str) and 0 < len(k) <= 1024 for k in out)
    for measures in out.values():
        for slug, m in measures.items():
            assert len(slug) <= 64 and set(m) <= {"value", "lower_value", "upper_value"} and "value" in m
            assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
            if "lower_value" in m:
                assert m["lower_value"] <= m["value"] <= m["upper_value"]
    raw = {(r["suite"], r["model"], (r["workload"] or {}).get("name")): r for r in _records(run_path)
           if r["metric"] == "extraction_latency"}
    seed = raw[("latency", "gpt2", "seed")]
    name = next(k for k in out if k.startswith("gpt2/seed"))
    assert name.endswith("[cpu, float32, synthetic]")
    lat = out[name]["latency"]  # Bencher's built-in latency measure is in nanoseconds
    assert lat["value"] == pytest.approx(seed["stats"]["median"] * 1e9)
    assert lat["lower_value"] == pytest.approx(seed["stats"]["q1"] * 1e9)
    assert 0 < out[name]["peak-memory-gb"]["value"] < 2  # latency and memory of one workload: one benchmark
    slugs = {s for m in out.values() for s in m}
    assert {"latency", "peak-memory-gb", "reclamation", "detection-accuracy-name", "extraction-peak-memory-gb",
            "api-consistency"} <= slugs
    assert not any(s.startswith("baseline") for s in slugs)  # reference methods are not the product
    assert not any("device-mapping" in s for s in slugs)  # the error record has no value


def test_gab_smaller_is_better_only(run_path: Path) -> None:
    out = gab(_records(run_path))
    assert out and isinstance(out, list)
    names = [e["name"] for e in out]
    assert len(names) == len(set(names))
    for e in out:
        assert set(e) <= {"name", "unit", "value", "range", "extra"} and e["unit"] in ("s", "GB")
        assert isinstance(e["value"], float) and isinstance(e["extra"], str)
        assert "reclamation" not in e["name"] and "accuracy" not in e["name"]
    lat = next(e for e in out if e["name"].startswith("latency/gpt2/extraction_latency/seed"))
    assert lat["range"].startswith("± ") and "median of 30 rounds" in lat["extra"] and "verdict pass" in lat["extra"]
    assert any(e["name"].startswith("scaling/") and e["unit"] == "GB" for e in out)


def test_measure_slugs() -> None:
    assert measure_slug("extraction_latency", "s") == "latency"
    assert measure_slug("peak_memory", "GB") == "peak-memory-gb"
    assert measure_slug("reclamation", "fraction") == "reclamation"
    assert measure_slug("max_context_tokens", "tokens") == "max-context-tokens-tokens"
    assert measure_slug("load_time", "s") == "load-time-ns"


def test_cli_export_stdout_and_file(run_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(run_path), "--format", "bmf"]) == 0
    assert json.loads(capsys.readouterr().out) == export([run_path], "bmf")
    dest = tmp_path / "gab.json"
    assert main(["export", str(run_path.parent), "--format", "gab", "--out", str(dest)]) == 0
    assert json.loads(dest.read_text()) == export([run_path], "gab")


def test_cli_export_usage_errors(run_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["export", str(run_path)], ["export", str(run_path), "--format", "csv"], ["export"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert main(["export", str(tmp_path / "missing.json"), "--format", "bmf"]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(empty), "--format", "bmf"]) == 2
    det = Run.start("detection only", tmp_path / "det", load_targets(), environment={})
    det.record(suite="detection", model="gpt2", family="gpt", metric="detection_accuracy", value=1.0,
               unit="fraction")
    path = det.finish()
    assert main(["export", str(path), "--format", "gab"]) == 2  # nothing smaller-is-better to export
    assert "no latency or memory figures" in capsys.readouterr().err
    assert main(["export", str(path), "--format", "bmf"]) == 0
