"""`python -m harness check`: is a run complete and free of errors? (CI's guard on the main job.)

A stated target that fails is a correct result and does not fail the check; a check that could not
measure (verdict `error`) or a (suite, model) pair with no record does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.results import find_run_files, load_run

MODEL_SUITES = ("detection", "api_consistency", "latency", "memory", "reclamation")


def newest_run(paths: list[Path]) -> Path:
    files = find_run_files(paths)
    if not files:
        raise FileNotFoundError(f"no results files in {', '.join(map(str, paths))}")
    return max(files, key=lambda p: p.stat().st_mtime)


def check_run(path: Path, models: list[str] | None = None, suites: tuple[str, ...] = MODEL_SUITES) -> list[str]:
    """Problems found in one results file (empty when complete and error-free)."""
    data: dict[str, Any] = load_run(path)
    records = data.get("records", [])
    problems = [f"{r.get('suite')}/{r.get('model')}/{r.get('metric')}: error: {r.get('error')}"
                for r in records if r.get("verdict") == "error"]
    if models:
        seen = {(r.get("suite"), r.get("model")) for r in records}
        problems += [f"no {suite} record for {model}" for model in models for suite in suites
                     if (suite, model) not in seen]
    return problems
