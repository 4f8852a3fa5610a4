"""The CUDA path: what can be checked without a GPU runs everywhere (fallbacks say None and why, options
parse, environment fields exist, the GPU script refuses clearly); what needs a GPU is skipped here with the
reason and asserts real figures on a machine that has one."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from harness import gpu
from harness.timing import cuda_devices, cuda_event_times, device_sync, measure, synchronized

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"
HAS_CUDA = torch.cuda.is_available()
NO_CUDA = "no CUDA device: torch {} ({}) sees none; runs for real on a GPU machine".format(
    torch.__version__, "CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}")
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)
needs_two_gpus = pytest.mark.skipif(not HAS_CUDA or torch.cuda.device_count() < 2,
                                    reason="needs two CUDA devices (device map across GPUs)")
without_cuda = pytest.mark.skipif(HAS_CUDA, reason="checks the fallback of a machine without CUDA")


# ---------------------------------------------------------------- timing helpers (CPU)


def test_cuda_devices_normalises_strings_ints_and_device_maps() -> None:
    assert cuda_devices(None) == [] and cuda_devices("cpu") == [] and cuda_devices("auto") == []
    assert cuda_devices("cuda") == ["cuda:0"] and cuda_devices(torch.device("cuda", 3)) == ["cuda:3"]
    device_map = {"embed": 0, "h.0": 1, "h.1": 10, "h.2": 2, "lm_head": "cpu", "rest": "disk"}
    assert cuda_devices(device_map) == ["cuda:0", "cuda:1", "cuda:2", "cuda:10"]
    assert cuda_devices(["cuda:1", "cuda:1", 1, "cpu"]) == ["cuda:1"]


def test_device_sync_is_none_off_cuda() -> None:
    assert device_sync("cpu") is None and device_sync(None) is None and device_sync({"x": "cpu"}) is None


@without_cuda
def test_device_sync_refuses_cuda_without_cuda() -> None:
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        device_sync("cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        cuda_event_times(lambda: None, rounds=1, warmup=0)


def test_synchronized_syncs_after_the_call_and_keeps_its_result() -> None:
    order: list[str] = []

    def fn(x: int, y: int = 0) -> int:
        order.append("fn")
        return x + y

    wrapped = synchronized(fn, lambda: order.append("sync"))
    assert wrapped(2, y=3) == 5 and order == ["fn", "sync"]
    assert synchronized(fn, None) is fn


# ---------------------------------------------------------------- NVML and per-process figures (CPU)


class _Proc:
    def __init__(self, pid: int, used: int | None) -> None:
        self.pid, self.usedGpuMemory = pid, used


def test_process_memory_found_hidden_by_host_pids_or_absent() -> None:
    me = 4242
    got = gpu.process_memory_from_list([_Proc(1, 10), _Proc(me, 500), _Proc(me, 300)], me)
    assert got["used_bytes"] == 500 and got["reason"] is None
    hidden = gpu.process_memory_from_list([_Proc(98765, 10)], me)
    assert hidden["used_bytes"] is None and "host PIDs" in hidden["reason"] and hidden["pids_seen"] == [98765]
    none = gpu.process_memory_from_list([], me)
    assert none["used_bytes"] is None and "no process" in none["reason"]
    unknown = gpu.process_memory_from_list([_Proc(me, None)], me)
    assert unknown["used_bytes"] is None and "not available" in unknown["reason"]


def _fake_pynvml(procs: list[_Proc]) -> types.ModuleType:
    m = types.ModuleType("pynvml")
    m.nvmlInit = lambda: None  # type: ignore[attr-defined]
    m.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    m.nvmlSystemGetDriverVersion = lambda: "580.65.06"  # type: ignore[attr-defined]
    m.nvmlSystemGetCudaDriverVersion = lambda: 12080  # type: ignore[attr-defined]
    m.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    m.nvmlDeviceGetHandleByIndex = lambda i: "h0"  # type: ignore[attr-defined]
    m.nvmlDeviceGetHandleByUUID = lambda u: "h0" if u == "GPU-abc" else 1 / 0  # type: ignore[attr-defined]
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"  # type: ignore[attr-defined]
    m.nvmlDeviceGetUUID = lambda h: "GPU-abc"  # type: ignore[attr-defined]
    m.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)  # type: ignore[attr-defined]
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        total=80 * 2**30, used=3 * 2**30, free=77 * 2**30)
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: procs  # type: ignore[attr-defined]
    m.nvmlDeviceGetGraphicsRunningProcesses = lambda h: []  # type: ignore[attr-defined]
    return m


def test_nvml_helpers_through_a_fake_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """The glue from torch's device to NVML's handle (by UUID) and the figures read from it."""
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml([_Proc(os.getpid(), 700 * 2**20)]))
    monkeypatch.setattr(gpu, "torch_cuda_uuid", lambda i: "GPU-abc")
    assert gpu.cuda_driver_version() == "12.8"
    dev = gpu.nvml_device_memory(0)
    assert dev["used_bytes"] == 3 * 2**30 and dev["total_bytes"] == 80 * 2**30 and dev["reason"] is None
    proc = gpu.nvml_process_memory(0)
    assert proc["used_bytes"] == 700 * 2**20 and proc["pid"] == os.getpid()
    monkeypatch.setattr(gpu, "torch_cuda_uuid", lambda i: "GPU-other")
    assert gpu.nvml_device_memory(0)["used_bytes"] is None
    assert "UUID GPU-other" in gpu.nvml_device_memory(0)["reason"]


def test_environment_gpu_fields_through_a_fake_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness import env

    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml([]))
    monkeypatch.setattr(env, "_cuda_indices_by_uuid", lambda: {"GPU-abc": 0})
    (g,) = env._gpus_nvml() or []
    assert g["name"] == "NVIDIA H100 80GB HBM3" and g["uuid"] == "GPU-abc" and g["driver"] == "580.65.06"
    assert g["cuda_index"] == 0 and g["compute_capability"] == "9.0" and g["memory_total_bytes"] == 80 * 2**30
    cuda = env._cuda()
    assert cuda["driver"] == "580.65.06" and cuda["driver_cuda_version"] == "12.8"


@without_cuda
def test_fallbacks_return_none_with_a_reason() -> None:
    snap = gpu.gpu_memory_snapshot("cuda")
    assert snap["available"] is False and snap["reason"]
    over = gpu.context_overhead(0)
    assert over["overhead_bytes"] is None and "not available" in over["reason"]
    for fig in (gpu.nvml_device_memory(0), gpu.nvml_process_memory(0)):
        assert fig["used_bytes"] is None and fig["reason"]


def test_context_overhead_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "_OVERHEAD_CACHE", {})

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("child died")

    out = gpu.context_overhead(0, runner=broken)
    assert out["overhead_bytes"] is None and "child died" in out["reason"]


def test_environment_has_the_gpu_and_cuda_fields() -> None:
    from harness.env import capture_environment

    e = capture_environment()
    assert {"gpus", "cuda", "torch"} <= set(e) and not e["errors"]
    cuda = e["cuda"]
    assert {"available", "reason", "driver", "driver_cuda_version", "runtime_version", "visible_devices",
            "device_count", "context_overhead"} <= set(cuda)
    assert "cuda_version" in e["torch"]
    if not HAS_CUDA:
        assert cuda["available"] is False and cuda["reason"] and cuda["context_overhead"]["overhead_bytes"] is None


# ---------------------------------------------------------------- plugin options (CPU)


def test_device_and_dtype_options_parse() -> None:
    from harness.plugin import parse_device, parse_dtype

    assert [parse_device(x) for x in ("cpu", "CUDA", "auto", "cuda:1")] == ["cpu", "cuda", "auto", "cuda:1"]
    assert [parse_dtype(x) for x in ("fp16", "bf16", "bfloat16", "float32", "half")] == \
        ["float16", "bfloat16", "bfloat16", "float32", "float16"]
    for bad in ("gpu", "cuda:x", "mps"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_device(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        parse_dtype("int8")


def test_loaded_models_pass_device_and_dtype_to_load_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.plugin import LoadedModels

    models = LoadedModels(device="cuda", dtype="bfloat16")
    calls: list[tuple[str, dict[str, Any]]] = []

    def fake_load(name: str, **kwargs: Any) -> Any:
        calls.append((name, kwargs))
        models.analyzer.loaded_models[name] = object()
        return models.analyzer.loaded_models[name]

    monkeypatch.setattr(models.analyzer, "load_model", fake_load)
    models.get("gpt2")
    assert calls == [("gpt2", {"device": "cuda", "dtype": "bfloat16"})]


@without_cuda
def test_suites_refuse_cuda_without_cuda_at_once(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pytest", "suites/test_latency.py", "--nm-device", "cuda",
                        "--collect-only", "-q", "-p", "no:cacheprovider", "--nm-results", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 4, r.stdout + r.stderr  # pytest's usage error
    assert "CUDA is not available" in r.stderr


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_loads_and_extracts_on_cpu(tmp_path: Path, dtype: str) -> None:
    """The dtype path on CPU (torch runs both half types there); the same code runs on CUDA below."""
    from adapters import MultiModelAnalyzer
    from tests.tiny import build_tiny

    path = str(build_tiny("gpt2", tmp_path / "gpt2"))
    an = MultiModelAnalyzer()
    adapter = an.load_model(path, dtype=dtype)
    assert adapter.info()["dtype"] == dtype
    acts = an.extract_activations(path, ["hello world"], [0, -1])
    assert all(t.dtype == getattr(torch, dtype) and torch.isfinite(t.float()).all() for t in acts.values())


# ---------------------------------------------------------------- scripts/gpu_check.sh and workflows (CPU)


def test_gpu_check_script_is_valid_bash_and_shellcheck_clean() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    r = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


@without_cuda
def test_gpu_check_script_fails_clearly_without_cuda_and_dry_runs_shards() -> None:
    # the script probes $PYTHON (default python3) for torch: point it at this interpreter, which has it, so the
    # test never creates a venv in the checkout when python3 on PATH is another Python
    base_env = {**os.environ, "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=300, env=base_env)
    assert r.returncode == 3 and "CUDA is not available" in r.stderr, r.stderr
    r = subprocess.run(["bash", str(SCRIPT), "--gpus", "2", "--dtype", "bf16", "--dry-run"], cwd=REPO,
                       capture_output=True, text=True, timeout=300, env={**base_env, "CUDA_VISIBLE_DEVICES": "5,7"})
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if "--nm-device cuda" in x]
    assert len(lines) == 2
    assert "CUDA_VISIBLE_DEVICES=5 " in lines[0] and "--nm-shard 1/2" in lines[0] and "--nm-dtype bf16" in lines[0]
    assert "CUDA_VISIBLE_DEVICES=7 " in lines[1] and "--nm-shard 2/2" in lines[1]
    assert all("suites/test_memory.py suites/test_reclamation.py" in x and "suites/ " not in x for x in lines)
    # runner 2 of 3 with two GPUs takes global shards 3 and 4 of 6; every suite when asked
    r = subprocess.run(["bash", str(SCRIPT), "--gpus", "2", "--shard", "2/3", "--suites", "all", "--dry-run"],
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**base_env, "CUDA_VISIBLE_DEVICES": ""})
    lines = [x for x in r.stderr.splitlines() if "--nm-device cuda" in x]
    assert r.returncode == 0 and len(lines) == 2, r.stderr
    assert "--nm-shard 3/6" in lines[0] and "CUDA_VISIBLE_DEVICES=0 " in lines[0] and " suites/ " in lines[0]
    assert "--nm-shard 4/6" in lines[1] and "CUDA_VISIBLE_DEVICES=1 " in lines[1]
    for args, message in ((["--gpus", "0"], "--gpus"), (["--shard", "3/2"], "--shard"), (["--shard", "1"], "--shard"),
                          (["--suites", "nope"], "suites/test_nope.py")):
        bad = subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                             env=base_env)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)


def test_shard_split_of_the_script_covers_every_model_once() -> None:
    """The script's global shard numbers ((runner - 1) * gpus + k + 1 of runners * gpus) partition the models."""
    from harness.plugin import shard_items

    models = ["gpt2", "bert-base-uncased", "t5-base", "sentence-transformers/all-MiniLM-L6-v2",
              "HuggingFaceTB/SmolLM2-135M-Instruct", "microsoft/codebert-base"]
    for runners, gpus in ((1, 1), (2, 1), (2, 2), (3, 4)):
        total = runners * gpus
        shards = [(runner - 1) * gpus + k + 1 for runner in range(1, runners + 1) for k in range(gpus)]
        assert sorted(shards) == list(range(1, total + 1))
        ran = [m for i in shards for m in shard_items(models, (i, total))]
        assert sorted(ran) == sorted(models)


