"""GPU facts through NVML (nvidia-ml-py) and torch.cuda: device memory, per-process memory, context overhead.

Why a module of its own: these figures need the driver, which most machines running the suites lack, so
every function here degrades to `None` plus a `reason` instead of raising — a CPU run must record why a GPU
figure is absent, not crash or write 0.

Device identity: NVML numbers GPUs in PCI order and ignores CUDA_VISIBLE_DEVICES; torch numbers only the
visible ones, in CUDA's order. The two are matched by UUID (`nvml_handle_for_cuda`), never by index.

Per-process memory: NVML lists the processes using a GPU by PID, but in a container with its own PID
namespace those are host PIDs, and our `os.getpid()` is not among them. Then the per-process figure is
`None` with that reason; the device-wide figure still holds (and includes other processes' memory).

`CudaMemoryProbe` gathers all of these around a block for the isolated memory probes (harness.probes);
`baseline_dir` names the committed baseline folder of a GPU model (`python -m harness.gpu baseline-dir`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "CudaMemoryProbe",
    "baseline_dir",
    "context_overhead",
    "cuda_available",
    "cuda_devices_for_option",
    "cuda_driver_version",
    "gpu_memory_snapshot",
    "gpu_slug",
    "measure_context_overhead",
    "nvml",
    "nvml_device_memory",
    "nvml_handle_for_cuda",
    "nvml_process_memory",
    "nvml_str",
    "process_memory_from_list",
    "torch_cuda_uuid",
]


def nvml_str(v: Any) -> str:
    """NVML's strings: bytes in older nvidia-ml-py releases, str in newer ones."""
    return v.decode() if isinstance(v, bytes) else str(v)


@contextlib.contextmanager
def nvml() -> Iterator[tuple[Any, str | None]]:
    """`with nvml() as (pynvml, reason)`: an initialised NVML (shut down on exit), or (None, why not)."""
    try:
        import pynvml
    except Exception as exc:
        yield None, f"nvidia-ml-py is not importable: {type(exc).__name__}: {exc}"
        return
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded on machines without a GPU
        yield None, f"NVML could not start (no NVIDIA driver here?): {type(exc).__name__}: {exc}"
        return
    try:
        yield pynvml, None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def cuda_available() -> bool:
    """torch sees a CUDA device (False when torch is missing or a CPU build)."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def cuda_driver_version() -> str | None:
    """Highest CUDA version the installed driver supports ("12.4"), from NVML; None without a driver."""
    with nvml() as (pynvml, _):
        if pynvml is None:
            return None
        try:
            v = int(pynvml.nvmlSystemGetCudaDriverVersion())
        except Exception:
            return None
        return f"{v // 1000}.{(v % 1000) // 10}"


def torch_cuda_uuid(index: int) -> str | None:
    """UUID of torch's CUDA device `index` in NVML's spelling ("GPU-…"); None when torch cannot say."""
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(index).uuid)
    except Exception:
        return None
    if not uuid:
        return None
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


def _cuda_index(device: Any) -> int:
    """torch's index for "cuda", "cuda:1", 1 or a torch.device (current device when none is given)."""
    import torch

    if device is None or device == "cuda":
        return int(torch.cuda.current_device())
    if isinstance(device, int):
        return device
    dev = torch.device(device)
    if dev.type != "cuda":
        raise ValueError(f"not a CUDA device: {device!r}")
    return int(dev.index if dev.index is not None else torch.cuda.current_device())


def nvml_handle_for_cuda(pynvml: Any, device: Any = None) -> tuple[Any, str | None]:
    """(NVML handle, None) of torch's CUDA `device`, matched by UUID; (None, reason) when it cannot be."""
    try:
        uuid = torch_cuda_uuid(_cuda_index(device))
    except Exception as exc:
        return None, f"torch cannot name CUDA device {device!r}: {type(exc).__name__}: {exc}"
    if uuid is None:
        return None, f"torch reports no UUID for CUDA device {device!r}"
    try:
        return pynvml.nvmlDeviceGetHandleByUUID(uuid), None
    except Exception as exc:
        return None, f"NVML has no device with UUID {uuid}: {type(exc).__name__}: {exc}"


def nvml_device_memory(device: Any = None) -> dict[str, Any]:
    """Device-wide memory as the driver sees it (every process, contexts included) for a torch CUDA device.

    Returns total/used/free bytes, or the same keys as None with a `reason`.
    """
    out: dict[str, Any] = {"total_bytes": None, "used_bytes": None, "free_bytes": None, "reason": None}
    with nvml() as (pynvml, reason):
        if pynvml is None:
            out["reason"] = reason
            return out
        handle, reason = nvml_handle_for_cuda(pynvml, device)
        if handle is None:
            out["reason"] = reason
            return out
        try:
            m = pynvml.nvmlDeviceGetMemoryInfo(handle)
        except Exception as exc:
            out["reason"] = f"nvmlDeviceGetMemoryInfo failed: {type(exc).__name__}: {exc}"
            return out
        out.update(total_bytes=int(m.total), used_bytes=int(m.used), free_bytes=int(m.free))
        return out


