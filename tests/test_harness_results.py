"""Unit tests of harness.targets, harness.results and harness.env: verdicts, file format, atomic writes."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest

from harness import SCHEMA_NAME, SCHEMA_VERSION, env, results
from harness.results import (
    Record,
    Run,
    atomic_write_json,
    find_run_files,
    load_records,
    load_run,
    make_record,
    safe_component,
)
from harness.targets import Target, TargetFileError, TargetSet, load_targets

DESIGN_QUOTES = [
    "Automatic architecture detection with >95% accuracy",
    "API Consistency: 100% unified interface across all model types",
    "GPT-2: <2s activation extraction, 1.5GB memory usage",
    "GPT-Neo-125M: ~1s extraction, 1.0GB memory usage",
    "BERT-base: <1.5s activation extraction, 1.5GB memory usage",
    "Token alignment: >98% accuracy for subword-to-word mapping",
    "Memory optimization: 20-30% reduction through gradient checkpointing",
    "Memory cleanup: >90% memory reclamation after model unloading",
    "Large models: Successful device mapping for 6B+ parameter models",
    "Variable Context Length - Support for 1024-2048 token sequences",
]
FAKE_ENV = {"git": {"commit": "abc123", "dirty": False}, "python": {"version": "3.11"}}


@pytest.fixture(scope="module")
def targets() -> TargetSet:
    return load_targets()


# ---------------------------------------------------------------- targets.toml


def test_targets_file_holds_every_stated_target(targets: TargetSet) -> None:
    quotes = {t.quote for t in targets.all()}
    for q in DESIGN_QUOTES:
        assert q in quotes, q
    metrics = {t.metric for t in targets.all()}
    assert {"detection_accuracy_name", "detection_accuracy_config", "detection_accuracy_module"} <= metrics
    for tier, v in (("name", 0.97), ("config", 0.99), ("module", 0.95)):
        t = targets.find(f"detection_accuracy_{tier}")
        assert t is not None and t.operator == ">=" and t.value == v and t.quote.startswith("issue 3: ")
    assert targets.path is not None and targets.path.name == "targets.toml"
    assert targets.sha256 is not None and len(targets.sha256) == 64


@pytest.mark.parametrize(
    ("metric", "model", "family", "expected"),
    [
        ("extraction_latency", "gpt2", "gpt", "gpt2-extraction-latency"),
        ("extraction_latency", "EleutherAI/gpt-neo-125M", "gpt", "gpt-neo-125m-extraction-latency"),
        ("extraction_latency", "bert-base-cased", "bert", "bert-base-extraction-latency"),
        ("extraction_latency", "distilgpt2", "gpt", None),
        ("peak_memory", "bert-base-uncased", "bert", "bert-base-peak-memory"),
        ("max_context_tokens", "gpt2", "gpt", "gpt-context-length"),
        ("max_context_tokens", "bert-base-uncased", "bert", None),
        ("reclamation", "anything", None, "reclamation"),
        ("gradient_checkpointing_saving", "gpt2", "gpt", "gradient-checkpointing-saving"),
        ("device_mapping_large", "gpt-j-6B", "gpt", "device-mapping-large"),
    ],
)
def test_find(targets: TargetSet, metric: str, model: str, family: str | None, expected: str | None) -> None:
    t = targets.find(metric, model=model, family=family)
    assert (t.id if t else None) == expected


def test_model_specific_beats_family_beats_generic() -> None:
    ts = TargetSet(
        [
            Target("gen", "extraction_latency", "<", 5.0, "s", "q"),
            Target("fam", "extraction_latency", "<", 3.0, "s", "q", families=("gpt",)),
            Target("m", "extraction_latency", "<", 1.0, "s", "q", models=("gpt2",)),
        ]
    )
    assert ts.find("extraction_latency", "gpt2", "gpt").id == "m"
    assert ts.find("extraction_latency", "opt", "gpt").id == "fam"
    assert ts.find("extraction_latency", "bert", "bert").id == "gen"
    assert ts.find("extraction_latency").id == "gen"
    assert ts.find("peak_memory", "gpt2") is None


@pytest.mark.parametrize(
    ("op", "threshold", "value", "verdict"),
    [
        (">=", 0.95, 0.95, "pass"),
        (">=", 0.95, 0.9499, "fail"),
        (">", 0.95, 0.95, "fail"),
        (">", 0.95, 0.951, "pass"),
        ("<=", 1.0, 1.0, "pass"),
        ("<=", 1.0, 1.0001, "fail"),
        ("<", 2.0, 2.0, "fail"),
        ("<", 2.0, 1.999, "pass"),
        ("==", 1.0, 1.0, "pass"),
        ("==", 1.0, 0.999, "fail"),
        ("==", 1.0, True, "pass"),
        ("==", 1.0, False, "fail"),
        ("between", (0.2, 0.3), 0.2, "pass"),
        ("between", (0.2, 0.3), 0.3, "pass"),
        ("between", (0.2, 0.3), 0.25, "pass"),
        ("between", (0.2, 0.3), 0.19, "fail"),
        ("between", (0.2, 0.3), 0.31, "fail"),
        (">=", 0.5, math.nan, "fail"),
    ],
)
def test_verdict_per_operator(op: str, threshold: object, value: float, verdict: str) -> None:
    t = Target("t", "reclamation", op, threshold, "fraction", "q")  # type: ignore[arg-type]
    assert t.verdict(value) == verdict


def test_verdict_refuses_none() -> None:
    with pytest.raises(ValueError):
        Target("t", "reclamation", ">", 0.9, "fraction", "q").verdict(None)  # type: ignore[arg-type]


_GOOD = 'id = "x"\nmetric = "reclamation"\noperator = ">"\nvalue = 0.9\nunit = "fraction"\nquote = "q"\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[[target]\nbroken", "not valid TOML"),
        ("version = 1\n", "no [[target]]"),
        ("version = 2\n[[target]]\n" + _GOOD, "unsupported targets file version"),
        ("[[target]]\n" + _GOOD.replace('metric = "reclamation"', 'metric = "Reclamation Rate"'), "snake_case"),
        ("[[target]]\n" + _GOOD.replace('">"', '"=>"'), "operator"),
        ("[[target]]\n" + _GOOD.replace('">"', '"between"'), "between"),
        ("[[target]]\n" + _GOOD.replace("0.9", '"high"'), "value must be a number"),
        ("[[target]]\n" + _GOOD.replace('quote = "q"\n', ""), "missing key"),
        ("[[target]]\n" + _GOOD + "colour = 1\n", "unknown key"),
        ("[[target]]\n" + _GOOD + "[[target]]\n" + _GOOD, "duplicate target id"),
        ("[[target]]\n" + _GOOD + "[[target]]\n" + _GOOD.replace('"x"', '"y"'), "both apply"),
        ("[[target]]\n" + _GOOD + 'models = "gpt2"\n', "models must be a list"),
    ],
)
def test_bad_targets_file_gives_clear_error(tmp_path: Path, body: str, message: str) -> None:
    p = tmp_path / "targets.toml"
    p.write_text(body)
    with pytest.raises(TargetFileError, match=re.escape(message)) as e:
        load_targets(p)
    assert str(p) in str(e.value)


def test_missing_targets_file(tmp_path: Path) -> None:
    with pytest.raises(TargetFileError, match="cannot read"):
        load_targets(tmp_path / "nope.toml")


def test_target_dict_round_trip(targets: TargetSet) -> None:
    again = TargetSet.from_dicts(t.to_dict() for t in targets.all())
    assert again.all() == targets.all()


# ---------------------------------------------------------------- records


def test_make_record_verdicts(targets: TargetSet) -> None:
    kw = {"suite": "latency", "metric": "extraction_latency", "unit": "s", "targets": targets}
    ok = make_record(model="gpt2", family="gpt", value=0.4, **kw)
    assert ok.verdict == "pass" and ok.target["id"] == "gpt2-extraction-latency"
    assert ok.target["quote"] == "GPT-2: <2s activation extraction, 1.5GB memory usage"
    assert make_record(model="gpt2", value=2.0, **kw).verdict == "fail"
    assert make_record(model="distilgpt2", value=0.4, **kw).verdict == "not_applicable"
    assert make_record(model="distilgpt2", value=0.4, **kw).target is None
    err = make_record(model="gpt2", value=None, error="OOM", **kw)
    assert err.verdict == "error" and err.error == "OOM" and err.target["id"] == "gpt2-extraction-latency"
    assert make_record(model="gpt2", value=None, **kw).verdict == "not_measured"
    nan = make_record(model="gpt2", value=float("nan"), **kw)
    assert nan.verdict == "error" and nan.value is None and "non-finite" in nan.error
    ms = make_record(model="gpt2", value=400.0, **{**kw, "unit": "ms"})
    assert ms.verdict == "error" and "unit mismatch" in ms.error
    dm = make_record(
        suite="memory", model="gpt-j-6B", metric="device_mapping_large", value=True, unit="bool", targets=targets
    )
    assert dm.value == 1.0 and dm.verdict == "pass"


def test_record_validation() -> None:
    with pytest.raises(ValueError):
        Record(suite="s", metric="m", unit="s", verdict="maybe")
    with pytest.raises(ValueError):
        Record(suite="s", metric="m", unit="s", weights="random")
    r = Record(suite="s", metric="m", unit="s", value=1, extra={"k": 1})
    assert Record.from_dict({**r.to_dict(), "future_field": 1}) == r


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("EleutherAI/gpt-neo-125M", "EleutherAI__gpt-neo-125M"),
        ("a/b", "a__b"),
        ("gpt2", "gpt2"),
    ],
)
def test_safe_component_maps_model_names(name: str, expected: str) -> None:
    assert safe_component(name) == expected


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", ".", "", "a/../../b", "..\\..\\x", "/abs", ".hidden"])
def test_safe_component_never_traverses(tmp_path: Path, name: str) -> None:
    s = safe_component(name)
    assert s and "/" not in s and "\\" not in s and ".." not in s and not s.startswith(".")
    assert (tmp_path / s).resolve().parent == tmp_path.resolve()
    assert len(safe_component("x" * 500)) <= 100
    assert safe_component("x" * 500) != safe_component("x" * 499 + "y")


# ---------------------------------------------------------------- atomic write


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "run.json"
    atomic_write_json(p, {"v": 1})
    with pytest.raises(ValueError):
        atomic_write_json(p, {"v": float("nan")})  # strict JSON: refused before anything is written
    with pytest.raises(TypeError):
        atomic_write_json(p, {"v": object()})

    def boom(*_a: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)  # fail after the temp file is fully written
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(p, {"v": 2})
    monkeypatch.undo()
    assert json.loads(p.read_text()) == {"v": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["run.json"]


def test_atomic_write_first_write_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", lambda _fd: (_ for _ in ()).throw(OSError("io error")))
    with pytest.raises(OSError):
        atomic_write_json(tmp_path / "new.json", {"v": 1})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- runs


def _run(tmp_path: Path, targets: TargetSet) -> Run:
    return Run.start("pytest suites", tmp_path, targets, environment=FAKE_ENV)


def test_run_finish_writes_schema_and_fills_not_measured(tmp_path: Path, targets: TargetSet) -> None:
    run = _run(tmp_path, targets)
    run.record(
        suite="latency",
        model="gpt2",
        family="gpt",
        weights="synthetic",
        device="cpu",
        dtype="float32",
        workload={"texts": 1, "tokens": 16, "layers": [0, 6, 11]},
        metric="extraction_latency",
        value=0.3,
        unit="s",
        stats={"median": 0.3, "samples": [0.29, 0.3, 0.31]},
    )
    run.record(suite="memory", model="gpt2", metric="peak_memory", value=None, unit="GB", error="killed")
    run.record(suite="latency", model="distilgpt2", metric="extraction_latency", value=0.2, unit="s")
    path = run.finish()
    assert path == tmp_path / f"{run.id}.json" and path.exists()
    data = load_run(path)
    assert data["schema"] == {"name": SCHEMA_NAME, "version": SCHEMA_VERSION}
    assert data["run"]["id"] == run.id and data["run"]["command"] == "pytest suites"
    assert data["run"]["git_commit"] == "abc123" and data["run"]["dirty"] is False
    assert data["run"]["start"] <= data["run"]["end"]
    assert data["targets"]["sha256"] == targets.sha256 and len(data["targets"]["list"]) == len(targets)
    assert data["environment"] == FAKE_ENV

    recs = load_records([path])
    by_target: dict[str, list[Record]] = {}
    for r in recs:
        if r.target:
            by_target.setdefault(r.target["id"], []).append(r)
    assert set(by_target) == {t.id for t in targets.all()}  # every stated target appears
    assert by_target["gpt2-extraction-latency"][0].verdict == "pass"
    assert by_target["gpt2-peak-memory"][0].verdict == "error"  # measured and failed: not re-filled
    assert len(by_target["gpt2-peak-memory"]) == 1
    filled = [r for r in recs if r.verdict == "not_measured"]
    assert len(filled) == len(targets) - 2 and all(r.suite == "harness" and r.value is None for r in filled)
    assert any(r.verdict == "not_applicable" and r.model == "distilgpt2" for r in recs)
    assert recs[0].stats["samples"] == [0.29, 0.3, 0.31]

    with pytest.raises(RuntimeError):
        run.finish()
    with pytest.raises(RuntimeError):
        run.add(recs[0])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing but the result


def test_run_ids_are_unique_and_safe(tmp_path: Path, targets: TargetSet) -> None:
    ids = {_run(tmp_path, targets).id for _ in range(20)}
    assert len(ids) == 20 and all(safe_component(i) == i for i in ids)
    with pytest.raises(ValueError):
        Run.start("x", tmp_path, targets, environment={}, run_id="../evil")


def test_load_records_from_folder_skips_foreign_json(tmp_path: Path, targets: TargetSet) -> None:
    path = _run(tmp_path, targets).finish()
    (tmp_path / "benchmark.json").write_text(json.dumps({"machine_info": {}, "benchmarks": []}))
    (tmp_path / "garbage.json").write_text("{not json")
    assert find_run_files([tmp_path]) == [path]
    assert len(load_records([tmp_path])) == len(targets)
    with pytest.raises(ValueError, match="not a neuronmap-bench-results"):
        load_records([tmp_path / "benchmark.json"])
    with pytest.raises(FileNotFoundError):
        load_records([tmp_path / "missing.json"])


def test_load_run_rejects_other_major_version(tmp_path: Path) -> None:
    p = tmp_path / "future.json"
    p.write_text(json.dumps({"schema": {"name": SCHEMA_NAME, "version": "2.0"}, "records": []}))
    with pytest.raises(ValueError, match="version"):
        load_run(p)


def test_capture_environment_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> dict:
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(env, "_cpu", broken)
    monkeypatch.setattr(env, "_timer", lambda: {"clock": "stub"})  # keep the test fast
    e = env.capture_environment()
    assert e["cpu"] is None and any("probe exploded" in x for x in e["errors"])
    assert e["python"]["version"] and e["packages"]["pytest"]
    assert e["git"] is None or set(e["git"]) == {"commit", "dirty"}
    assert e["gpus"] is None or all({"name", "uuid", "driver", "memory_total_bytes"} <= set(g) for g in e["gpus"])
    json.dumps(e, allow_nan=False)  # fits in a results file as-is
    assert env.git_info(Path("/")) is None  # outside git


def test_results_module_exports() -> None:
    for name in results.__all__:
        assert hasattr(results, name)


def test_two_runs_that_draw_the_same_id_keep_both_files(tmp_path: Path) -> None:
    """The id's random part is short; a second run with a taken id writes beside the first, never over it."""
    first = Run.start("a", tmp_path, TargetSet([]), environment={}, run_id="20260101T000000Z-abcdef")
    second = Run.start("b", tmp_path, TargetSet([]), environment={}, run_id="20260101T000000Z-abcdef")
    p1, p2 = first.finish(), second.finish()
    assert p1 != p2 and p2.name == "20260101T000000Z-abcdef~1.json"
    assert json.loads(p1.read_text())["run"]["command"] == "a"
    assert json.loads(p2.read_text())["run"] == {**json.loads(p2.read_text())["run"], "command": "b", "id": second.id}
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temp files left