def test_workflows_run_the_cuda_suites_on_gpu_runners_and_gate() -> None:
    yaml = pytest.importorskip("yaml")
    gpu_wf = yaml.safe_load((REPO / ".github/workflows/gpu-benchmarks.yml").read_text())
    bench = gpu_wf["jobs"]["bench"]
    assert bench["runs-on"] == ["self-hosted", "gpu"] and len(bench["strategy"]["matrix"]["shard"]) >= 2
    run_step = next(st["run"] for st in bench["steps"] if "gpu_check.sh" in st.get("run", ""))
    assert "--gpus all" in run_step and '--shard "$SHARD"' in run_step  # a process per GPU, a shard per runner
    assert "xdist" not in run_step and "-n auto" not in run_step and "--numprocesses" not in run_step
    gate = gpu_wf["jobs"]["report-and-gate"]
    steps = {st.get("name", ""): st for st in gate["steps"]}
    gate_step = next(st["run"] for name, st in steps.items() if name.startswith("Gate"))
    assert "python -m harness.gpu baseline-dir" in gate_step and "python -m harness gate" in gate_step
    assert "no GPU baseline committed" in gate_step and "exit 0" in gate_step  # absent baseline: said, not failed
    report_step = next(st["run"] for name, st in steps.items() if name.startswith("Report"))
    assert "python -m harness report" in report_step and "GITHUB_STEP_SUMMARY" in report_step
    upload = next(st for name, st in steps.items() if name.startswith("Upload the report"))
    assert "results/ci/report/" in upload["with"]["path"]  # report.html travels as the artifact
    ci = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())
    assert ci["jobs"]["ci"]["runs-on"] == "ubuntu-latest" and "bash .ci/run" in yaml.safe_dump(ci)


