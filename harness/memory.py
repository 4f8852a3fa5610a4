"""Memory probes: peak RSS on the host, peak allocation on CUDA devices, and glibc trimming.

Why `/proc/self/clear_refs` + `VmHWM`: the kernel tracks the high-water mark of resident memory for us,
so the peak of a short transient is exact with no polling. Writing "5" to clear_refs resets that mark to
the current RSS. Where that file is missing or read-only (non-Linux, some sandboxes) a sampling thread
polls RSS instead and can miss spikes shorter than its interval; each probe records which `method` it used
so a reader can tell an exact figure from an estimate.

The high-water mark is process-wide: any reset erases the peak that an enclosing probe was waiting for.
`reset_peak` therefore hands the mark it is about to erase to every open `PeakProbe` first, which keeps
nested probes correct.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
import threading
from types import TracebackType
from typing import Any

__all__ = [
    "GB",
    "PINNED_MALLOC",
    "PeakProbe",
    "cuda_peak",
    "cuda_reset_peak",
    "malloc_trim",
    "nvml_memory",
    "peak_rss_bytes",
    "pin_malloc",
    "reset_peak",
    "rss_bytes",
]

GB = 1_000_000_000  # the unit of the `peak_memory` metric (decimal, as the stated targets are)

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"

_open_probes: list[PeakProbe] = []
_probes_lock = threading.Lock()


def _status_field(key: str) -> int | None:
    """A `/proc/self/status` field given in kB, as bytes; None where the file or field is absent."""
    try:
        with open(_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int | None:
    """Current resident set size in bytes (VmRSS; psutil where /proc is missing)."""
    v = _status_field("VmRSS")
    if v is not None:
        return v
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return None


def peak_rss_bytes() -> int | None:
    """Peak resident set size since process start or the last `reset_peak()` (VmHWM), in bytes."""
    return _status_field("VmHWM")


def reset_peak() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS. False where that is impossible.

    Open probes are handed the mark first so that a reset inside them does not lose their peak.
    """
    with _probes_lock:
        if _open_probes:
            hwm = peak_rss_bytes()
            if hwm is not None:
                for p in _open_probes:
                    p._carry(hwm)
        try:
            with open(_CLEAR_REFS, "w", encoding="ascii") as f:
                f.write("5")
        except OSError:
            return False
    return True


