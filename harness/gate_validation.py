"""Is the gate trustworthy? Count its false alarms (A/A) and its catches (an injected slowdown) on real runs.

`python -m harness validate-gate` runs one suite as separate pytest processes, interleaved in time so drift
hits both kinds alike: A0, then for each trial i: B_i (every extraction made `slowdown` slower through
`--nm-inject-slowdown`, a real busy wait in the extraction path), then A_i. Trial i's A/A pair is
(A_{i-1}, A_i): the same code twice; its slowdown pair is (A_{i-1}, B_i). Each pair goes through the same
`compare`/`exit_code` as `python -m harness gate`. Issue 5's acceptance: A/A passes (exit 0) in >= 19 of 20
trials, the slowdown is caught (exit 1) in >= 19 of 20.

Every pair is judged twice from the same runs: with the gate as configured (the verdict) and with latency
judged on raw samples (`raw_basis`), so the summary shows what the machine-speed reference changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.gate import GateConfig, compare, exit_code
from harness.results import load_records

REPO = Path(__file__).resolve().parent.parent
EXPECTED = {"aa": 0, "slowdown": 1}  # gate exit code each kind of pair should give


@dataclass
class Plan:
    trials: int = 20
    slowdown: float = 0.15
    suite: str = "suites/test_latency.py"
    models: str = "gpt2"
    out: Path = REPO / "results" / "gate-validation"


def pytest_command(plan: Plan, results: Path, slowdown: float) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", plan.suite, "--benchmark-only", "-q", "-p", "no:cacheprovider",
           "--nm-models", plan.models, "--nm-results", str(results), "--nm-no-report"]
    return cmd + (["--nm-inject-slowdown", str(slowdown)] if slowdown else [])


def run_suite(plan: Plan, results: Path, slowdown: float) -> Path:
    """One real run of the suite in its own process; the folder holding its results file."""
    results.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(pytest_command(plan, results, slowdown), cwd=REPO, capture_output=True, text=True)
    if proc.returncode > 1:  # 1 = a stated target failed: still a measured run
        raise RuntimeError(f"suite run crashed (exit {proc.returncode}): {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return results


def judge(baseline: Path, current: Path, cfg: GateConfig) -> dict[str, Any]:
    comparisons = compare(load_records([baseline]), load_records([current]), cfg)
    flagged = [c.to_dict() for c in comparisons if c.outcome in ("regression", "incomparable", "target_fail")]
    latency = [c for c in comparisons if c.key[2] == "extraction_latency"]
    return {"exit_code": exit_code(comparisons), "comparisons": len(comparisons), "flagged": flagged,
            "latency_changes": {f"{c.key[1]}/{c.key[3]}": c.change for c in latency},
            "judged_changes": {f"{c.key[1]}/{c.key[3]}": [c.basis, c.judged_change] for c in latency}}


def _counts(trials: list[dict[str, Any]], basis: str | None = None) -> dict[str, int]:
    """How many trials of each kind gave the expected exit code (under `basis`'s judgement when given)."""
    return {kind: sum((t[basis] if basis else t)[kind]["exit_code"] == code for t in trials)
            for kind, code in EXPECTED.items()}


def validate(plan: Plan, cfg: GateConfig | None = None,
             runner: Callable[[Plan, Path, float], Path] = run_suite) -> dict[str, Any]:
    """Run the interleaved sequence and judge every pair; the summary also goes to plan.out/summary.json."""
    cfg = cfg or GateConfig()
    raw_cfg = replace(cfg, latency_basis="raw")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    root = plan.out / stamp
    started = time.time()
    previous = runner(plan, root / "A00", 0.0)
    trials = []
    for i in range(1, plan.trials + 1):
        slowed = runner(plan, root / f"B{i:02d}", plan.slowdown)
        current = runner(plan, root / f"A{i:02d}", 0.0)
        trials.append({"trial": i, "aa": judge(previous, current, cfg), "slowdown": judge(previous, slowed, cfg),
                       "raw_basis": {"aa": judge(previous, current, raw_cfg),
                                     "slowdown": judge(previous, slowed, raw_cfg)}})
        previous = current
    counts = _counts(trials)
    raw_counts = _counts(trials, "raw_basis")
    summary = {
        "plan": {"trials": plan.trials, "slowdown": plan.slowdown, "suite": plan.suite, "models": plan.models,
                 "command": " ".join(pytest_command(plan, Path("<dir>"), 0.0))},
        "gate": vars(cfg),
        "aa_passed": counts["aa"], "slowdown_caught": counts["slowdown"], "trials_run": len(trials),
        "raw_basis": {"aa_passed": raw_counts["aa"], "slowdown_caught": raw_counts["slowdown"]},
        "verdict": "pass" if all(c >= plan.trials - 1 for c in counts.values()) else "fail",
        "target": "issue 5: A/A passes in >= 19 of 20; a 15% slowdown is caught in >= 19 of 20",
        "seconds": round(time.time() - started, 1), "folder": str(root), "trials": trials,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def describe(summary: dict[str, Any]) -> str:
    n = summary["trials_run"]
    raw = summary.get("raw_basis") or {}
    return (f"A/A passed {summary['aa_passed']}/{n}; {summary['plan']['slowdown']:.0%} slowdown caught "
            f"{summary['slowdown_caught']}/{n} (gate as configured: latency basis "
            f"{summary['gate'].get('latency_basis')}); verdict {summary['verdict'].upper()} ({summary['target']}); "
            f"judged on raw latency samples instead: A/A {raw.get('aa_passed')}/{n}, slowdown "
            f"{raw.get('slowdown_caught')}/{n}; {summary['seconds']} s; {summary['folder']}/summary.json")
