"""The regression gate on synthetic runs: thresholds, significance, fingerprints, targets, exit codes."""

from __future__ import annotations

import random

import pytest

from harness.__main__ import main
from harness.gate import GateConfig, compare, exit_code
from harness.reference import REFERENCE_KIND
from harness.results import Record, Run
from harness.targets import load_targets
from tests.report_fixtures import paired_latency

FP = {"model_config": "abc", "weights": "synthetic", "dtype": "float32", "device": "cpu",
      "libraries": {"torch": "2.13.0"}, "hardware": {"cpu": "x"}}


def lat(samples: list[float], fp: dict | None = None, verdict: str = "pass", target: dict | None = None) -> Record:
    samples = sorted(samples)
    return Record(suite="latency", model="m", metric="extraction_latency", unit="s",
                  value=samples[len(samples) // 2], stats={"samples": samples}, workload={"name": "seed"},
                  verdict=verdict, target=target, extra={"fingerprint": fp or FP})


def mem(value: float) -> Record:
    return Record(suite="memory", model="m", metric="peak_memory", unit="GB", value=value,
                  workload={"name": "seed"}, extra={"fingerprint": FP})


def noisy(center: float, n: int = 30, spread: float = 0.02, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [center * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


def test_identical_runs_pass():
    comps = compare([lat(noisy(1.0))], [lat(noisy(1.0, seed=1))])
    assert [c.outcome for c in comps] == ["pass"] and exit_code(comps) == 0


def test_significant_slowdown_is_a_regression():
    comps = compare([lat(noisy(1.0))], [lat(noisy(1.15, seed=1))])
    assert comps[0].outcome == "regression" and comps[0].p_value < 0.01 and exit_code(comps) == 1


def test_small_or_insignificant_changes_pass():
    assert compare([lat(noisy(1.0))], [lat(noisy(1.05, seed=1))])[0].outcome == "pass"  # < 10 %
    wide = compare([lat(noisy(1.0, n=4, spread=0.5))], [lat(noisy(1.15, n=4, spread=0.5, seed=1))])
    assert wide[0].outcome == "pass"  # 15 % but not significant


def test_improvement_is_reported():
    assert compare([lat(noisy(1.0))], [lat(noisy(0.8, seed=1))])[0].outcome == "improvement"


@pytest.mark.parametrize(("base", "cur", "outcome"), [
    (1.0, 1.02, "pass"), (1.0, 1.05, "regression"), (0.1, 0.12, "pass"), (0.1, 0.14, "regression"),
    (1.0, 0.9, "improvement"),
])
def test_memory_threshold_is_max_of_3_percent_and_32_mb(base, cur, outcome):
    assert compare([mem(base)], [mem(cur)])[0].outcome == outcome


def test_different_fingerprint_is_incomparable():
    comps = compare([lat(noisy(1.0))], [lat(noisy(1.0), fp={**FP, "dtype": "float16"})])
    assert comps[0].outcome == "incomparable" and "dtype" in comps[0].reasons[0]
    assert exit_code(comps) == 2


def test_runtime_compares_only_when_both_records_carry_it():
    pinned = {**FP, "runtime": {"torch_threads": 2, "malloc": "pinned"}}
    default = {**FP, "runtime": {"torch_threads": 2, "malloc": "default"}}
    comps = compare([lat(noisy(1.0), fp=pinned)], [lat(noisy(1.0), fp=default)])
    assert comps[0].outcome == "incomparable" and "runtime" in comps[0].reasons[0]
    assert compare([lat(noisy(1.0))], [lat(noisy(1.0), fp=pinned)])[0].outcome == "pass"  # older record


def test_missing_current_figure_is_incomparable():
    comps = compare([lat(noisy(1.0)), mem(1.0)], [mem(1.0)])
    assert {c.outcome for c in comps} == {"pass", "incomparable"} and exit_code(comps) == 2


def test_targets_are_hard_floors():
    target = {"id": "t", "operator": "<", "value": 1.0}
    base = lat(noisy(0.95), target=target)
    cur = lat(noisy(1.01, seed=1), verdict="fail", target=target)  # 6 %: under the threshold, over the target
    assert compare([base], [cur])[0].outcome == "target_fail"
    still = compare([lat(noisy(1.01), verdict="fail", target=target)], [cur])
    assert still[0].outcome == "still_failing" and exit_code(still) == 0
    assert compare([lat(noisy(1.01), verdict="fail", target=target)], [cur],
                   GateConfig(strict_targets=True))[0].outcome == "target_fail"


def test_cli_exit_codes(tmp_path):
    targets = load_targets()

    def write(name: str, records: list[Record]) -> str:
        run = Run.start("test", tmp_path / name, targets, environment={})
        for r in records:
            run.add(r)
        return str(run.finish())

    a = write("a", [lat(noisy(1.0))])
    b = write("b", [lat(noisy(1.0, seed=1))])
    c = write("c", [lat(noisy(1.3, seed=2))])
    assert main(["gate", a, b]) == 0
    assert main(["gate", a, c]) == 1
    assert main(["gate", a, str(tmp_path / "nothing")]) == 2



def lat_ref(machine: float, code: float = 1.0, seed: int = 0, kind: str = REFERENCE_KIND) -> Record:
    return paired_latency(machine, code, seed, kind, fingerprint=FP)


def test_a_slower_machine_is_not_a_regression_when_the_reference_saw_it():
    base, cur = lat_ref(1.0), lat_ref(1.3, seed=1)  # same code, machine 30 % slower
    [comp] = compare([base], [cur])
    assert comp.outcome == "pass" and comp.basis == "reference" and abs(comp.judged_change) < 0.03
    assert comp.change == pytest.approx(0.3, abs=0.06) and "machine speed" in comp.reasons[0]
    [raw] = compare([base], [cur], GateConfig(latency_basis="raw"))
    assert raw.outcome == "regression" and raw.basis == "raw"


def test_a_code_slowdown_is_caught_whatever_the_machine_did():
    base = lat_ref(1.0)
    [same] = compare([base], [lat_ref(1.0, code=1.15, seed=1)])
    assert same.outcome == "regression" and same.judged_change == pytest.approx(0.15, abs=0.03)
    # the machine got 15 % faster while the code got 15 % slower: raw medians barely move, the ratio does
    faster = lat_ref(0.85, code=1.15, seed=2)
    assert compare([base], [faster])[0].outcome == "regression"
    assert compare([base], [faster], GateConfig(latency_basis="raw"))[0].outcome == "pass"
    assert compare([base], [lat_ref(1.0, code=0.8, seed=3)])[0].outcome == "improvement"


def test_latency_is_judged_raw_unless_both_runs_carry_the_same_reference():
    plain = lat(noisy(1.0, seed=4))
    [one] = compare([plain], [lat_ref(1.0)])
    assert one.basis == "raw" and "only one run has a reference" in one.reasons[0]
    [kinds] = compare([lat_ref(1.0)], [lat_ref(1.0, seed=1, kind="other")])
    assert kinds.basis == "raw" and "reference kinds differ" in kinds.reasons[0]
    short = lat_ref(1.0, seed=5)
    short.stats["reference"]["samples"] = short.stats["reference"]["samples"][:-1]  # not one per round
    assert compare([lat_ref(1.0)], [short])[0].basis == "raw"
    assert compare([plain], [lat(noisy(1.0, seed=6))])[0].basis == "raw"


def test_unknown_latency_basis_is_refused():
    with pytest.raises(ValueError, match="latency_basis"):
        compare([lat_ref(1.0)], [lat_ref(1.0)], GateConfig(latency_basis="median"))


def test_cli_latency_basis(tmp_path):
    def write(name: str, record: Record) -> str:
        run = Run.start("test", tmp_path / name, load_targets(), environment={})
        run.add(record)
        return str(run.finish())

    a, b = write("a", lat_ref(1.0)), write("b", lat_ref(1.3, seed=1))
    assert main(["gate", a, b]) == 0
    assert main(["gate", a, b, "--latency-basis", "raw"]) == 1
    with pytest.raises(SystemExit) as exc:
        main(["gate", a, b, "--latency-basis", "mean"])
    assert exc.value.code == 2