def _processes(pynvml: Any, handle: Any) -> list[Any]:
    procs: list[Any] = []
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        fn = getattr(pynvml, getter, None)
        if fn is None:
            continue
        with contextlib.suppress(Exception):
            procs.extend(fn(handle))
    return procs


def process_memory_from_list(procs: list[Any], pid: int) -> dict[str, Any]:
    """Our figure from NVML's process list, or None and why (kept apart from NVML so it can be tested)."""
    pids = sorted({int(p.pid) for p in procs})
    out: dict[str, Any] = {"pid": pid, "used_bytes": None, "pids_seen": pids[:32], "reason": None}
    mine = [p for p in procs if int(p.pid) == pid]
    if mine:
        used = [getattr(p, "usedGpuMemory", None) for p in mine]
        if any(u is None for u in used):
            out["reason"] = "NVML lists this process but reports its memory as not available (driver/permissions)"
        else:
            out["used_bytes"] = int(max(used))  # one process is listed once per context kind; not a sum
    elif pids:
        out["reason"] = (f"this process (pid {pid}) is not among the PIDs NVML reports ({len(pids)} seen): "
                         "inside a container NVML reports host PIDs, so per-process figures are invisible here")
    else:
        out["reason"] = "NVML lists no process on this device (no CUDA context yet, or listing not permitted)"
    return out


def nvml_process_memory(device: Any = None, pid: int | None = None) -> dict[str, Any]:
    """GPU memory NVML attributes to process `pid` (default: this one) on torch's CUDA `device`.

    Includes that process's CUDA context and everything its allocator reserved. `used_bytes` is None with a
    `reason` where the figure cannot be seen (no driver, host PIDs in a container, not permitted).
    """
    pid = os.getpid() if pid is None else pid
    with nvml() as (pynvml, reason):
        if pynvml is None:
            return {"pid": pid, "used_bytes": None, "pids_seen": [], "reason": reason}
        handle, reason = nvml_handle_for_cuda(pynvml, device)
        if handle is None:
            return {"pid": pid, "used_bytes": None, "pids_seen": [], "reason": reason}
        return process_memory_from_list(_processes(pynvml, handle), pid)


def gpu_memory_snapshot(device: Any = None) -> dict[str, Any]:
    """Every GPU memory figure at once for a record's `extra`: torch allocator, NVML device, NVML process.

    Without CUDA: {"available": False, "reason": ...}, so a CPU run says why the figures are absent.
    """
    if not cuda_available():
        return {"available": False, "reason": "CUDA is not available to torch in this process"}
    from harness.memory import cuda_peak

    return {
        "available": True,
        "device": str(device) if device is not None else None,
        "torch": cuda_peak(device),
        "nvml_device": nvml_device_memory(device),
        "nvml_process": nvml_process_memory(device),
    }


