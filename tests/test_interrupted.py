"""Interrupted and concurrent runs, tested by doing them: real suite runs killed with SIGKILL at random
moments, two runs at once, atomic writes killed mid-stream, and two processes building one zoo checkpoint.

The suite runs come from tests/run_server.py (a fork server: torch and transformers imported once), so each
run of the detection suite on gpt2 takes about a second and ten kills fit the unit-test budget. Kill delays
are drawn uniformly over 1.1 times the length of a complete run, so some land before anything is written,
some while the results file is written, some after; the seed is printed with every failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.results import SCHEMA_NAME, find_run_files, load_records, load_run

REPO = Path(__file__).resolve().parent.parent
KILLS = 10
SEED = int(os.environ.get("NM_KILL_SEED", random.randrange(2**32)))


def _run_args(results: Path) -> list[str]:
    return ["suites/test_detection.py", "--benchmark-only", "--nm-models", "gpt2", "-k", "registered",
            "--nm-results", str(results), "--nm-no-report", "-q", "-p", "no:cacheprovider", "--assert=plain"]


@pytest.fixture(scope="module")
def suite_runs() -> Iterator[Callable[..., list[dict[str, Any]]]]:
    """ask(results, kill_after=None, processes=1) -> one outcome per process: exit code, killed, seconds."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([sys.executable, "tests/run_server.py"], cwd=REPO, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    assert json.loads(proc.stdout.readline()) == {"ready": True}

    def ask(results: Path, kill_after: float | None = None, processes: int = 1) -> list[dict[str, Any]]:
        request = {"args": _run_args(results), "processes": processes,
                   "kill_after": 120.0 if kill_after is None else kill_after}  # 120 s: never hang the suite
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        assert line, "the fork server died"
        return json.loads(line)["outcomes"]

    yield ask
    proc.stdin.close()
    proc.wait(timeout=60)


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under the folder (hidden temp files included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _results_files(names: Iterator[str] | list[str]) -> list[str]:
    return [n for n in names if n.endswith(".json") and not n.endswith(".benchmark.json")]


def test_sigkill_at_random_moments_leaves_earlier_results_intact(suite_runs: Callable[..., Any],
                                                                 tmp_path: Path) -> None:
    results = tmp_path / "results"
    [first] = suite_runs(results)
    assert first["exit"] == 0 and not first["killed"], first
    assert len(_results_files(list(_digests(results)))) == 1
    rng = random.Random(SEED)
    tally = {"killed_before_write": 0, "killed_after_write": 0, "completed": 0, "temp_leftovers": 0,
             "partial_benchmark_json": 0}
    for i in range(KILLS):
        delay = rng.uniform(0.0, 1.1 * first["seconds"])
        before = _digests(results)
        [outcome] = suite_runs(results, kill_after=delay)
        after = _digests(results)
        where = f"seed {SEED}, kill {i} at {delay:.3f} s: {outcome}"
        for name, digest in before.items():  # every earlier file is still there, byte for byte
            assert after.get(name) == digest, f"{name} changed or vanished; {where}"
        new = sorted(set(after) - set(before))
        new_results = _results_files(new)
        assert len(new_results) <= 1, (new, where)
        for name in new_results:  # the current run's file: absent, or complete and valid
            assert load_run(results / name)["schema"]["name"] == SCHEMA_NAME, where
        if not outcome["killed"]:
            assert outcome["exit"] == 0 and len(new_results) == 1, where
            tally["completed"] += 1
        else:
            tally["killed_after_write" if new_results else "killed_before_write"] += 1
        tally["temp_leftovers"] += sum(n.endswith(".tmp") for n in new)
        for name in (n for n in new if n.endswith(".benchmark.json")):  # pytest-benchmark's, not ours
            try:
                json.loads((results / name).read_text())
            except ValueError:
                tally["partial_benchmark_json"] += 1
    files = find_run_files([results])  # every results file reads back; stray temp files are not picked up
    assert len(files) == 1 + tally["completed"] + tally["killed_after_write"]
    assert load_records([results])
    print(f"\nkill test (seed {SEED}): {KILLS} runs, a complete run took {first['seconds']:.2f} s; {tally}")


def test_two_runs_at_once_write_separate_files(suite_runs: Callable[..., Any], tmp_path: Path) -> None:
    results = tmp_path / "results"
    outcomes = suite_runs(results, processes=2)
    assert [o["exit"] for o in outcomes] == [0, 0], outcomes
    files = find_run_files([results])
    assert len(files) == 2 and files[0].name != files[1].name
    runs = [load_run(f) for f in files]
    assert runs[0]["run"]["id"] != runs[1]["run"]["id"]
    for f, run in zip(files, runs, strict=True):  # each file is its own run, with its own records
        assert f.stem == run["run"]["id"]
        assert [r["model"] for r in run["records"] if r["suite"] == "detection" and r["model"]] == ["gpt2"]


_WRITER = """
import sys
from harness.results import atomic_write_json
path, i = sys.argv[1], 0
while True:
    i += 1
    atomic_write_json(path, {"i": i, "pad": "x" * 1_000_000})
"""


def test_sigkill_during_atomic_writes_leaves_old_or_new_file(tmp_path: Path) -> None:
    """A writer rewriting a 1 MB results file in a loop, killed ten times at random moments: the file is
    always a complete document, and a file beside it is never touched."""
    target, neighbour = tmp_path / "run.json", tmp_path / "earlier.json"
    neighbour.write_text(json.dumps({"earlier": True}))
    earlier = neighbour.read_bytes()
    rng = random.Random(SEED)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writes = []
    for i in range(KILLS):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], env=env)
        time.sleep(rng.uniform(0.1, 0.4))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        if target.exists():  # the first kill may land before the first write
            data = json.loads(target.read_text())
            assert data["pad"] == "x" * 1_000_000, f"seed {SEED}, kill {i}"
            writes.append(data["i"])
        assert neighbour.read_bytes() == earlier
    assert writes and all(n >= 1 for n in writes)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["earlier.json", "run.json"]


