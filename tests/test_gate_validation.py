"""harness.gate_validation: the interleaved A/B sequence, its pairing and its counts (fake runs, no models)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.gate_validation import Plan, describe, pytest_command, validate
from harness.results import Run
from harness.targets import load_targets
from tests.report_fixtures import make_run, paired_latency


def _fake_runner(order: list[str], miss: set[int] = frozenset()):
    """Writes a synthetic run per call; slowed runs are 1.15x on gpt2 unless their index is in `miss`."""

    def run(plan: Plan, results: Path, slowdown: float) -> Path:
        results.mkdir(parents=True, exist_ok=True)
        order.append(results.name)
        factor = 1.0 + slowdown if len(order) - 1 not in miss else 1.0
        make_run(results, seed=len(order), slowdown=factor, scaling=False, detection=False, evil=False)
        return results

    return run


def test_runs_interleave_and_pairs_share_their_baseline(tmp_path: Path) -> None:
    order: list[str] = []
    summary = validate(Plan(trials=3, out=tmp_path), runner=_fake_runner(order))
    assert order == ["A00", "B01", "A01", "B02", "A02", "B03", "A03"]
    assert summary["trials_run"] == 3 and summary["aa_passed"] == 3 and summary["slowdown_caught"] == 3
    assert summary["verdict"] == "pass"
    saved = json.loads((Path(summary["folder"]) / "summary.json").read_text())
    assert saved["slowdown_caught"] == 3


def test_a_missed_slowdown_counts_against_the_gate(tmp_path: Path) -> None:
    summary = validate(Plan(trials=3, out=tmp_path), runner=_fake_runner([], miss={1, 3}))  # B01, B02 not slowed
    assert summary["slowdown_caught"] == 1 and summary["verdict"] == "fail"
    assert [t["slowdown"]["exit_code"] for t in summary["trials"]] == [0, 0, 1]


def test_command_injects_the_slowdown_only_into_b_runs() -> None:
    plan = Plan()
    assert "--nm-inject-slowdown" not in pytest_command(plan, Path("r"), 0.0)
    cmd = pytest_command(plan, Path("r"), 0.15)
    assert cmd[cmd.index("--nm-inject-slowdown") + 1] == "0.15" and plan.suite in cmd


def test_each_pair_is_also_judged_on_raw_samples(tmp_path: Path) -> None:
    """A runs alternate between a normal and a 30 % slower machine; the reference sees it, raw samples don't."""
    calls: list[str] = []

    def run(plan: Plan, results: Path, slowdown: float) -> Path:
        calls.append(results.name)
        machine = 1.3 if len(calls) % 4 == 3 else 1.0  # A01, A03: slow machine
        run = Run.start("test", results, load_targets(), environment={})
        run.add(paired_latency(machine, 1.0 + slowdown, seed=len(calls)))
        run.finish()
        return results

    summary = validate(Plan(trials=4, out=tmp_path), runner=run)
    assert calls[2] == "A01" and calls[6] == "A03"
    assert summary["aa_passed"] == 4 and summary["slowdown_caught"] == 4 and summary["verdict"] == "pass"
    assert summary["gate"]["latency_basis"] == "reference"
    # raw samples: A00->A01 reads +30 % (regression), A01->A02 -23 % (an improvement, exit 0); a slowed B run
    # after a slow A run reads as faster, so half the injected slowdowns go unseen
    assert summary["raw_basis"] == {"aa_passed": 2, "slowdown_caught": 2}
    basis, change = summary["trials"][0]["aa"]["judged_changes"]["m/seed"]
    assert basis == "reference" and abs(change) < 0.03
    assert "A/A 2/4, slowdown 2/4" in describe(summary)