# ---------------------------------------------------------------- on a GPU: real figures


@needs_cuda
def test_synchronised_timing_is_at_least_the_kernel_time() -> None:
    a = torch.randn(4096, 4096, device="cuda")
    sync = device_sync("cuda")
    assert sync is not None

    def work() -> None:
        for _ in range(8):
            a @ a

    kernel = cuda_event_times(work, rounds=10, warmup=3)
    synced = measure(work, rounds=10, warmup=3, sync=sync)
    unsynced = measure(work, rounds=10, warmup=3)
    sync()
    assert kernel.median > 0
    assert synced.median >= 0.98 * kernel.median  # the host clock saw the kernels finish
    assert unsynced.median < synced.median  # without sync it times the launches only


@needs_cuda
def test_peak_allocated_reads_a_known_allocation() -> None:
    from harness.memory import cuda_peak, cuda_reset_peak

    torch.cuda.empty_cache()
    assert cuda_reset_peak()
    base = cuda_peak()
    assert base is not None
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")  # 256 MiB
    del x
    peak = cuda_peak()
    assert peak is not None
    assert peak["max_allocated_bytes"] - base["allocated_bytes"] >= 256 * 2**20
    assert peak["max_reserved_bytes"] >= peak["max_allocated_bytes"]
    assert peak["allocated_bytes"] == base["allocated_bytes"]  # freed: back to the baseline


