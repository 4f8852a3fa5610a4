"""Committed CPU baselines: where a machine class's baseline lives and the one command that refreshes it.

`python -m harness baseline refresh` runs the main job (default models, main profile unless told otherwise)
into a scratch folder and, only when that run completed, replaces `results/baselines/cpu/<cpu slug>/` with
its results file and a note of how it was made. Why per CPU model: the gate compares like with like, hardware
included, so one machine class's baseline cannot gate another's. `python -m harness baseline dir RESULTS`
prints the folder a run belongs to. GPU baselines live in results/baselines/gpu/ (harness.gpu.baseline_dir).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness.check import check_run
from harness.gpu import gpu_slug
from harness.results import find_run_files, load_run

REPO = Path(__file__).resolve().parent.parent
CPU_ROOT = REPO / "results" / "baselines" / "cpu"


def cpu_baseline_dir(run_files: list[Path], root: Path = CPU_ROOT) -> Path | None:
    """root/<cpu slug> for the CPU model the runs measured on; None when they name none or several."""
    models = {str((load_run(f).get("environment") or {}).get("cpu", {}).get("model")) for f in run_files}
    models.discard("None")
    return root / gpu_slug(models.pop()) if len(models) == 1 else None


def suite_command(results: Path, models: str, profile: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "suites/", "--benchmark-only", "-q", "-p", "no:cacheprovider",
            "--nm-models", models, "--nm-profile", profile, "--nm-results", str(results), "--nm-no-report"]


def refresh(models: str = "default", profile: str = "main", root: Path = CPU_ROOT) -> Path:
    """Run the suites and promote the run to this CPU's baseline folder; the old baseline stays on failure."""
    scratch = REPO / "results" / f".baseline-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    command = suite_command(scratch, models, profile)
    proc = subprocess.run(command, cwd=REPO)
    files = find_run_files([scratch]) if scratch.is_dir() else []
    if proc.returncode > 1 or len(files) != 1:
        raise RuntimeError(f"the baseline run did not complete (pytest exit {proc.returncode}, "
                           f"{len(files)} results files in {scratch}); the committed baseline is unchanged")
    problems = check_run(files[0])
    if problems:
        raise RuntimeError("the baseline run has errors; the committed baseline is unchanged:\n  "
                           + "\n  ".join(problems))
    target = cpu_baseline_dir(files, root)
    if target is None:
        raise RuntimeError(f"{files[0]} names no CPU model; cannot tell which machine class it belongs to")
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    shutil.copy2(files[0], target / files[0].name)
    data = load_run(files[0])
    verdicts: dict[str, int] = {}
    for r in data.get("records", []):
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    (target / "BASELINE.md").write_text(
        f"# CPU baseline: {data['environment']['cpu'].get('model')}\n\n"
        f"Run `{data['run']['id']}` ({data['run']['start']}), git {data['run'].get('git_commit')}, "
        f"models `{models}`, profile `{profile}`; verdicts {json.dumps(verdicts, sort_keys=True)}.\n\n"
        "Refresh (replaces this folder; commit the result): `python -m harness baseline refresh`\n"
        f"Gate a run against it: `python -m harness gate {target.relative_to(REPO)} results/<run>.json`\n",
        encoding="utf-8")
    shutil.rmtree(scratch, ignore_errors=True)
    return target
