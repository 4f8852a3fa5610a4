"""Capture the environment a figure was measured in (GPU name, UUID, driver and CUDA versions included).

Why: a latency or memory number is meaningless without the machine, library versions, thread count and
code revision behind it. Every probe is guarded: a missing tool or library yields None (and a note under
`errors`), never an exception, because losing a whole run's results to an environment probe would be
absurd.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.gpu import nvml_str

__all__ = ["capture_environment", "git_info"]

_REPO_ROOT = Path(__file__).resolve().parent.parent
_PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "safetensors",
    "tokenizers",
    "huggingface-hub",
    "numpy",
    "psutil",
    "nvidia-ml-py",
    "pytest",
    "pytest-benchmark",
    "packaging",
    "transformer-lens",
    "nnsight",
)
_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "TOKENIZERS_PARALLELISM",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "PYTORCH_CUDA_ALLOC_CONF",
)


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _cpu() -> dict[str, Any]:
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:
        physical = None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    return {
        "model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": usable,
    }


def _ram() -> dict[str, Any]:
    import psutil

    vm = psutil.virtual_memory()
    return {"total_bytes": int(vm.total), "available_bytes": int(vm.available)}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _torch() -> dict[str, Any] | None:
    try:
        import torch
    except Exception:
        return None
    info: dict[str, Any] = {
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cuda_available": bool(torch.cuda.is_available()),
        "cuda_version": torch.version.cuda,
        "cudnn_version": None,
        "cuda_device_count": 0,
    }
    if info["cuda_available"]:
        info["cuda_device_count"] = torch.cuda.device_count()
        with contextlib.suppress(Exception):
            info["cudnn_version"] = torch.backends.cudnn.version()
    return info


def _gpus_nvml() -> list[dict[str, Any]] | None:
    """Every GPU the driver knows (visible to this process or not), through harness.gpu's NVML session."""
    from harness.gpu import nvml

    with nvml() as (pynvml, _reason):
        if pynvml is None:
            return None
        driver = pynvml.nvmlSystemGetDriverVersion()
        cuda_index = _cuda_indices_by_uuid()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            uuid = nvml_str(pynvml.nvmlDeviceGetUUID(h))
            cc = None
            with contextlib.suppress(Exception):
                cc = ".".join(str(x) for x in pynvml.nvmlDeviceGetCudaComputeCapability(h))
            gpus.append(
                {
                    "index": i,
                    "name": nvml_str(pynvml.nvmlDeviceGetName(h)),
                    "uuid": uuid,
                    "driver": nvml_str(driver),
                    "memory_total_bytes": int(mem.total),
                    "memory_used_bytes": int(mem.used),
                    "compute_capability": cc,
                    # torch's index of this GPU under CUDA_VISIBLE_DEVICES; None: not visible to this process
                    "cuda_index": cuda_index.get(uuid),
                    "source": "nvml",
                }
            )
        return gpus


def _cuda_indices_by_uuid() -> dict[str, int]:
    """NVML UUID -> torch CUDA index for the devices this process can see (NVML lists all of them)."""
    from harness.gpu import cuda_available, torch_cuda_uuid

    if not cuda_available():
        return {}
    import torch

    out: dict[str, int] = {}
    for i in range(torch.cuda.device_count()):
        uuid = torch_cuda_uuid(i)
        if uuid is not None:
            out[uuid] = i
    return out


def _cuda() -> dict[str, Any]:
    """CUDA facts beyond the per-GPU list: versions, visible devices, and the context's memory overhead.

    Why the overhead: a process's CUDA context costs hundreds of MB of device memory that no torch counter
    shows; a reader comparing NVML figures with allocator figures needs it. Measured in a fresh process
    (harness.gpu.context_overhead), so it is the same whether or not this process already holds a context.
    """
    from harness import gpu

    available = gpu.cuda_available()
    driver = None
    with gpu.nvml() as (pynvml, _reason):
        if pynvml is not None:
            with contextlib.suppress(Exception):
                driver = nvml_str(pynvml.nvmlSystemGetDriverVersion())
    try:
        import torch

        runtime = torch.version.cuda
        count = torch.cuda.device_count() if available else 0
    except Exception:
        runtime, count = None, 0
    return {
        "available": available,
        "reason": None if available else "CUDA is not available to torch (no GPU, no driver, or a CPU build)",
        "driver": driver,
        "driver_cuda_version": gpu.cuda_driver_version(),
        "runtime_version": runtime,
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device_count": count,
        "context_overhead": gpu.context_overhead(0),
    }


def _gpus_torch() -> list[dict[str, Any]] | None:
    try:
        import torch

        from harness.gpu import torch_cuda_uuid

        if not torch.cuda.is_available():
            return None
        out = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append(
                {
                    "index": i,
                    "name": p.name,
                    "uuid": torch_cuda_uuid(i),
                    "driver": None,
                    "memory_total_bytes": int(p.total_memory),
                    "memory_used_bytes": None,
                    "compute_capability": f"{p.major}.{p.minor}",
                    "cuda_index": i,  # torch lists only the visible devices
                    "source": "torch",
                }
            )
        return out
    except Exception:
        return None


def _gpus() -> list[dict[str, Any]] | None:
    """NVML first (driver and context-inclusive memory), torch as a fallback; None when no GPU."""
    gpus = None
    try:
        gpus = _gpus_nvml()
    except Exception:
        gpus = None
    if not gpus:
        gpus = _gpus_torch()
    return gpus or None


def git_info(repo: Path | None = None) -> dict[str, Any] | None:
    """{'commit', 'dirty'} of `repo` (default: this checkout); None outside git or without git.

    Dirty counts untracked, non-ignored files too: they are code that ran.
    """
    cwd = repo or _REPO_ROOT
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain"], cwd=cwd, capture_output=True, text=True, timeout=30)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return {"commit": commit.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return None


def _timer() -> dict[str, Any]:
    from harness.timing import timer_info

    return timer_info()


def _lock() -> dict[str, Any]:
    from harness.lock import drift

    return drift()


def _compat() -> dict[str, Any]:
    from adapters.compat import describe

    return describe()


def capture_environment(repo: Path | None = None) -> dict[str, Any]:
    """Everything needed to interpret a figure later. Never raises; failed probes read None."""
    errors: list[str] = []

    def safe(name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # a probe must never cost the run
            errors.append(f"{name}: {type(e).__name__}: {e}")
            return None

    env: dict[str, Any] = {
        "python": safe(
            "python",
            lambda: {
                "version": platform.python_version(),
                "implementation": platform.python_implementation(),
                "executable": sys.executable,
            },
        ),
        "os": safe(
            "os",
            lambda: {
                "system": platform.system(),
                "release": platform.release(),
                "machine": platform.machine(),
                "platform": platform.platform(),
                "libc": "-".join(x for x in platform.libc_ver() if x) or None,
            },
        ),
        "cpu": safe("cpu", _cpu),
        "ram": safe("ram", _ram),
        "packages": safe("packages", _versions),
        "torch": safe("torch", _torch),
        "gpus": safe("gpus", _gpus),
        "cuda": safe("cuda", _cuda),
        "git": safe("git", lambda: git_info(repo)),
        "env_vars": safe("env_vars", lambda: {k: os.environ.get(k) for k in _ENV_VARS}),
        "timer": safe("timer", _timer),
        "lock": safe("lock", _lock),
        "compat": safe("compat", _compat),
    }
    env["errors"] = errors
    return env
