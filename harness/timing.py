"""Wall-clock timing: warm-up, many rounds, robust statistics.

Why this shape: on a shared 2-core machine the spread between rounds is 10-30% of the median, so a
single number means little. We keep every sample (in seconds), report median and IQR (robust to the
odd slow round), and offer `interleaved` so that two methods compared in one run see the same machine
state round by round instead of one running entirely before the other.

On CUDA, kernels run asynchronously: a host clock around a call measures only the launches unless the
device is synchronised before the clock stops. `device_sync` builds that synchronisation for the devices a
model lives on, `synchronized` wraps a callable so that timers we do not own (pytest-benchmark) include it,
and `cuda_event_times` reads device-side time from CUDA events (kernel time only, no host overhead).

Every `TimingStats` names the method that produced it (`method`, one of TIMING_METHODS), and so does every
record built from one (`stats.method`): a host-clock figure on CUDA without synchronisation would time the
launches only, and a CUDA-event figure leaves out host work, so the two must never be compared unlabelled.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "TIMING_METHODS",
    "TimingStats",
    "choose_timing_method",
    "cuda_devices",
    "cuda_event_times",
    "device_sync",
    "interleaved",
    "measure",
    "stats_from_samples",
    "synchronized",
    "time_once",
    "timer_info",
    "timing_method",
]

_NS = 1e-9

HOST_CLOCK = "host_clock"  # time.perf_counter(_ns) around the call; right for CPU work
HOST_CLOCK_SYNC = "host_clock_cuda_synchronized"  # the same, each CUDA device synchronised before the clock stops
CUDA_EVENTS = "cuda_events"  # device time between two CUDA events on the current stream (kernels only)
TIMING_METHODS = (HOST_CLOCK, HOST_CLOCK_SYNC, CUDA_EVENTS)


@dataclass(frozen=True)
class TimingStats:
    """Samples of one timed callable (seconds) and their summary."""

    samples: tuple[float, ...] = field(repr=False)
    min: float
    max: float
    mean: float
    median: float
    q1: float
    q3: float
    iqr: float
    rounds: int
    method: str | None = None  # one of TIMING_METHODS; None where the caller did not say

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; raw samples are kept so later analysis can recompute anything."""
        return {
            "samples": list(self.samples),
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "median": self.median,
            "q1": self.q1,
            "q3": self.q3,
            "iqr": self.iqr,
            "rounds": self.rounds,
            "method": self.method,
        }


