"""--nm-shard: the split itself (pure functions), and two shards run as two concurrent processes whose results
files `harness report` and `harness gate` read together as one run."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.plugin import parse_shard, shard_items
from harness.results import find_run_files, load_records

REPO = Path(__file__).resolve().parent.parent
MODELS = ["gpt2", "bert-base-uncased"]


def test_parse_shard_accepts_i_of_n_and_rejects_the_rest() -> None:
    assert parse_shard("1/2") == (1, 2)
    assert parse_shard(" 3/3 ") == (3, 3)
    for bad in ("0/2", "3/2", "1/0", "a/b", "1", "1/2/3", "-1/2", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_shard(bad)


def test_shards_partition_the_selection_round_robin_over_sorted_names() -> None:
    names = ["gpt2", "t5-small", "bert-base-uncased", "EleutherAI/gpt-neo-125M", "distilbert-base-uncased"]
    for n in (1, 2, 3, 5, 7):
        parts = [shard_items(names, (i, n)) for i in range(1, n + 1)]
        flat = [m for p in parts for m in p]
        assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))  # each model exactly once
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1  # round-robin keeps shards balanced
        # independent of the order the models were given in; each shard keeps the input order
        assert parts == [shard_items(list(reversed(names)), (i, n))[::-1] for i in range(1, n + 1)]
    ordered = sorted(names)
    assert shard_items(names, (1, 2)) == [m for m in names if ordered.index(m) % 2 == 0]
    assert shard_items(names, None) == names
    assert shard_items(["a", "a", "b"], None) == ["a", "b"]


def test_modelless_tests_are_dealt_to_exactly_one_shard() -> None:
    """Tests without a model (the labelled detection set) run once across all shards, not once per shard."""
    from harness.plugin import pytest_collection_modifyitems

    def item(nodeid: str, model: bool) -> SimpleNamespace:
        return SimpleNamespace(nodeid=nodeid, fixturenames=["benchmark", *(["nm_model"] if model else [])])

    def collect() -> list[SimpleNamespace]:
        return [item("s.py::test_a[gpt2]", True), item("s.py::test_set[x]", False),
                item("s.py::test_set[y]", False), item("s.py::test_other", False)]

    kept: list[list[str]] = []
    for i in (1, 2):
        deselected: list[SimpleNamespace] = []
        config = SimpleNamespace(
            getoption=lambda name, i=i: (i, 2) if name == "nm_shard" else None,
            hook=SimpleNamespace(pytest_deselected=lambda items, d=deselected: d.extend(items)))
        items = collect()
        pytest_collection_modifyitems(config, items)  # type: ignore[arg-type]
        assert "s.py::test_a[gpt2]" in [x.nodeid for x in items]  # model tests are split at parametrization
        kept.append([x.nodeid for x in items if "gpt2" not in x.nodeid])
        assert len(deselected) + len(items) == 4
    assert sorted(kept[0] + kept[1]) == ["s.py::test_other", "s.py::test_set[x]", "s.py::test_set[y]"]
    assert kept[0] == ["s.py::test_set[y]", "s.py::test_other"]  # dealt over sorted node ids; order kept


def _shard_cmd(i: int, n: int, results: Path) -> list[str]:
    # `-k registered` leaves out the labelled-set tests (13 s of CPU each shard would spend on one of
    # them): their dealing is tested above without processes; here the models are what is split
    return [sys.executable, "-m", "pytest", "suites/test_detection.py", "--benchmark-only",
            "--nm-models", ",".join(MODELS), "--nm-shard", f"{i}/{n}", "--nm-results", str(results),
            "--nm-no-report", "-k", "registered", "-q", "-p", "no:cacheprovider"]


def test_two_shards_as_two_processes_cover_each_model_once_and_read_as_one_run(tmp_path: Path) -> None:
    """~20 s on 2 idle cores (mostly two interpreters importing torch and transformers side by side)."""
    results = tmp_path / "results"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    procs = [subprocess.Popen(_shard_cmd(i, 2, results), cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (1, 2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode in (0, 1), out[-4000:]  # 1 would be an honestly failed target, still a result

    files = find_run_files([results])
    assert len(files) == 2, [f.name for f in results.iterdir()]
    runs = [json.loads(f.read_text()) for f in files]
    shards = {r["environment"]["suite_options"]["shard"]["index"]: r for r in runs}
    assert set(shards) == {1, 2}
    # sorted: bert-base-uncased (shard 1), gpt2 (shard 2)
    assert shards[1]["environment"]["suite_options"]["shard"]["models"] == ["bert-base-uncased"]
    assert shards[2]["environment"]["suite_options"]["shard"]["models"] == ["gpt2"]

    per_model = [(r["model"], i) for i, run in shards.items() for r in run["records"]
                 if r["suite"] == "detection" and r["metric"] == "detection_accuracy" and r["model"]]
    assert sorted(m for m, _ in per_model) == sorted(MODELS)  # the union covers each model exactly once

    merged = load_records([results])  # the folder reads as one run: both files' records
    assert len(merged) == sum(len(r["records"]) for r in runs)
    assert {r.model for r in merged if r.suite == "detection" and r.model} == set(MODELS)

    pyenv = {**env, "PYTHONPATH": str(REPO)}
    rep = subprocess.run([sys.executable, "-m", "harness", "report", str(results), "--out", str(tmp_path / "report")],
                         cwd=REPO, env=pyenv, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert all(f"`{f.stem}`" in text for f in files)  # both shards' runs are in one report
    gate = subprocess.run([sys.executable, "-m", "harness", "gate", str(results), str(results)],
                          cwd=REPO, env=pyenv, capture_output=True, text=True, timeout=300)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    # the gate really reads both files: against both shards as baseline, one shard alone misses a model
    shard1 = next(f for f in files if json.loads(f.read_text())["environment"]["suite_options"]["shard"]["index"] == 1)
    partial = subprocess.run([sys.executable, "-m", "harness", "gate", str(results), str(shard1)],
                             cwd=REPO, env=pyenv, capture_output=True, text=True, timeout=300)
    assert partial.returncode == 2 and "gpt2" in partial.stdout, partial.stdout + partial.stderr
