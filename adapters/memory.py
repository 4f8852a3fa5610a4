"""Memory: dtype and device choices, device maps planned on the meta device, RAM caps with disk offload,
giving memory back after unload, batch sizing from a budget, and the usage figures users read.

Why plan the device map here instead of passing device_map="auto" to transformers: the plan is computed
before a byte of weights is read (on the meta device, through accelerate), so it can be reported, checked
against a RAM cap, and tested without the hardware it describes (a 2-GPU plan on a CPU-only machine).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch

from . import compat
from .errors import InvalidInputError, OutOfMemoryError

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
GB = 1e9

# device="auto" on a machine without an accelerator and without max_memory: the weights may take at most
# this fraction of the RAM that is *available* at load time; everything else is offloaded to disk. Half
# leaves the other half to the activations, the page cache that disk offload reads through, and to whatever
# else runs on the machine — a model bigger than RAM then loads slowly instead of swapping or being killed.
AUTO_RAM_FRACTION = 0.5
# What a RAM cap keeps free of weights: the process's own RSS at planning time is subtracted too; this
# slack covers the forward's working set for short inputs, allocator slack and a disk-offloaded block's
# dtype conversion. accelerate itself additionally reserves room for the largest block (it is loaded into
# RAM while it runs).
RAM_CAP_SLACK_BYTES = 1_000_000_000
GPU_WEIGHT_FRACTION = 0.9  # of a GPU's free memory, for weights, when device="auto" has no max_memory


# ---- dtype and device ---------------------------------------------------------------------------
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


def dtype_name(dtype: torch.dtype | str | None) -> str | None:
    """'float32' for torch.float32 (results carry names, not reprs)."""
    return None if dtype is None else str(dtype).replace("torch.", "")


_MAP_DEVICE = re.compile(r"^(cpu|disk|mps|cuda(:\d+)?)$")


def resolve_device(device: str | dict | None) -> tuple[str, Any]:
    """(main device, device_map spec) for "cpu" | "cuda[:N]" | "auto" | an accelerate device map.

    The spec is None (one device, no map), "auto" (planned at load time by `plan_device_map`) or the
    caller's dict, validated here so a typo fails before any weights are read.
    """
    if device is None or device == "cpu":
        return "cpu", None
    if isinstance(device, dict):
        if not device:
            raise InvalidInputError("device_map must not be empty")
        for key, value in device.items():
            ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or (
                isinstance(value, str) and _MAP_DEVICE.match(value))
            if not isinstance(key, str) or not ok:
                raise InvalidInputError(f"device_map entry {key!r}: {value!r} is not a GPU index, 'cpu', "
                                        "'disk', 'mps' or 'cuda:N'")
        return main_device_of(device), device
    if device == "auto":
        main = "cuda:0" if torch.cuda.is_available() else "cpu"
        return main, "auto"
    if isinstance(device, str) and device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidInputError(f"device {device!r} was asked for, but CUDA is not available here")
        return (device if ":" in device else "cuda:0"), None
    raise InvalidInputError(f"device {device!r} is not one of 'cpu', 'cuda', 'cuda:N', 'auto' or a device map")


def main_device_of(device_map: dict[str, Any]) -> str:
    """Where inputs go for a device map: its first accelerator, else the CPU (disk-offloaded blocks run there)."""
    for value in device_map.values():
        if isinstance(value, int):
            return f"cuda:{value}"
        if isinstance(value, str) and value.startswith(("cuda", "mps")):
            return value
    return "cpu"


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGT]I?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(value: int | float | str) -> int:
    """Bytes for 8_000_000_000, 8e9, "8GB" (10^9) or "8GiB" (2^30): memory budgets in any common spelling."""
    if isinstance(value, bool):
        raise InvalidInputError(f"memory size must be a number of bytes or a string like '8GB', got {value!r}")
    if isinstance(value, int | float):
        if value < 0 or value != value:
            raise InvalidInputError(f"memory size must be >= 0, got {value!r}")
        return int(value)
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(float(m.group(1)) * _UNITS[(m.group(2) or "B").upper()])
    raise InvalidInputError(f"memory size must be a number of bytes or a string like '8GB', got {value!r}")


def normalize_max_memory(max_memory: dict | None) -> dict[int | str, int] | None:
    """accelerate's max_memory with every size in bytes; keys: GPU index, "cpu", "disk", "mps"."""
    if max_memory is None:
        return None
    if not isinstance(max_memory, dict) or not max_memory:
        raise InvalidInputError(f"max_memory must be a non-empty dict like {{'cpu': '8GB'}}, got {max_memory!r}")
    out: dict[int | str, int] = {}
    for key, size in max_memory.items():
        if isinstance(key, str) and key.startswith("cuda:"):
            key = int(key.split(":", 1)[1])
        if not ((isinstance(key, int) and not isinstance(key, bool) and key >= 0) or key in ("cpu", "disk", "mps")):
            raise InvalidInputError(f"max_memory key {key!r} is not a GPU index, 'cpu', 'disk' or 'mps'")
        out[key] = parse_bytes(size)
    return out