class PeakProbe:
    """Peak RSS while a block runs: `with PeakProbe() as p: ...` then `p.peak_bytes`, `p.delta_bytes`.

    `baseline_bytes` is RSS on entry; `delta_bytes` = peak - baseline, the memory the block added at its
    worst moment. `method` is "vmhwm" (exact) or "sampler" (polled every `interval` seconds).
    Pass `method="sampler"` to force the fallback (tests, or to compare both).
    """

    def __init__(self, method: str = "auto", interval: float = 0.001) -> None:
        if method not in ("auto", "vmhwm", "sampler"):
            raise ValueError(f"method must be 'auto', 'vmhwm' or 'sampler', got {method!r}")
        self._requested = method
        self.interval = interval
        self.method: str | None = None
        self.baseline_bytes: int | None = None
        self.peak_bytes: int | None = None
        self.end_bytes: int | None = None
        self.samples_taken = 0
        self._carried = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampled_peak = 0

    @property
    def delta_bytes(self) -> int | None:
        if self.peak_bytes is None or self.baseline_bytes is None:
            return None
        return self.peak_bytes - self.baseline_bytes

    def _carry(self, hwm: int) -> None:
        self._carried = max(self._carried, hwm)

    def _sample_loop(self) -> None:
        while not self._stop.is_set():
            v = rss_bytes()
            if v is not None and v > self._sampled_peak:
                self._sampled_peak = v
            self.samples_taken += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakProbe:
        use_hwm = False
        if self._requested in ("auto", "vmhwm"):
            use_hwm = peak_rss_bytes() is not None and reset_peak()
            if not use_hwm and self._requested == "vmhwm":
                raise RuntimeError("PeakProbe(method='vmhwm'): /proc/self/clear_refs is not writable here")
        self.baseline_bytes = rss_bytes()
        if use_hwm:
            self.method = "vmhwm"
            with _probes_lock:
                _open_probes.append(self)
        else:
            self.method = "sampler"
            self._sampled_peak = self.baseline_bytes or 0
            self._thread = threading.Thread(target=self._sample_loop, name="PeakProbe-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end_bytes = rss_bytes()
        if self.method == "vmhwm":
            with _probes_lock:
                if self in _open_probes:
                    _open_probes.remove(self)
            hwm = peak_rss_bytes() or 0
            self.peak_bytes = max(hwm, self._carried, self.end_bytes or 0)
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_bytes = max(self._sampled_peak, self.end_bytes or 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for a record's `extra` or `stats`."""
        return {
            "method": self.method,
            "baseline_bytes": self.baseline_bytes,
            "peak_bytes": self.peak_bytes,
            "delta_bytes": self.delta_bytes,
            "end_bytes": self.end_bytes,
        }


@functools.lru_cache(maxsize=1)
def _glibc() -> Any | None:
    """glibc through ctypes with the two calls typed, or None where it is absent (non-Linux, musl).

    Cached: find_library runs a subprocess, and malloc_trim is called after every unload and probe.
    """
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def malloc_trim() -> bool:
    """Ask glibc to return freed heap memory to the OS (`malloc_trim(0)`).

    Why: without it glibc keeps freed arenas and a reclamation measurement reads far too low (BERT-base:
    39% without, 99% with). Returns True when the call was made (glibc present), False elsewhere.
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


_MALLOPT_PARAMS = {"mmap_threshold": -3, "trim_threshold": -1}  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD (malloc.h)
MiB = 1 << 20
PINNED_MALLOC = {"mmap_threshold": 32 * MiB, "trim_threshold": 512 * MiB}


def pin_malloc(settings: dict[str, int] | None = None) -> dict[str, int] | None:
    """Fix glibc's mmap and trim thresholds for the rest of the process; the settings applied, or None.

    Why: glibc raises its mmap threshold the first time a large mmapped block is freed, so how often an
    extraction's large buffers come from fresh, page-faulting mmaps depends on the process's allocation
    history. Measured on gpt2 batch8x128: 12k to 152k page faults per call in six identical processes,
    1.01 to 1.16 s, while each process's own rounds lay within ~1% - a between-run spread no within-run
    statistic sees, which made the regression gate's A/A runs fail. Pinned at the largest mmap threshold the
    heuristic itself reaches (32 MiB) with a trim threshold that keeps freed blocks for reuse, the same
    process shape gives a few hundred to ~1.5k faults per call in every process. Memory figures are
    unaffected: every peak and reclamation probe calls malloc_trim(0), which ignores the trim threshold.
    """
    applied = dict(PINNED_MALLOC if settings is None else settings)
    for name, value in applied.items():
        if name not in _MALLOPT_PARAMS:
            raise ValueError(f"pin_malloc: unknown setting {name!r} (known: {', '.join(_MALLOPT_PARAMS)})")
        if not isinstance(value, int) or not 0 < value < 2**31:
            raise ValueError(f"pin_malloc: {name} must be a positive int below 2**31 bytes, got {value!r}")
    libc = _glibc()
    if libc is None:
        return None
    for name, value in applied.items():
        if not libc.mallopt(_MALLOPT_PARAMS[name], value):
            raise ValueError(f"glibc refused mallopt {name}={value}")
    return applied


# ---------------------------------------------------------------- CUDA


def _cuda(device: Any) -> tuple[Any, Any] | None:
    """(torch, device) when CUDA is usable, else None. torch is imported lazily: probes stay light."""
    try:
        import torch
    except Exception:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        dev = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
        if dev.type != "cuda":
            return None
        return torch, dev
    except Exception:
        return None


def cuda_reset_peak(device: Any = None) -> bool:
    """Reset the caching allocator's peak counters for `device`; False without CUDA."""
    got = _cuda(device)
    if got is None:
        return False
    torch, dev = got
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    return True


def cuda_peak(device: Any = None) -> dict[str, int] | None:
    """Peak and current allocated/reserved bytes on `device` since the last reset; None without CUDA.

    `allocated` is what tensors used; `reserved` is what the caching allocator held (what other processes
    could not have). Neither includes the CUDA context: see `nvml_memory` for that.
    """
    got = _cuda(device)
    if got is None:
        return None
    torch, dev = got
    torch.cuda.synchronize(dev)
    return {
        "max_allocated_bytes": int(torch.cuda.max_memory_allocated(dev)),
        "max_reserved_bytes": int(torch.cuda.max_memory_reserved(dev)),
        "allocated_bytes": int(torch.cuda.memory_allocated(dev)),
        "reserved_bytes": int(torch.cuda.memory_reserved(dev)),
    }


def nvml_memory(index: int = 0) -> dict[str, int] | None:
    """Device memory as the driver sees it (context included) via nvidia-ml-py; None when unavailable.

    `index` is the NVML index, which can differ from torch's when CUDA_VISIBLE_DEVICES reorders devices
    (harness.gpu.nvml_device_memory takes torch's device and matches by UUID).
    """
    from harness.gpu import nvml

    with nvml() as (pynvml, _reason):
        if pynvml is None:
            return None
        try:
            m = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
        except Exception:
            return None
        return {"total_bytes": int(m.total), "used_bytes": int(m.used), "free_bytes": int(m.free)}
