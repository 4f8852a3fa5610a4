"""Suite profiles: the main job skips the extended suites unless asked (--nm-profile full, or the file named)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXTENDED = ("test_overhead.py", "test_scaling.py", "test_context.py", "test_soak.py", "test_memory_management.py",
            "test_peers.py", "test_compat.py")
MAIN = ("test_detection.py", "test_api_consistency.py", "test_latency.py", "test_memory.py",
        "test_reclamation.py", "test_alignment.py")


def _plan(tmp_path: Path, *args: str) -> str:
    """pytest --setup-plan over the suites for gpt2: skip marks apply, nothing runs, no model loads."""
    cmd = [sys.executable, "-m", "pytest", *args, "--nm-models", "gpt2", "--setup-plan", "-q", "-rs",
           "--nm-no-report", "--nm-results", str(tmp_path), "-p", "no:cacheprovider"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 5), out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def _skipped_files(stdout: str) -> set[str]:
    return {line.split("suites/")[1].split(":")[0] for line in stdout.splitlines()
            if line.startswith("SKIPPED") and "extended suite" in line}


def test_main_profile_skips_exactly_the_extended_suites(tmp_path: Path) -> None:
    assert _skipped_files(_plan(tmp_path, "suites/")) == set(EXTENDED)


def test_full_profile_and_a_named_file_run_extended_suites(tmp_path: Path) -> None:
    assert _skipped_files(_plan(tmp_path, "suites/", "--nm-profile", "full")) == set()
    assert _skipped_files(_plan(tmp_path, "suites/test_soak.py", "suites/test_latency.py")) == set()


def test_unknown_profile_is_a_usage_error(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "pytest", "suites/", "--nm-profile", "everything", "--co", "-q"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 4 and "everything" in out.stderr


@pytest.mark.parametrize("name", EXTENDED + MAIN)
def test_every_suite_file_exists(name: str) -> None:
    """The lists above name real suites; a renamed suite must update them."""
    assert (REPO / "suites" / name).is_file()
