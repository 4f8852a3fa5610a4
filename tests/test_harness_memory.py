"""Unit tests of harness.memory (peak probe, trim, CUDA helpers) and harness.isolate (fresh-process runs)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import memory
from harness.isolate import IsolatedError, run_isolated
from harness.memory import PeakProbe, malloc_trim, peak_rss_bytes, reset_peak, rss_bytes

MB = 1_000_000
SIZE = 200 * MB
TOL = 2 * MB  # allowed error: 2% or 2 MB; we hold the stricter of the two (2 MB = 1% here)

_CLEAR_REFS_OK = os.access("/proc/self/clear_refs", os.W_OK)


def _transient(size: int, hold: float = 0.0) -> None:
    b = bytearray(size)  # zero-filled: every page is touched, so it is resident
    if hold:
        time.sleep(hold)
    del b


def test_rss_readers_give_plausible_bytes() -> None:
    rss = rss_bytes()
    assert rss is not None and 5 * MB < rss < 100_000 * MB
    if sys.platform.startswith("linux"):
        hwm = peak_rss_bytes()
        assert hwm is not None and hwm >= rss - 1 * MB


@pytest.mark.skipif(not _CLEAR_REFS_OK, reason="/proc/self/clear_refs not writable")
@pytest.mark.parametrize("size", [16 * MB, 64 * MB, SIZE, 1000 * MB])
def test_peak_probe_catches_a_transient_within_issue_tolerance(size: int) -> None:
    """A known allocation, freed before the probe ends (a spike between two readings): its peak is seen to
    within max(2 %, 2 MB), issue 5's tolerance."""
    _transient(size)  # first touch of the allocator path outside the probe
    malloc_trim()  # as the suites' probes do: freed heap pages go back, so the allocation is new resident memory
    with PeakProbe() as p:
        _transient(size)
    assert p.method == "vmhwm"
    assert p.baseline_bytes is not None and p.peak_bytes is not None
    assert abs(p.delta_bytes - size) <= max(0.02 * size, TOL), p.to_dict()
    # memory was freed again: the end RSS is back near the baseline
    assert p.end_bytes is not None and p.end_bytes - p.baseline_bytes < 50 * MB