_BUILDER = """
import json, os, sys, time
from pathlib import Path
from adapters import UniversalModelRegistry, zoo
log, barrier = Path(sys.argv[2]), Path(sys.argv[3])
build = zoo._build
def logged_build(*args, **kwargs):
    with log.open("a") as fh:
        fh.write(f"{os.getpid()}\\n")
    time.sleep(1.0)  # hold the lock long enough that the other process is sure to arrive meanwhile
    return build(*args, **kwargs)
zoo._build = logged_build
config = UniversalModelRegistry(sys.argv[1]).get_model_config("tiny-zoo")
(barrier / str(os.getpid())).touch()
while len(list(barrier.iterdir())) < 2:
    time.sleep(0.005)
start = time.time()
ckpt = zoo.ensure_checkpoint(config, progress=False)
print(json.dumps({"path": str(ckpt.path), "start": start, "end": time.time()}))
"""

_TINY_ZOO_TOML = """[[model]]
name = "tiny-zoo"
family = "gpt"
model_type = "gpt2"
architecture = "GPT2LMHeadModel"
[model.config]
n_layer = 2
n_embd = 32
n_head = 4
n_positions = 64
vocab_size = 128
"""


def test_two_processes_build_one_zoo_checkpoint_once(tmp_path: Path) -> None:
    models, log, barrier = tmp_path / "models.toml", tmp_path / "builds.log", tmp_path / "barrier"
    models.write_text(_TINY_ZOO_TOML)
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "NEURONMAP_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(models), str(log), str(barrier)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    done = [json.loads(out) for out, _ in outs]
    assert done[0]["path"] == done[1]["path"]
    assert max(d["start"] for d in done) < min(d["end"] for d in done)  # the two calls overlapped in time
    assert len(log.read_text().split()) == 1  # one build; the other process waited on the lock and reused it
    ckpt = Path(done[0]["path"])
    assert json.loads((ckpt / "neuronmap_zoo.json").read_text())["weights"] == "synthetic"
    from safetensors.torch import load_file

    assert load_file(ckpt / "model.safetensors")  # complete and readable
    assert not [p.name for p in ckpt.parent.iterdir() if p.name.startswith(".build-")]  # no build leftovers