def default_ram_cap_bytes() -> int:
    """The RAM cap device="auto" uses without max_memory on a CPU-only machine: AUTO_RAM_FRACTION of the
    memory available now (not of the total: memory other processes hold is not ours to take)."""
    return int(psutil.virtual_memory().available * AUTO_RAM_FRACTION)


def cpu_weight_budget(ram_cap_bytes: int, rss_now: int | None = None) -> int:
    """Bytes of weights the CPU may hold so that the whole process stays under `ram_cap_bytes`."""
    rss = rss_now if rss_now is not None else psutil.Process(os.getpid()).memory_info().rss
    budget = ram_cap_bytes - rss - RAM_CAP_SLACK_BYTES
    if budget <= 0:
        raise OutOfMemoryError(
            f"a RAM cap of {ram_cap_bytes / GB:.2f} GB leaves no room for weights: this process already holds "
            f"{rss / GB:.2f} GB and the forward needs ~{RAM_CAP_SLACK_BYTES / GB:.1f} GB of slack"
        )
    return budget


# ---- device maps planned on the meta device --------------------------------------------------------
@dataclass
class DevicePlan:
    """A device map computed before loading, and what it puts where (bytes and no-split blocks per device)."""

    device_map: dict[str, int | str]
    max_memory: dict[int | str, int]
    dtype: str
    total_bytes: int
    bytes_per_device: dict[str, int]
    blocks_per_device: dict[str, int]
    num_blocks: int
    largest_block_bytes: int
    ram_cap_bytes: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def offloads_to_disk(self) -> bool:
        return "disk" in self.bytes_per_device

    def summary(self) -> dict[str, Any]:
        """JSON-friendly: per device the blocks and GB it holds, the cap, and the map itself."""
        return {
            "dtype": self.dtype,
            "total_gb": self.total_bytes / GB,
            "num_blocks": self.num_blocks,
            "blocks": dict(self.blocks_per_device),
            "gb": {k: v / GB for k, v in self.bytes_per_device.items()},
            "largest_block_gb": self.largest_block_bytes / GB,
            "max_memory_gb": {str(k): v / GB for k, v in self.max_memory.items()},
            "ram_cap_gb": self.ram_cap_bytes / GB if self.ram_cap_bytes is not None else None,
            "device_map": {k: (v if isinstance(v, int) else str(v)) for k, v in self.device_map.items()},
            "notes": list(self.notes),
        }


