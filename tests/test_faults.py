"""Faults in a real suite run become `error` records: a model that fails to load, one that raises mid-forward
and one that runs out of memory each get an error record with the exception's message, the good model still
gets its figures, and report.md lists the errors (harness/plugin.py, pytest_runtest_makereport)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness.results import find_run_files, load_run

REPO = Path(__file__).resolve().parent.parent
MODELS = ("tiny-good", "tiny-noload", "tiny-forward", "tiny-oom")


def _models_toml(config: dict) -> str:
    """Register the four names with the tiny checkpoint's real config facts."""
    facts = {k: config[k] for k in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size")}
    body = "\n".join(f"{k} = {v}" for k, v in facts.items())
    return "\n".join(f'[[model]]\nname = "{m}"\nfamily = "gpt"\nmodel_type = "gpt2"\n'
                     f'architecture = "GPT2LMHeadModel"\n[model.config]\n{body}\n' for m in MODELS)


def test_load_forward_and_oom_faults_become_error_records(tiny_dirs: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "faults"
    shutil.copytree(tiny_dirs["gpt2"], root / "good")
    shutil.copytree(tiny_dirs["gpt2"], root / "corrupt")
    (root / "corrupt" / "model.safetensors").write_bytes(b"\x00" * 64)
    (root / "models.toml").write_text(_models_toml(json.loads((root / "good" / "config.json").read_text())))
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "pytest", "suites/test_latency.py", "-p", "tests.fault_models", "-k", "seed",
           "--nm-models", ",".join(MODELS), "--nm-results", str(results), "--benchmark-disable",
           "-q", "-p", "no:cacheprovider"]
    env = {**os.environ, "NM_FAULTS_ROOT": str(root), "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]  # three tests failed, and the run still finished
    assert "3 failed, 1 passed" in out, out[-4000:]

    [path] = find_run_files([results])
    records = [r for r in load_run(path)["records"] if r["suite"] == "latency"]
    by_model = {r["model"]: r for r in records}
    assert set(by_model) == set(MODELS) and len(records) == len(MODELS), records
    good = by_model["tiny-good"]
    assert good["verdict"] == "not_applicable" and good["value"] > 0 and good["error"] is None
    ref = good["stats"]["reference"]  # the machine-speed reference, one sample per timed round (harness.reference)
    assert ref["kind"] == "model_forward_same_texts" and ref["texts"] == 1
    assert len(ref["samples"]) == len(good["stats"]["samples"]) == good["stats"]["rounds"] and min(ref["samples"]) > 0
    # a fault inside the forward arrives as ExtractionError naming the original exception (OutOfMemoryError
    # when it is one)
    expected = {"tiny-noload": ("ModelSourceError:", "cannot load"),
                "tiny-forward": ("ExtractionError:", "RuntimeError: injected fault: the forward pass broke"),
                "tiny-oom": ("OutOfMemoryError: out of memory during the forward",
                             "OutOfMemoryError: injected fault: CUDA out of memory")}
    for model, (exc, text) in expected.items():
        r = by_model[model]
        assert r["verdict"] == "error" and r["value"] is None, r
        assert r["error"].startswith(exc) and text in r["error"], r["error"]
        assert r["metric"] == "extraction_latency" and r["workload"] == {"workload": "seed"}
        assert r["family"] == "gpt" and r["extra"]["phase"] == "call"
        assert r["extra"]["out_of_memory"] is (model == "tiny-oom")

    report = (path.parent / path.stem / "report.md").read_text()
    errors = report.split("Errors (3)", 1)[1]
    for model, (exc, text) in expected.items():
        assert model in errors and exc in errors and text in errors