def _quantile(sorted_xs: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), so numbers match pandas/numpy."""
    n = len(sorted_xs)
    if n == 1:
        return float(sorted_xs[0])
    pos = q * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * frac)


def timing_method(sync: Callable[[], Any] | None, *, events: bool = False) -> str:
    """The TIMING_METHODS name for a timer: CUDA events, or the host clock with or without a device sync."""
    if events:
        return CUDA_EVENTS
    return HOST_CLOCK if sync is None else HOST_CLOCK_SYNC


def choose_timing_method(devices: Any, *, prefer_events: bool = False) -> str:
    """How to time work on `devices` (anything `cuda_devices` accepts): the rule, kept pure so it is tested.

    No CUDA device: the host clock. CUDA: the host clock with every device synchronised, which measures what
    a caller waits for; CUDA events only when asked for and the work lives on one GPU, because an event pair
    times one device's stream and would miss the other GPUs of a device map.
    """
    cuda = cuda_devices(devices)
    if not cuda:
        return HOST_CLOCK
    if prefer_events and len(cuda) == 1:
        return CUDA_EVENTS
    return HOST_CLOCK_SYNC


def stats_from_samples(samples: Sequence[float], method: str | None = None) -> TimingStats:
    """Summarise samples given in seconds, produced by timing `method`. Raises ValueError on an empty sequence."""
    xs = [float(s) for s in samples]
    if not xs:
        raise ValueError("stats_from_samples: no samples")
    s = sorted(xs)
    q1 = _quantile(s, 0.25)
    q3 = _quantile(s, 0.75)
    return TimingStats(
        samples=tuple(xs),
        min=s[0],
        max=s[-1],
        mean=statistics.fmean(xs),
        median=_quantile(s, 0.5),
        q1=q1,
        q3=q3,
        iqr=q3 - q1,
        rounds=len(xs),
        method=method,
    )


def _check_counts(rounds: int, warmup: int) -> None:
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")


def time_once(fn: Callable[[], Any], sync: Callable[[], Any] | None = None) -> float:
    """One timed call. `sync` runs before the clock starts (drain queued device work) and before it stops."""
    if sync is not None:
        sync()
    t0 = time.perf_counter_ns()
    fn()
    if sync is not None:
        sync()
    t1 = time.perf_counter_ns()
    return (t1 - t0) * _NS


def measure(
    fn: Callable[[], Any],
    *,
    rounds: int,
    warmup: int,
    setup: Callable[[], Any] | None = None,
    sync: Callable[[], Any] | None = None,
    teardown: Callable[[], Any] | None = None,
) -> TimingStats:
    """Time `fn()` `rounds` times after `warmup` untimed calls.

    `setup()` runs before every call and `teardown()` after it (warm-up included), both outside the timed
    region; their return values are ignored. `sync` (e.g. `torch.cuda.synchronize`) makes asynchronous device
    work count.
    A collection is forced before the first timed round so garbage from warm-up is not billed to round 1;
    gc stays enabled during rounds because real users pay for it too.
    """
    _check_counts(rounds, warmup)
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
        if teardown is not None:
            teardown()
    if sync is not None:
        sync()
    gc.collect()
    samples: list[float] = []
    for _ in range(rounds):
        if setup is not None:
            setup()
        samples.append(time_once(fn, sync))
        if teardown is not None:
            teardown()
    return stats_from_samples(samples, timing_method(sync))


def interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int,
    sync: Callable[[], Any] | None = None,
) -> dict[str, TimingStats]:
    """Time several callables round by round, rotating the order each round.

    Why: ratios between methods are only fair when both see the same thermal, cache and background-load
    conditions; rotating removes a fixed "always runs second" bias.
    """
    _check_counts(rounds, warmup)
    if not fns:
        raise ValueError("interleaved: no callables given")
    names = list(fns)
    n = len(names)
    for w in range(warmup):
        k = w % n
        for name in names[k:] + names[:k]:
            fns[name]()
    if sync is not None:
        sync()
    gc.collect()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        k = r % n
        for name in names[k:] + names[:k]:
            samples[name].append(time_once(fns[name], sync))
    return {name: stats_from_samples(samples[name], timing_method(sync)) for name in names}


def timer_info(calls: int = 20_000) -> dict[str, Any]:
    """Resolution and overhead of the clock we time with, for the environment section.

    Tells a reader whether a difference of a few microseconds could even be seen.
    """
    info = time.get_clock_info("perf_counter")
    pc = time.perf_counter_ns
    # Smallest non-zero step between consecutive readings = effective resolution.
    smallest = None
    for _ in range(2000):
        a = pc()
        b = pc()
        while b == a:
            b = pc()
        d = b - a
        if smallest is None or d < smallest:
            smallest = d
    t0 = pc()
    for _ in range(calls):
        pc()
    per_call_ns = (pc() - t0) / calls
    noop = measure(lambda: None, rounds=200, warmup=10)
    return {
        "clock": "time.perf_counter_ns",
        "implementation": info.implementation,
        "monotonic": info.monotonic,
        "reported_resolution_s": info.resolution,
        "measured_resolution_s": (smallest or 0) * _NS,
        "call_overhead_s": per_call_ns * _NS,
        "measure_overhead_s": noop.median,
    }


# ---------------------------------------------------------------- CUDA


def cuda_devices(devices: Any) -> list[str]:
    """The distinct CUDA devices among `devices`, as "cuda:N", sorted.

    Accepts a device string ("cpu", "cuda", "cuda:1"), an int (accelerate's device-map value for a GPU), a
    torch.device, an iterable of those, or a device map dict (its values). "cuda" means device 0.
    """
    if devices is None:
        return []
    if isinstance(devices, dict):
        devices = list(devices.values())
    if isinstance(devices, (str, int)) or not isinstance(devices, Iterable):
        devices = [devices]
    found: set[str] = set()
    for d in devices:
        if isinstance(d, bool):
            continue
        if isinstance(d, int):
            found.add(f"cuda:{d}")
            continue
        text = str(d)
        if text == "cuda":
            found.add("cuda:0")
        elif text.startswith("cuda:"):
            found.add(text)
    return sorted(found, key=lambda x: int(x.split(":")[1]))


def device_sync(devices: Any) -> Callable[[], None] | None:
    """A callable that waits for all queued work on every CUDA device in `devices`; None when none is CUDA.

    Why every device: a model spread over several GPUs by a device map finishes only when the last one has.
    Raises RuntimeError when a CUDA device is named but CUDA is not available (a timer must not silently
    fall back to timing launches only).
    """
    cuda = cuda_devices(devices)
    if not cuda:
        return None
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"device_sync: {', '.join(cuda)} named, but CUDA is not available here")
    targets = [torch.device(d) for d in cuda]

    def sync() -> None:
        for d in targets:
            torch.cuda.synchronize(d)

    sync.__qualname__ = f"torch.cuda.synchronize({', '.join(cuda)})"
    return sync


def synchronized(fn: Callable[..., Any], sync: Callable[[], Any] | None) -> Callable[..., Any]:
    """`fn` followed by `sync()` inside the same call, so any timer around the call sees device work finish.

    Used for pytest-benchmark's pedantic mode, whose clock we cannot hook. Only a trailing sync is needed:
    every round ends synchronised, so the next one starts with an empty queue (sync once before the first
    round). With `sync=None`, `fn` itself is returned.
    """
    if sync is None:
        return fn

    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        sync()
        return out

    call.__wrapped__ = fn  # type: ignore[attr-defined]
    return call


def cuda_event_times(
    fn: Callable[[], Any],
    *,
    rounds: int,
    warmup: int,
    device: Any = None,
) -> TimingStats:
    """Device-side time of `fn()` per round from CUDA events recorded on the current stream (seconds).

    What it measures: GPU time between the two events, i.e. the kernels `fn` queued — host-side work
    (tokenising, Python, copies the host waits on) before the first kernel is not counted. Raises
    RuntimeError without CUDA.
    """
    _check_counts(rounds, warmup)
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("cuda_event_times: CUDA is not available here")
    dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize(dev)
    gc.collect()
    samples: list[float] = []
    with torch.cuda.device(dev):
        for _ in range(rounds):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1000.0)  # elapsed_time is in milliseconds
    return stats_from_samples(samples, CUDA_EVENTS)