@needs_cuda
def test_nvml_sees_device_and_process_memory() -> None:
    torch.zeros(1, device="cuda")  # this process holds a context now
    dev = gpu.nvml_device_memory("cuda")
    assert dev["reason"] is None, dev
    assert dev["used_bytes"] > 0 and dev["total_bytes"] >= dev["used_bytes"]
    proc = gpu.nvml_process_memory("cuda")
    assert (proc["used_bytes"] or 0) > 0 or proc["reason"]  # a figure, or why it is invisible (host PIDs)
    snap = gpu.gpu_memory_snapshot("cuda")
    assert snap["available"] and snap["torch"]["reserved_bytes"] > 0


@needs_cuda
def test_context_overhead_is_measured_and_positive() -> None:
    over = gpu.context_overhead(0)  # measured in a fresh process
    assert over["overhead_bytes"] is not None and over["overhead_bytes"] > 0, over
    assert over["nvml_used_after_first_alloc_bytes"] > over["nvml_used_before_bytes"] or over["process"]["used_bytes"]


@needs_cuda
def test_environment_names_the_gpu() -> None:
    from harness.env import capture_environment

    e = capture_environment()
    gpus = e["gpus"]
    assert gpus and all(g["name"] and g["uuid"] for g in gpus)
    visible = [g for g in gpus if g.get("cuda_index") == 0 or g["source"] == "torch"]
    assert visible, gpus
    assert e["cuda"]["runtime_version"] == torch.version.cuda and e["cuda"]["device_count"] >= 1
    if gpus[0]["source"] == "nvml":
        assert gpus[0]["driver"] and e["cuda"]["driver_cuda_version"]
        assert e["cuda"]["context_overhead"]["overhead_bytes"] > 0