@pytest.mark.skipif(not _CLEAR_REFS_OK, reason="/proc/self/clear_refs not writable")
def test_nested_probe_reset_does_not_erase_outer_peak() -> None:
    with PeakProbe() as outer:
        _transient(SIZE)
        with PeakProbe() as inner:
            _transient(SIZE // 4)
    assert abs(inner.delta_bytes - SIZE // 4) <= TOL
    assert abs(outer.delta_bytes - SIZE) <= TOL, outer.to_dict()


def test_sampler_fallback_catches_a_held_allocation() -> None:
    with PeakProbe(method="sampler", interval=0.001) as p:
        _transient(SIZE, hold=0.1)
    assert p.method == "sampler" and p.samples_taken > 0
    assert abs(p.delta_bytes - SIZE) <= 0.05 * SIZE, p.to_dict()


def test_auto_falls_back_to_sampler_when_clear_refs_is_unwritable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_CLEAR_REFS", "/nonexistent/clear_refs")
    assert reset_peak() is False
    with PeakProbe() as p:
        _transient(SIZE // 4, hold=0.05)
    assert p.method == "sampler"
    with pytest.raises(RuntimeError), PeakProbe(method="vmhwm"):
        pass


def test_probe_rejects_unknown_method() -> None:
    with pytest.raises(ValueError):
        PeakProbe(method="guess")


def test_malloc_trim_returns_bool() -> None:
    got = malloc_trim()
    assert isinstance(got, bool)
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert got is True


_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _GLIBC, reason="mallopt is glibc's")
def test_pin_malloc_reuses_freed_blocks_without_page_faults() -> None:
    """In a fresh process (the thresholds cannot be unset): after pinning, a freed 8 MB block is reused, so
    allocating it again does not fault its pages in again."""
    code = textwrap.dedent("""
        import resource
        from harness.memory import PINNED_MALLOC, pin_malloc
        assert pin_malloc() == PINNED_MALLOC
        def faults():
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        b = bytearray(8_000_000); del b
        f0 = faults()
        for _ in range(20):
            b = bytearray(8_000_000); del b
        print(faults() - f0)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout.splitlines()
    pages = 20 * 8_000_000 // 4096
    assert int(out[0]) < pages // 100, f"{out[0]} page faults for 20 reallocations ({pages} pages)"


@pytest.mark.parametrize("bad", [{"mmap_thresh": 1}, {"mmap_threshold": 0}, {"trim_threshold": 2**31},
                                 {"trim_threshold": "512M"}])
def test_pin_malloc_rejects_bad_settings_before_applying_any(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
        memory.pin_malloc(bad)


def test_cuda_helpers_are_none_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    assert memory.cuda_peak() is None
    assert memory.cuda_reset_peak() is False


def test_cuda_helpers_without_cuda() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        memory.cuda_reset_peak(0)
        x = torch.empty(64 * MB // 4, device="cuda:0")
        peak = memory.cuda_peak(0)
        del x
        assert peak is not None and peak["max_allocated_bytes"] >= 64 * MB
    else:
        assert memory.cuda_peak() is None and memory.cuda_peak("cuda:0") is None
        assert memory.cuda_reset_peak() is False
    assert memory.cuda_peak("cpu") is None
    nv = memory.nvml_memory(0)
    assert nv is None or nv["total_bytes"] > 0


# ---------------------------------------------------------------- isolate

_CHILD_MODULE = textwrap.dedent(
    """
    import os, sys, time

    def probe(size):
        from harness.memory import PeakProbe
        print("libraries love stdout")  # must not disturb the result channel
        with PeakProbe() as p:
            b = bytearray(size)
            del b
        return {"delta": p.delta_bytes, "method": p.method, "cwd": os.getcwd(),
                "pid": os.getpid(), "env": os.environ.get("HARNESS_TEST_MARK")}

    def boom(message):
        print("some noise", file=sys.stderr)
        raise ValueError(message)

    def sleepy(seconds):
        time.sleep(seconds)
        return {}

    def not_a_dict():
        return [1, 2]

    def hard_exit():
        os._exit(3)
    """
)


@pytest.fixture
def child_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "harness_child_mod.py").write_text(_CHILD_MODULE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HARNESS_TEST_MARK", "passed-through")
    monkeypatch.chdir(tmp_path)
    return "harness_child_mod"


def test_run_isolated_round_trip_in_a_fresh_process(child_module: str, tmp_path: Path) -> None:
    out = run_isolated(f"{child_module}:probe", {"size": 50 * MB}, timeout=60)
    assert out["pid"] != os.getpid()
    assert out["env"] == "passed-through"
    assert Path(out["cwd"]).resolve() == tmp_path.resolve()
    if out["method"] == "vmhwm":
        assert abs(out["delta"] - 50 * MB) <= TOL


def test_run_isolated_error_paths(child_module: str) -> None:
    with pytest.raises(IsolatedError) as e:
        run_isolated(f"{child_module}:boom", {"message": "kaboom-42"}, timeout=60)
    assert "ValueError: kaboom-42" in str(e.value)
    assert "kaboom-42" in e.value.stderr_tail and e.value.returncode == 1

    with pytest.raises(IsolatedError) as e:
        run_isolated(f"{child_module}:hard_exit", {}, timeout=60)
    assert e.value.returncode == 3

    with pytest.raises(IsolatedError, match="expected dict"):
        run_isolated(f"{child_module}:not_a_dict", {}, timeout=60)

    with pytest.raises(IsolatedError, match="No module named"):
        run_isolated("no_such_module_xyz:f", {}, timeout=60)

    t0 = time.monotonic()
    with pytest.raises(IsolatedError) as e:
        run_isolated(f"{child_module}:sleepy", {"seconds": 30}, timeout=1.0)
    assert e.value.timed_out and time.monotonic() - t0 < 10

    with pytest.raises(ValueError):
        run_isolated("no_colon", {}, timeout=5)
    with pytest.raises(TypeError):
        run_isolated(f"{child_module}:probe", {"size": object()}, timeout=5)