@contextlib.contextmanager
def _quiet_accelerate() -> Iterator[None]:
    """A plan for GPUs this machine lacks is legitimate (it is what the plan is for): silence that warning."""
    logger = logging.getLogger("accelerate.utils.modeling")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def meta_model(hf_config: Any, model_class: Any, dtype: torch.dtype) -> torch.nn.Module:
    """The architecture on the meta device: shapes and module tree, no memory (GPT-J-6B in ~1 s)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=True):
        model = model_class(hf_config)
    return model.to(dtype)


def _device_key(value: Any) -> str:
    return str(value)


def _lookup(device_map: dict[str, Any], name: str) -> Any:
    """The device of module/parameter `name` under a map keyed by module prefixes ('' = everything)."""
    best, best_len = device_map.get(""), -1
    for key, value in device_map.items():
        if key and (name == key or name.startswith(key + ".")) and len(key) > best_len:
            best, best_len = value, len(key)
    return best


def describe_device_map(model: torch.nn.Module, device_map: dict[str, Any]) -> tuple[dict, dict, int, int]:
    """(bytes per device, no-split blocks per device, number of blocks, largest block bytes) of a map."""
    no_split = set(getattr(model, "_no_split_modules", None) or ())
    bytes_per: dict[str, int] = {}
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        dev = _device_key(_lookup(device_map, name))
        bytes_per[dev] = bytes_per.get(dev, 0) + tensor.numel() * tensor.element_size()
    blocks: dict[str, int] = {}
    largest = 0
    count = 0
    for name, module in model.named_modules():
        if type(module).__name__ in no_split and not type(module).__name__.endswith("Embeddings"):
            count += 1
            dev = _device_key(_lookup(device_map, name))
            blocks[dev] = blocks.get(dev, 0) + 1
            size = sum(p.numel() * p.element_size() for p in module.parameters())
            largest = max(largest, size)
    return bytes_per, blocks, count, largest


def plan_device_map(
    hf_config: Any,
    model_class: Any,
    dtype: torch.dtype,
    max_memory: dict | None = None,
    *,
    ram_cap_bytes: int | None = None,
    balanced: bool = True,
) -> DevicePlan:
    """Plan where each block goes, on the meta device, through accelerate's infer_auto_device_map.

    max_memory: weights per device (GPU index, "cpu", "disk"), as accelerate means it. Without it: 90% of
    the GPUs' free memory (balanced across GPUs, as transformers' "auto" does) and, for the CPU, the weight
    budget under `ram_cap_bytes` (default on a CPU-only machine: AUTO_RAM_FRACTION of available RAM).
    Whatever does not fit goes to "disk". Works for GPUs that are not there (the plan is only a plan).
    """
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory, get_max_memory

    model = meta_model(hf_config, model_class, dtype)
    no_split = list(getattr(model, "_no_split_modules", None) or [])
    notes: list[str] = []
    limits = normalize_max_memory(max_memory)
    if limits is None:
        # 90% of each GPU's free memory, as transformers' "auto" keeps for a single GPU: room for activations
        limits = {k: int(v * GPU_WEIGHT_FRACTION) for k, v in get_max_memory().items() if isinstance(k, int)}
        cap = ram_cap_bytes if ram_cap_bytes is not None else default_ram_cap_bytes()
        limits["cpu"] = cpu_weight_budget(cap)
        notes.append(f"cpu weights budget from a RAM cap of {cap / GB:.2f} GB")
        ram_cap_bytes = cap
    elif ram_cap_bytes is not None:
        limits["cpu"] = min(limits.get("cpu", ram_cap_bytes), cpu_weight_budget(ram_cap_bytes))
    gpus = [k for k in limits if isinstance(k, int)]
    with _quiet_accelerate():
        if balanced and len(gpus) > 1:
            limits = {k: int(v) for k, v in get_balanced_memory(
                model, max_memory=limits, no_split_module_classes=no_split, dtype=dtype).items()}
        device_map = infer_auto_device_map(model, max_memory=limits, no_split_module_classes=no_split, dtype=dtype)
    device_map = _no_root_entry_on_disk(model, device_map)
    bytes_per, blocks, count, largest = describe_device_map(model, device_map)
    total = sum(bytes_per.values())
    del model
    return DevicePlan(
        device_map=dict(device_map), max_memory=limits, dtype=dtype_name(dtype) or "", total_bytes=total,
        bytes_per_device=bytes_per, blocks_per_device=blocks, num_blocks=count, largest_block_bytes=largest,
        ram_cap_bytes=ram_cap_bytes, notes=notes,
    )


def _no_root_entry_on_disk(model: torch.nn.Module, device_map: dict[str, Any]) -> dict[str, Any]:
    """{"": "disk"} (everything offloaded) as one entry per top-level child: transformers 4.x opens each
    weights file on the root entry's device and has no "disk" device there; 5.x takes either form."""
    if device_map.get("") != "disk":
        return device_map
    out = {name: "disk" for name, _ in model.named_children()}
    out.update({name: "disk" for name, _ in (*model.named_parameters(recurse=False),
                                            *model.named_buffers(recurse=False))})
    return out


