"""Memory: dtype and device choices, giving memory back after unload, and the usage figures users read."""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from typing import Any

import psutil
import torch

from .errors import InvalidInputError

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
GB = 1e9


def parse_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype | str:
    """torch dtype for a name; None means float32 on CPU (fast, exact) and the checkpoint's own on CUDA."""
    if dtype is None:
        return torch.float32 if not device.startswith("cuda") else "auto"
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise InvalidInputError(f"dtype {dtype} is not supported; allowed: float32, float16, bfloat16")
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    if dtype == "auto":
        return "auto"
    raise InvalidInputError(f"dtype {dtype!r} is not supported; allowed: float32, float16, bfloat16, auto")


def resolve_device(device: str | dict | None) -> tuple[str, Any]:
    """(main device, device_map for from_pretrained) for "cpu" | "cuda[:N]" | "auto" | an accelerate map."""
    if device is None or device == "cpu":
        return "cpu", None
    if isinstance(device, dict):
        if not device:
            raise InvalidInputError("device_map must not be empty")
        first = next(iter(device.values()))
        return (f"cuda:{first}" if isinstance(first, int) else str(first)), device
    if device == "auto":
        main = "cuda:0" if torch.cuda.is_available() else "cpu"
        return main, "auto"
    if isinstance(device, str) and device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device {device!r} was asked for, but CUDA is not available here")
        return (device if ":" in device else "cuda:0"), None
    raise InvalidInputError(f"device {device!r} is not one of 'cpu', 'cuda', 'cuda:N', 'auto' or a device map")


def malloc_trim() -> bool:
    """Ask glibc to return freed heap pages to the OS (without it glibc keeps much of what a model freed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def release_memory() -> None:
    """After dropping references: collect cycles, trim the C heap, empty the CUDA cache."""
    gc.collect()
    gc.collect()
    malloc_trim()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _proc_status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def get_memory_usage() -> dict[str, Any]:
    """Process and system memory, CUDA per device and NVML device figures, in GB (1e9 bytes).

    Fields: process_rss_gb, process_peak_rss_gb, system_memory_gb (used), system_total_gb,
    system_available_gb, gpu_memory_gb (CUDA allocated, all devices), gpu_reserved_gb, gpu_devices
    (list per device), nvml_used_gb. A figure that cannot be read here is None, never 0.
    """
    vm = psutil.virtual_memory()
    rss = psutil.Process(os.getpid()).memory_info().rss
    peak_kb = _proc_status_kb("VmHWM")
    usage: dict[str, Any] = {
        "process_rss_gb": rss / GB,
        "process_peak_rss_gb": peak_kb * 1024 / GB if peak_kb is not None else None,
        "system_memory_gb": (vm.total - vm.available) / GB,
        "system_total_gb": vm.total / GB,
        "system_available_gb": vm.available / GB,
        "gpu_memory_gb": None,
        "gpu_reserved_gb": None,
        "gpu_devices": [],
        "nvml_used_gb": None,
    }
    if torch.cuda.is_available():
        devices = []
        for i in range(torch.cuda.device_count()):
            devices.append({
                "index": i,
                "name": torch.cuda.get_device_name(i),
                "allocated_gb": torch.cuda.memory_allocated(i) / GB,
                "reserved_gb": torch.cuda.memory_reserved(i) / GB,
                "peak_allocated_gb": torch.cuda.max_memory_allocated(i) / GB,
            })
        usage["gpu_devices"] = devices
        usage["gpu_memory_gb"] = sum(d["allocated_gb"] for d in devices)
        usage["gpu_reserved_gb"] = sum(d["reserved_gb"] for d in devices)
        usage["nvml_used_gb"] = _nvml_used_gb()
    return usage


def _nvml_used_gb() -> float | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            total = 0
            for i in range(pynvml.nvmlDeviceGetCount()):
                total += pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used
            return total / GB
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML absent or not permitted: the figure is unknown, not zero
        return None