def measure_context_overhead(device_index: int = 0) -> dict[str, Any]:
    """Device memory a fresh process's CUDA context costs; meant to run in a fresh process (run_isolated).

    Why NVML: the context (kernels, cuBLAS handles, driver state) lives outside torch's allocator, so
    `memory_reserved` never shows it. Stages: NVML used before torch touches CUDA, after `torch.cuda.init()`
    (which may not create the context yet), and after a first 1-element allocation (which must); the
    overhead is the last delta minus what the allocator reserved for that allocation. Where NVML shows our
    process, its own figure (immune to other processes) is used instead of the device-wide delta. The
    "before" figures are read for every NVML device first, because even naming torch's device by UUID
    initialises CUDA.
    """
    out: dict[str, Any] = {"device_index": device_index, "overhead_bytes": None, "method": None, "reason": None}
    with nvml() as (pynvml, reason):
        if pynvml is None:
            out["reason"] = reason
            return out

        def used(handle: Any) -> int:
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)

        # read every device before torch touches CUDA at all: even asking torch for a UUID initialises it
        before_by_uuid: dict[str, int] = {}
        with contextlib.suppress(Exception):
            for i in range(pynvml.nvmlDeviceGetCount()):
                h = pynvml.nvmlDeviceGetHandleByIndex(i)
                before_by_uuid[nvml_str(pynvml.nvmlDeviceGetUUID(h))] = used(h)
        import torch

        if not torch.cuda.is_available():
            out["reason"] = "CUDA is not available to torch"
            return out
        torch.cuda.init()
        uuid = torch_cuda_uuid(device_index)
        try:
            handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        except Exception as exc:
            out["reason"] = f"NVML has no device with UUID {uuid}: {type(exc).__name__}: {exc}"
            return out
        before = before_by_uuid.get(uuid or "")
        after_init = used(handle)
        torch.cuda.set_device(device_index)
        x = torch.zeros(1, device=f"cuda:{device_index}")
        torch.cuda.synchronize(device_index)
        after_alloc = used(handle)
        reserved = int(torch.cuda.memory_reserved(device_index))
        proc = process_memory_from_list(_processes(pynvml, handle), os.getpid())
        del x
        out.update(
            uuid=uuid,
            nvml_used_before_bytes=before,
            nvml_used_after_init_bytes=after_init,
            nvml_used_after_first_alloc_bytes=after_alloc,
            torch_reserved_bytes=reserved,
            process=proc,
            torch_version=torch.__version__,
            cuda_runtime=torch.version.cuda,
        )
        if proc["used_bytes"] is not None:
            out["overhead_bytes"] = proc["used_bytes"] - reserved
            out["method"] = "nvml per-process used minus torch reserved"
        elif before is not None:
            out["overhead_bytes"] = after_alloc - before - reserved
            out["method"] = ("nvml device used after first allocation minus before torch touched CUDA, minus "
                             "torch reserved (device-wide: other processes' activity in between would count)")
        else:
            out["reason"] = f"NVML listed no device with UUID {uuid} before CUDA started, and no per-process figure"
        return out


_OVERHEAD_CACHE: dict[int, dict[str, Any]] = {}


def context_overhead(device_index: int = 0, *, timeout: float = 180.0,
                     runner: Callable[..., dict[str, Any]] | None = None) -> dict[str, Any]:
    """CUDA context overhead of torch's device `device_index`, measured once per process in a fresh one.

    A fresh process, because a process that already holds a context would read a delta of 0. Never
    raises: without CUDA, or when the child fails, `overhead_bytes` is None with the `reason`.
    """
    if device_index in _OVERHEAD_CACHE:
        return _OVERHEAD_CACHE[device_index]
    if runner is None and not cuda_available():
        return {"device_index": device_index, "overhead_bytes": None, "method": None,
                "reason": "CUDA is not available to torch in this process"}
    if runner is None:
        from harness.isolate import run_isolated

        runner = run_isolated
    try:
        out = runner("harness.gpu:measure_context_overhead", {"device_index": device_index}, timeout=timeout)
    except Exception as exc:  # an environment probe must never cost the run
        out = {"device_index": device_index, "overhead_bytes": None, "method": None,
               "reason": f"measurement failed: {type(exc).__name__}: {str(exc)[:500]}"}
    _OVERHEAD_CACHE[device_index] = out
    return out


# ---- probes of a model's CUDA memory (used by harness.probes in fresh processes) ------------------------


def cuda_devices_for_option(device: Any, device_count: int) -> list[str]:
    """The CUDA devices a load with `device` (an --nm-device value) may touch, as "cuda:N".

    Why before the load: peak counters must be reset, and baselines read, before the weights arrive. "auto"
    (an accelerate device map) may use every visible GPU; "cpu", None, or no visible GPU: none.
    """
    if device_count <= 0 or device is None:
        return []
    text = str(device)
    if text == "auto":
        return [f"cuda:{i}" for i in range(device_count)]
    if text == "cuda":
        return ["cuda:0"]
    if text.startswith("cuda:") and text[5:].isdigit():
        index = int(text[5:])
        if index >= device_count:
            raise ValueError(f"{text}: only {device_count} CUDA device(s) visible")
        return [text]
    return []


def _sum_known(values: list[int | None]) -> int | None:
    """Sum of per-device figures; None when any is unknown (a partial sum would read as a smaller figure)."""
    return None if not values or any(v is None for v in values) else sum(v for v in values if v is not None)