def flatten_device_map(model: torch.nn.Module, device_map: dict[str, Any]) -> dict[str, Any]:
    """A map with no key inside another: {"": "cpu", "h.1": "disk"} becomes every sibling on the path to
    "h.1" on "cpu" and "h.1" on "disk" (accelerate's dispatch cannot nest a disk module in a CPU one)."""
    keys = set(device_map)
    if not any(k and any(o != k and (o == "" or k.startswith(o + ".")) for o in keys) for k in keys):
        return dict(device_map)
    out: dict[str, Any] = {}

    def visit(module: torch.nn.Module, prefix: str, inherited: Any) -> None:
        device = device_map.get(prefix, inherited)
        nested = [k for k in keys if k != prefix and (prefix == "" or k.startswith(prefix + "."))]
        if not nested:
            out[prefix] = device
            return
        for pname, _ in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
            out[f"{prefix}.{pname}" if prefix else pname] = device
        for cname, child in module.named_children():
            visit(child, f"{prefix}.{cname}" if prefix else cname, device)

    visit(model, "", device_map.get(""))
    missing = [k for k, v in out.items() if v is None]
    if missing:
        raise InvalidInputError(f"device_map places no device for {missing[:3]}; give a '' entry or cover them")
    return out


def describe_plan(hf_config: Any, model_class: Any, dtype: torch.dtype, device_map: dict[str, Any]) -> DevicePlan:
    """The DevicePlan of a caller's explicit device map (what it puts where), for reporting; nested
    entries are flattened so accelerate can dispatch them."""
    model = meta_model(hf_config, model_class, dtype)
    device_map = flatten_device_map(model, device_map)
    bytes_per, blocks, count, largest = describe_device_map(model, device_map)
    del model
    return DevicePlan(
        device_map=dict(device_map), max_memory={}, dtype=dtype_name(dtype) or "",
        total_bytes=sum(bytes_per.values()), bytes_per_device=bytes_per, blocks_per_device=blocks,
        num_blocks=count, largest_block_bytes=largest, notes=["explicit device map"],
    )


