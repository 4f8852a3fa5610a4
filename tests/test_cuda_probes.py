"""The GPU side of the isolated memory probes, the timing-method rule and the per-GPU baseline folder.

The bookkeeping (which devices, which deltas, what is None and why) is pure and runs here on fakes; the
probes themselves run for real on a GPU machine and are skipped here with the reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from harness import gpu
from harness.probes import cuda_reclamation
from harness.timing import CUDA_EVENTS, HOST_CLOCK, HOST_CLOCK_SYNC, choose_timing_method, measure, stats_from_samples
from tests.test_cuda_path import NO_CUDA, needs_cuda

REPO = Path(__file__).resolve().parent.parent
MB = 2**20


# ---------------------------------------------------------------- which devices a load may touch


def test_cuda_devices_for_option() -> None:
    assert gpu.cuda_devices_for_option("cpu", 4) == [] and gpu.cuda_devices_for_option(None, 4) == []
    assert gpu.cuda_devices_for_option("cuda", 2) == ["cuda:0"]
    assert gpu.cuda_devices_for_option("cuda:1", 2) == ["cuda:1"]
    assert gpu.cuda_devices_for_option("auto", 3) == ["cuda:0", "cuda:1", "cuda:2"]
    assert gpu.cuda_devices_for_option("auto", 0) == [] and gpu.cuda_devices_for_option("cuda", 0) == []
    with pytest.raises(ValueError, match="only 2 CUDA"):
        gpu.cuda_devices_for_option("cuda:2", 2)


# ---------------------------------------------------------------- CudaMemoryProbe on fake snapshots


def _snap(allocated: int, reserved: int, max_alloc: int, max_res: int, nvml_used: int | None,
          proc_used: int | None, proc_reason: str | None = None) -> dict[str, Any]:
    return {
        "available": True,
        "torch": {"allocated_bytes": allocated, "reserved_bytes": reserved, "max_allocated_bytes": max_alloc,
                  "max_reserved_bytes": max_res},
        "nvml_device": {"used_bytes": nvml_used, "reason": None if nvml_used is not None else "no NVML"},
        "nvml_process": {"used_bytes": proc_used, "reason": proc_reason},
    }


def test_cuda_memory_probe_resets_then_reads_every_device() -> None:
    calls: list[tuple[str, str]] = []
    stages = {
        "cuda:0": iter([_snap(2 * MB, 4 * MB, 9 * MB, 9 * MB, 500 * MB, 600 * MB),
                        _snap(100 * MB, 120 * MB, 130 * MB, 140 * MB, 700 * MB, 800 * MB)]),
        "cuda:1": iter([_snap(0, 0, 0, 0, 400 * MB, None, "host PIDs"),
                        _snap(50 * MB, 64 * MB, 60 * MB, 64 * MB, 480 * MB, None, "host PIDs")]),
    }

    def snapshot(d: str) -> dict[str, Any]:
        calls.append(("snapshot", d))
        return next(stages[d])

    def reset(d: str) -> bool:
        calls.append(("reset", d))
        return True

    with gpu.CudaMemoryProbe(["cuda:0", "cuda:1"], snapshot=snapshot, reset=reset) as probe:
        calls.append(("block", ""))
    # each device's baseline is read before its peak counters are reset, and everything before the block
    assert calls[:5] == [("snapshot", "cuda:0"), ("reset", "cuda:0"), ("snapshot", "cuda:1"), ("reset", "cuda:1"),
                         ("block", "")]
    out = probe.to_dict()
    assert out is not None
    d0, d1 = out["devices"]["cuda:0"], out["devices"]["cuda:1"]
    assert d0["peak_allocated_delta_bytes"] == 128 * MB and d1["peak_allocated_delta_bytes"] == 60 * MB
    assert d0["nvml_device_delta_bytes"] == 200 * MB and d1["nvml_device_delta_bytes"] == 80 * MB
    assert out["peak_allocated_delta_bytes"] == 188 * MB
    assert out["max_allocated_bytes"] == 190 * MB and out["max_reserved_bytes"] == 204 * MB
    # one GPU's per-process figure is invisible: the total is None (not a smaller sum), with the reason
    assert out["nvml_process_used_bytes"] is None and out["nvml_process_reason"] == "host PIDs"


def test_cuda_memory_probe_without_devices_records_nothing() -> None:
    def never(d: str) -> Any:
        raise AssertionError("no device, no snapshot")

    with gpu.CudaMemoryProbe([], snapshot=never, reset=never) as probe:
        pass
    assert probe.to_dict() is None


def test_cuda_reclamation_from_three_snapshots() -> None:
    before = {"cuda:0": _snap(10 * MB, 20 * MB, 0, 0, 500 * MB, 520 * MB)}
    loaded = {"cuda:0": _snap(510 * MB, 600 * MB, 0, 0, 1100 * MB, 1120 * MB)}
    after = {"cuda:0": _snap(10 * MB, 20 * MB, 0, 0, 520 * MB, 540 * MB)}
    out = cuda_reclamation(before, loaded, after)
    assert out["returned_to_baseline"] is True and out["reclaimed_fraction"] == 1.0
    assert out["nvml_device_used"]["loaded"]["cuda:0"] == 1100 * MB and out["reserved_after"]["cuda:0"] == 20 * MB
    leaky = cuda_reclamation(before, loaded, {"cuda:0": _snap(110 * MB, 200 * MB, 0, 0, 600 * MB, None, "host PIDs")})
    assert leaky["returned_to_baseline"] is False and leaky["reclaimed_fraction"] == pytest.approx(0.8)
    assert "host PIDs" in leaky["reasons"]
    # a snapshot without CUDA (available False): unknown, not a fake "returned"
    unknown = cuda_reclamation(before, loaded, {"cuda:0": {"available": False, "reason": "CUDA is gone"}})
    assert unknown["returned_to_baseline"] is None and unknown["reclaimed_fraction"] is None
    assert "CUDA is gone" in unknown["reasons"]


def test_peak_memory_probe_on_the_cpu_has_no_cuda_figures(tmp_path: Path) -> None:
    from harness.probes import peak_memory
    from tests.tiny import build_tiny

    path = str(build_tiny("gpt2", tmp_path / "gpt2"))
    out = peak_memory(path, "seed", device="cpu")
    assert out["cuda"] is None and out["probe"]["delta_bytes"] is not None


@needs_cuda
@pytest.mark.parametrize("probe", ["peak_memory", "reclamation"])
def test_memory_probes_measure_on_cuda(tmp_path: Path, probe: str) -> None:
    from harness.isolate import run_isolated
    from tests.tiny import build_tiny

    path = str(build_tiny("gpt2", tmp_path / "gpt2"))
    kwargs: dict[str, Any] = {"model": path, "device": "cuda", "dtype": "float16"}
    if probe == "peak_memory":
        kwargs["workload"] = "seed"
    out = run_isolated(f"harness.probes:{probe}", kwargs, timeout=600)
    cuda = out["cuda"]
    assert cuda is not None and out["info"]["device"].startswith("cuda") and out["info"]["dtype"] == "float16"
    overhead = cuda["context_overhead"]
    assert (overhead["overhead_bytes"] or 0) > 0 or overhead["reason"], overhead
    if probe == "peak_memory":
        assert cuda["peak_allocated_delta_bytes"] > 0 and cuda["max_reserved_bytes"] >= cuda["max_allocated_bytes"]
        dev = cuda["devices"]["cuda:0"]
        assert dev["nvml_device"]["used_bytes"] > 0 or dev["nvml_device"]["reason"]
        assert cuda["nvml_process_used_bytes"] or cuda["nvml_process_reason"]
    else:
        assert cuda["returned_to_baseline"] is True, cuda
        assert cuda["reclaimed_fraction"] is not None and cuda["reclaimed_fraction"] >= 0.99, cuda


# ---------------------------------------------------------------- timing method


def test_choose_timing_method() -> None:
    assert choose_timing_method("cpu") == HOST_CLOCK and choose_timing_method(None) == HOST_CLOCK
    assert choose_timing_method("cuda:0") == HOST_CLOCK_SYNC
    assert choose_timing_method("cuda:0", prefer_events=True) == CUDA_EVENTS
    # events time one device's stream: a map over two GPUs is timed on the host, every GPU synchronised
    assert choose_timing_method({"h.0": 0, "h.1": 1}, prefer_events=True) == HOST_CLOCK_SYNC
    assert choose_timing_method({"h.0": "cpu", "h.1": "disk"}, prefer_events=True) == HOST_CLOCK


def test_every_timer_records_its_method() -> None:
    assert measure(lambda: None, rounds=2, warmup=0).method == HOST_CLOCK
    assert measure(lambda: None, rounds=2, warmup=0, sync=lambda: None).method == HOST_CLOCK_SYNC
    assert stats_from_samples([1.0]).to_dict()["method"] is None
    assert stats_from_samples([1.0], CUDA_EVENTS).to_dict()["method"] == CUDA_EVENTS


def test_gate_refuses_timings_of_different_methods() -> None:
    from harness.gate import compare
    from harness.results import Record

    def lat(method: str | None) -> Record:
        stats = {"samples": [1.0, 1.0, 1.0]} | ({"method": method} if method else {})
        return Record(suite="latency", model="m", metric="extraction_latency", unit="s", value=1.0, stats=stats,
                      workload={"name": "seed"}, verdict="not_applicable")

    (c,) = compare([lat(HOST_CLOCK_SYNC)], [lat(CUDA_EVENTS)])
    assert c.outcome == "incomparable" and "timing method" in c.reasons[0]
    assert compare([lat(HOST_CLOCK_SYNC)], [lat(HOST_CLOCK_SYNC)])[0].outcome == "pass"
    assert compare([lat(None)], [lat(HOST_CLOCK)])[0].outcome == "pass"  # a 1.0 baseline still gates


# ---------------------------------------------------------------- which baseline a GPU run is gated against


def _run_file(folder: Path, name: str, gpus: list[dict[str, Any]] | None) -> Path:
    from harness import SCHEMA_NAME, SCHEMA_VERSION

    folder.mkdir(parents=True, exist_ok=True)
    doc = {"schema": {"name": SCHEMA_NAME, "version": SCHEMA_VERSION}, "run": {"id": name},
           "environment": {"gpus": gpus}, "targets": {}, "records": []}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc))
    return path


def test_gpu_slug_and_baseline_dir(tmp_path: Path) -> None:
    assert gpu.gpu_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert gpu.gpu_slug("  Tesla V100-SXM2-16GB ") == "tesla-v100-sxm2-16gb" and gpu.gpu_slug("--") == "unknown-gpu"
    h100 = {"name": "NVIDIA H100 80GB HBM3", "cuda_index": 0}
    hidden_a100 = {"name": "NVIDIA A100-SXM4-40GB", "cuda_index": None}  # on the machine, not visible
    shards = [_run_file(tmp_path / "ci", "s1", [hidden_a100, h100]), _run_file(tmp_path / "ci", "s2", [h100])]
    assert gpu.baseline_dir(shards) == "results/baselines/gpu/nvidia-h100-80gb-hbm3"
    assert gpu.baseline_dir([_run_file(tmp_path / "cpu", "c", None)]) is None
    mixed = [*shards, _run_file(tmp_path / "mixed", "m", [{"name": "NVIDIA A100-SXM4-40GB", "cuda_index": 0}])]
    assert gpu.baseline_dir(mixed) is None  # two GPU models: no single baseline


def test_baseline_dir_command(tmp_path: Path) -> None:
    _run_file(tmp_path / "ci", "s1", [{"name": "NVIDIA H100 80GB HBM3", "cuda_index": 0}])
    (tmp_path / "ci" / "s1.benchmark.json").write_text("{}")  # pytest-benchmark's JSON beside it is skipped
    r = subprocess.run([sys.executable, "-m", "harness.gpu", "baseline-dir", str(tmp_path / "ci"), "--root", "b/gpu"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "b/gpu/nvidia-h100-80gb-hbm3", r.stderr
    _run_file(tmp_path / "cpu", "c", None)
    r = subprocess.run([sys.executable, "-m", "harness.gpu", "baseline-dir", str(tmp_path / "cpu")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "no single GPU model" in r.stderr


def test_results_of_the_previous_minor_version_still_read(tmp_path: Path) -> None:
    from harness.results import load_run

    path = _run_file(tmp_path, "old", None)
    doc = json.loads(path.read_text())
    doc["schema"]["version"] = "1.0"
    path.write_text(json.dumps(doc))
    assert load_run(path)["schema"]["version"] == "1.0"
    doc["schema"]["version"] = "2.0"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="not readable"):
        load_run(path)


def test_no_cuda_reason_names_the_build() -> None:
    assert ("CPU-only build" in NO_CUDA) == (torch.version.cuda is None)