class CudaMemoryProbe:
    """Allocator peaks and NVML figures of every CUDA device a block touches: reset on entry, read on exit.

    `with CudaMemoryProbe(["cuda:0"]) as p: load and extract` then `p.to_dict()`. Per device: allocated and
    reserved on entry, the allocator's peaks since the reset (`reset_peak_memory_stats`), the peak allocated
    minus the entry figure, and NVML's device-wide and per-process figures (None plus a reason where NVML
    cannot see them). Totals sum the devices: an upper bound, since each device peaks at its own moment.
    With no devices it records nothing and `to_dict()` is None, so a CPU run carries no fake zeros.
    `snapshot` is injectable so the bookkeeping can be tested without a GPU.
    """

    def __init__(self, devices: list[str], snapshot: Callable[[Any], dict[str, Any]] | None = None,
                 reset: Callable[[Any], bool] | None = None) -> None:
        from harness.memory import cuda_reset_peak

        self.devices = list(devices)
        self._snapshot = snapshot or gpu_memory_snapshot
        self._reset = reset or cuda_reset_peak
        self.before: dict[str, dict[str, Any]] = {}
        self.after: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> CudaMemoryProbe:
        for d in self.devices:
            self.before[d] = self._snapshot(d)  # current allocated/reserved and NVML, before the reset
            self._reset(d)
        return self

    def __exit__(self, *exc: Any) -> None:
        for d in self.devices:
            self.after[d] = self._snapshot(d)

    def to_dict(self) -> dict[str, Any] | None:
        """JSON-ready figures; None when no CUDA device was probed."""
        if not self.devices:
            return None
        per: dict[str, Any] = {}
        for d in self.devices:
            b_torch = (self.before.get(d) or {}).get("torch") or {}
            a = self.after.get(d) or {}
            a_torch = a.get("torch") or {}
            base = b_torch.get("allocated_bytes")
            peak = a_torch.get("max_allocated_bytes")
            b_nvml = ((self.before.get(d) or {}).get("nvml_device") or {}).get("used_bytes")
            a_nvml = (a.get("nvml_device") or {}).get("used_bytes")
            per[d] = {
                "available": a.get("available", False),
                "reason": a.get("reason"),
                "allocated_before_bytes": base,
                "reserved_before_bytes": b_torch.get("reserved_bytes"),
                "torch": a_torch or None,
                "peak_allocated_delta_bytes": None if base is None or peak is None else peak - base,
                "nvml_device": a.get("nvml_device"),
                "nvml_device_used_before_bytes": b_nvml,
                "nvml_device_delta_bytes": None if b_nvml is None or a_nvml is None else a_nvml - b_nvml,
                "nvml_process": a.get("nvml_process"),
            }
        return {
            "devices": per,
            "peak_allocated_delta_bytes": _sum_known([v["peak_allocated_delta_bytes"] for v in per.values()]),
            "max_allocated_bytes": _sum_known([(v["torch"] or {}).get("max_allocated_bytes") for v in per.values()]),
            "max_reserved_bytes": _sum_known([(v["torch"] or {}).get("max_reserved_bytes") for v in per.values()]),
            "nvml_process_used_bytes": _sum_known([(v["nvml_process"] or {}).get("used_bytes")
                                                   for v in per.values()]),
            "nvml_process_reason": next((v["nvml_process"]["reason"] for v in per.values()
                                         if (v["nvml_process"] or {}).get("reason")), None),
        }


# ---- which committed baseline a GPU run is gated against ------------------------------------------------


def gpu_slug(name: str) -> str:
    """A folder name for a GPU model: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    slug = "".join(c if c.isalnum() else "-" for c in name.lower())
    return "-".join(part for part in slug.split("-") if part) or "unknown-gpu"


def baseline_dir(run_files: list[Path], root: str = "results/baselines/gpu") -> str | None:
    """`root/<gpu slug>` for the GPU the runs in `run_files` measured on (their first visible GPU).

    Why per GPU model: the gate's fingerprint refuses to compare figures from different hardware, so an
    H100 baseline cannot gate an A100 run; each GPU model gets its own folder. None when the runs name no
    GPU, or name different ones.
    """
    names: set[str] = set()
    for f in run_files:
        with open(f, encoding="utf-8") as fh:
            env = (json.load(fh).get("environment") or {})
        gpus = env.get("gpus") or []
        visible = [g for g in gpus if g.get("cuda_index") is not None] or gpus
        if visible:
            names.add(str(visible[0].get("name")))
    if len(names) != 1:
        return None
    return f"{root.rstrip('/')}/{gpu_slug(names.pop())}"


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.gpu baseline-dir RESULTS...`: print the baseline folder for those runs' GPU.

    Exit 0 with the folder printed; 1 when the results name no single GPU model. Used by the workflow and
    scripts/gpu_check.sh, so both agree on where a GPU baseline lives.
    """
    import argparse

    from harness.results import find_run_files

    parser = argparse.ArgumentParser(prog="python -m harness.gpu")
    sub = parser.add_subparsers(dest="command", required=True)
    bd = sub.add_parser("baseline-dir", help="the committed baseline folder for the GPU these results ran on")
    bd.add_argument("results", nargs="+", help="results files or folders")
    bd.add_argument("--root", default="results/baselines/gpu")
    args = parser.parse_args(argv)
    folder = baseline_dir(find_run_files([Path(p) for p in args.results]), args.root)
    if folder is None:
        print("these results name no single GPU model (CPU runs, or several GPU models)", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