def cast_dispatched(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Cast a model loaded with disk offload to `dtype`: resident weights now, offloaded ones as each block
    streams in (accelerate converts to the dtype its offload index names). Returns the entries retargeted.

    Why: transformers 5 materialises every tensor of a checkpoint while loading, disk-bound ones included;
    when the stored dtype differs from the requested one, the conversion reads them all through the file
    mapping, and the whole checkpoint passes through RSS (LLaMA-2-7B float16 -> float32: 13 GB peak under an
    8 GB cap). Loaded in the stored dtype, the disk-bound tensors are never read at load time.
    """
    for module in model.modules():  # model.to() is refused by accelerate on a dispatched model
        for name, param in list(module._parameters.items()):
            if param is not None and param.is_floating_point() and param.dtype != dtype:
                module._parameters[name] = torch.nn.Parameter(param.data.to(dtype), requires_grad=param.requires_grad)
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.is_floating_point() and buf.element_size() < _itemsize(dtype):
                module._buffers[name] = buf.to(dtype)  # upcast only: rotary tables stay at their precision
    retargeted = 0
    loaders = {id(h.weights_map.dataset): h.weights_map.dataset for m in model.modules()
               if (h := getattr(m, "_hf_hook", None)) is not None
               and getattr(getattr(h, "weights_map", None), "dataset", None) is not None}
    target = dtype_name(dtype)
    for loader in loaders.values():
        for info in getattr(loader, "index", {}).values():
            if isinstance(info, dict) and "dtype" in info and info["dtype"] != target:
                info["dtype"] = target
                retargeted += 1
    if getattr(model, "config", None) is not None:
        compat.set_config_dtype(model.config, dtype)
    return retargeted


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def model_bytes(hf_config: Any, model_class: Any, dtype: torch.dtype) -> int:
    """Bytes of a model's parameters and buffers at `dtype`, from its config alone (meta device)."""
    model = meta_model(hf_config, model_class, dtype)
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def resident_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of parameters and buffers per device they actually occupy (offloaded ones sit on "meta")."""
    out: dict[str, int] = {}
    seen: set[int] = set()
    for t in (*model.parameters(), *model.buffers()):
        if id(t) in seen or t.device.type == "meta":
            continue
        seen.add(id(t))
        key = str(t.device)
        out[key] = out.get(key, 0) + t.numel() * t.element_size()
    return out


# ---- batch sizing ----------------------------------------------------------------------------------
FORWARD_FIXED_BYTES = 64_000_000  # allocator slack and small tensors a forward allocates whatever the batch


def activation_bytes_per_sample(facts: dict[str, Any], seq_len: int, dtype: torch.dtype, captured: int) -> int:
    """Peak working set one text of `seq_len` tokens adds to a no-grad forward (early exit: no LM head).

    Inside a block at its worst: the residual, norm output, q/k/v, attention output, projections (~9 x
    seq x hidden), the MLP's intermediate and its activation (2 x seq x ffn), attention scores and
    probabilities (2 x heads x seq^2); plus every captured output, kept until the call returns.
    """
    hidden = int(facts.get("hidden_size") or 0)
    if hidden <= 0:
        raise InvalidInputError("batch sizing needs the model's hidden size")
    ffn = int(facts.get("intermediate_size") or 4 * hidden)
    heads = int(facts.get("num_heads") or 1)
    elem = torch.empty((), dtype=dtype).element_size()
    block = seq_len * (9 * hidden + 2 * ffn) + 2 * heads * seq_len * seq_len
    return elem * (block + captured * seq_len * hidden)


def largest_batch(budget_bytes: int, weights_bytes: int, per_sample_bytes: int, limit: int = 4096) -> int:
    """Largest batch whose estimate (weights + fixed + batch x per-sample) fits the budget; typed error if none."""
    free = budget_bytes - weights_bytes - FORWARD_FIXED_BYTES
    if per_sample_bytes <= 0 or free < per_sample_bytes:
        raise OutOfMemoryError(
            f"a budget of {budget_bytes / GB:.3f} GB does not fit one text: the weights take "
            f"{weights_bytes / GB:.3f} GB and one text ~{per_sample_bytes / GB:.3f} GB"
        )
    return int(min(limit, free // per_sample_bytes))


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, MemoryError, or a CPU allocator that could not allocate."""
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def measure_peak(fn: Callable[[], Any], device: str = "cpu") -> tuple[Any, int | None]:
    """(fn(), bytes the call added at its peak): VmHWM on the host (exact), max allocated on CUDA."""
    if device.startswith("cuda"):
        dev = torch.device(device)
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        out = fn()
        torch.cuda.synchronize(dev)
        return out, int(torch.cuda.max_memory_allocated(dev) - base)
    from harness.memory import PeakProbe  # installed with adapters; keeps nested probes correct

    with PeakProbe() as probe:
        out = fn()
    return out, probe.delta_bytes


# ---- giving memory back ------------------------------------------------------------------------------
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
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def cuda_allocated() -> dict[int, int] | None:
    """Bytes allocated by tensors on each CUDA device (None without CUDA): the baseline an unload returns to."""
    if not torch.cuda.is_available():
        return None
    return {i: int(torch.cuda.memory_allocated(i)) for i in range(torch.cuda.device_count())}


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

    Fields: process_rss_gb, process_peak_rss_gb (VmHWM: since start or the last peak reset; None off
    Linux), system_memory_gb (used = total - available), system_total_gb, system_available_gb,
    gpu_memory_gb (CUDA allocated, all devices), gpu_reserved_gb, gpu_devices (per device: index, name,
    allocated_gb, reserved_gb, peak_allocated_gb, total_gb), nvml_used_gb (device memory the driver reports
    used, CUDA contexts and other processes included). A figure that cannot be read here is None (the
    GPU fields without CUDA, NVML without the driver), never 0; gpu_devices is then an empty list.
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
                "total_gb": torch.cuda.get_device_properties(i).total_memory / GB,
            })
        usage["gpu_devices"] = devices
        usage["gpu_memory_gb"] = sum(d["allocated_gb"] for d in devices)
        usage["gpu_reserved_gb"] = sum(d["reserved_gb"] for d in devices)
    usage["nvml_used_gb"] = _nvml_used_gb()  # the driver can answer even where torch has no CUDA
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