@needs_cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_on_cuda_matches_float32(tmp_path: Path, dtype: str) -> None:
    from adapters import MultiModelAnalyzer
    from tests.tiny import build_tiny

    path = str(build_tiny("gpt2", tmp_path / "gpt2"))
    an = MultiModelAnalyzer()
    an.load_model(path)
    ref = an.extract_activations(path, ["hello world the cat"], [0, -1])
    an.unload_model(path)
    adapter = an.load_model(path, device="cuda", dtype=dtype)
    assert adapter.info()["device"].startswith("cuda") and adapter.info()["dtype"] == dtype
    got = an.extract_activations(path, ["hello world the cat"], [0, -1])
    for k in ref:
        assert got[k].device.type == "cpu"
        tol = 5e-2 if dtype == "float16" else 1e-1  # bfloat16 keeps 8 mantissa bits
        torch.testing.assert_close(got[k].float(), ref[k], rtol=tol, atol=tol)


def split_device_map(model: torch.nn.Module) -> dict[str, int]:
    """Modules owning weights, in order: first half on GPU 0, second half on GPU 1; tied weights stay together."""
    owners: list[str] = []
    first_owner: dict[int, str] = {}
    placed: dict[str, int] = {}
    for name, module in model.named_modules():
        own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        if name and own:
            owners.append(name)
    for k, name in enumerate(owners):
        module = model.get_submodule(name)
        device = 0 if k < len(owners) // 2 else 1
        for p in module.parameters(recurse=False):
            tied_to = first_owner.setdefault(p.data_ptr(), name)
            if tied_to != name:
                device = placed[tied_to]
        placed[name] = device
    return placed


@needs_two_gpus
def test_device_map_across_two_gpus(tmp_path: Path) -> None:
    """Blocks on two GPUs through an explicit device map: activations cross devices, values match the CPU."""
    from adapters import MultiModelAnalyzer
    from tests.tiny import build_tiny

    path = str(build_tiny("gpt2", tmp_path / "gpt2"))
    an = MultiModelAnalyzer()
    device_map = split_device_map(an.load_model(path).model)
    ref = an.extract_activations(path, ["hello world"], [0, -1])
    an.unload_model(path)
    assert set(device_map.values()) == {0, 1}
    adapter = an.load_model(path, device=device_map)
    placed = {p.device.index for p in adapter.model.parameters()}
    assert placed == {0, 1}, placed
    sync = device_sync(adapter.model.hf_device_map)
    assert sync is not None
    got = an.extract_activations(path, ["hello world"], [0, -1])
    sync()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-4)
