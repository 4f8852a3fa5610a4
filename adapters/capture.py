"""Forward hooks that capture block outputs, components and attention weights, then stop the forward early.

Layer k of a stack is the k-th call of that stack's blocks, so weight-shared stacks (ALBERT) work too.
Every hook is removed in a `finally`, whatever the forward raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .compat import attention_implementation  # noqa: F401  (re-exported: callers import it from here)
from .errors import ExtractionError, InvalidLayerError, OutOfMemoryError
from .layout import LayerMapping
from .memory import is_out_of_memory


class MissingCaptureError(ExtractionError):
    """The forward ran but some requested value never appeared (e.g. weights only returned on request)."""


class StopForward(Exception):
    """Raised from the hook on the deepest block needed; caught by `capture` (early exit)."""


@dataclass(frozen=True)
class Request:
    """One thing to capture: a block output, a component output, or attention weights."""

    key: Any
    stack: str
    index: int
    what: str  # "block" | "attention" | "mlp" | "cross_attention" | "attn_weights" | "cross_attn_weights"


@dataclass
class _StackState:
    calls: int = 0
    current: int = -1


@dataclass
class CaptureResult:
    values: dict[Any, torch.Tensor] = field(default_factory=dict)
    stopped_early: bool = False


def _items(output: Any) -> Any:
    """A module output as a sequence: ModelOutput and plain dicts (SqueezeBERT's blocks) by value order."""
    if hasattr(output, "to_tuple"):
        return output.to_tuple()
    if isinstance(output, dict):
        return tuple(output.values())
    return output


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    seq = _items(output)
    if isinstance(seq, tuple | list):
        for item in seq:
            if isinstance(item, torch.Tensor):
                return item
    raise ExtractionError(f"a hooked module returned {type(output).__name__}, which holds no tensor")


def _flat(output: Any) -> list[Any]:
    """An output's items, nested tuples flattened depth-first (I-BERT returns ((ctx, probs), (scales...)))."""
    seq = _items(output)
    if not isinstance(seq, tuple | list):
        return [seq]
    return [x for item in seq for x in _flat(item)]


def _weights(output: Any, index: int | None) -> torch.Tensor | None:
    """Attention weights in an attention module's output: the declared index, else the last 4-D tensor."""
    seq = _items(output)
    if not isinstance(seq, tuple | list):
        return None
    if index is not None and -len(seq) <= index < len(seq):
        item = seq[index]
        return item if isinstance(item, torch.Tensor) and item.dim() == 4 else None
    found = [t for t in _flat(seq) if isinstance(t, torch.Tensor) and t.dim() == 4]
    if len(found) > 1:  # 4.x decoders also return their key/value states, old T5 its position bias
        probabilities = [t for t in found if _is_softmax(t)]
        found = probabilities or found
    return found[-1] if found else None


def _is_softmax(t: torch.Tensor) -> bool:
    """Attention weights: non-negative rows that sum to 1 (or to 0 where a whole row is masked)."""
    if not t.is_floating_point() or t.numel() == 0:
        return False
    rows = t.detach().float().sum(-1)
    return bool(t.min() >= 0) and bool((((rows - 1).abs() < 1e-3) | (rows.abs() < 1e-6)).all())


def _token_ids(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The [batch, seq] token ids a module was called with, if any."""
    ids = kwargs.get("input_ids")
    if ids is None and args and isinstance(args[0], torch.Tensor) and not args[0].is_floating_point():
        ids = args[0]
    return ids if isinstance(ids, torch.Tensor) and ids.dim() == 2 else None


def _offset(inner: torch.Tensor, outer: torch.Tensor) -> int | None:
    """Where the caller's ids sit inside the (longer) ids the embedding saw: internal padding, prompts."""
    n = outer.shape[1]
    if inner.shape[0] != outer.shape[0] or inner.shape[1] <= n:
        return None
    outer = outer.to(inner.device)
    for off in range(inner.shape[1] - n + 1):
        if torch.equal(inner[:, off:off + n], outer):
            return off
    return None


class _Positions:
    """Puts block outputs back into [batch, seq of the caller's ids, ...].

    Some models run their blocks on another layout: FSMT time-first ([seq, batch, hidden]); Longformer,
    LED and PEGASUS-X pad to a multiple of their attention window or block inside the forward; CPM-Ant
    prepends prompt tokens. The ids each stack's callers passed (pre-hooks on the modules that hold the
    stack) and the ids the input embedding saw, call by call, tell which positions are the caller's;
    anything that cannot be told is left as the model produced it.
    """

    def __init__(self) -> None:
        self.caller: dict[str, torch.Tensor] = {}
        self.embedded: list[torch.Tensor] = []
        self.time_first: dict[str, bool] = {}
        self.offsets: dict[tuple[str, int], int | None] = {}

    def _offset(self, ids: torch.Tensor, length: int) -> int | None:
        """Where the caller's ids sit among `length` embedded positions: in one embedding call of that
        length, or in consecutive calls that add up to it (LED embeds its window padding separately)."""
        calls = [e for e in self.embedded if e.shape[0] == ids.shape[0]]
        for i in range(len(calls)):
            for j in range(i, len(calls)):
                span = calls[i:j + 1]
                if sum(e.shape[1] for e in span) == length:
                    off = _offset(torch.cat([e.to(ids.device) for e in span], dim=1), ids)
                    if off is not None:
                        return off
        return None

    def align(self, stack: str, t: torch.Tensor) -> torch.Tensor:
        ids = self.caller.get(stack)
        if ids is None or t.dim() < 3:
            return t
        batch, n = ids.shape
        lengths = {n} | {e.shape[1] for e in self.embedded if e.shape[0] == batch}
        if t.shape[0] != batch and t.shape[1] == batch and t.shape[0] in lengths:
            self.time_first[stack] = True
        elif t.shape[0] == batch and t.shape[1] in lengths and batch not in lengths:
            self.time_first[stack] = False
        if self.time_first.get(stack) and t.shape[1] == batch:
            t = t.transpose(0, 1)
        if t.dim() == 3 and t.shape[0] == batch and t.shape[2] in lengths and t.shape[1] not in lengths:
            t = t.transpose(1, 2)  # channels first ([batch, hidden, seq]: SqueezeBERT's convolutional blocks)
        if t.shape[0] == batch and t.shape[1] > n:
            key = (stack, t.shape[1])
            if key not in self.offsets:
                self.offsets[key] = self._offset(ids, t.shape[1])
            off = self.offsets[key]
            if off is not None:
                t = t[:, off:off + n]
        return t

    def align_weights(self, stack: str, t: torch.Tensor) -> torch.Tensor:
        """Attention weights as [batch, heads, query, key]: XLNet computes [query, key, batch, heads]."""
        ids = self.caller.get(stack)
        if ids is not None and t.dim() == 4 and t.shape[0] != ids.shape[0] and t.shape[2] == ids.shape[0]:
            return t.permute(2, 3, 0, 1)
        return t


def _version_of(t: torch.Tensor) -> int:
    return t._version


@contextmanager
def _hooks(handles: list[Any]) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        handles.clear()


def capture(
    model: nn.Module,
    mapping: LayerMapping,
    requests: list[Request],
    run_forward: Callable[[], Any],
    *,
    stack_order: tuple[str, ...],
    early_exit: bool = True,
    clone: bool = False,
) -> CaptureResult:
    """Run `run_forward` once with hooks for `requests`; stop after the deepest block any request needs."""
    if not requests:
        raise InvalidLayerError("no layers requested")
    wanted: dict[tuple[str, int, str], list[Any]] = {}
    for r in requests:
        wanted.setdefault((r.stack, r.index, r.what), []).append(r.key)
    last_stack = max((r.stack for r in requests), key=stack_order.index)
    deepest = max(r.index for r in requests if r.stack == last_stack)
    state = {name: _StackState() for name in mapping.stacks}
    result = CaptureResult()
    versions: dict[Any, int] = {}

    positions = _Positions()

    def store(stack: str, what: str, tensor: torch.Tensor | None) -> None:
        keys = wanted.get((stack, state[stack].current, what))
        if not keys or tensor is None:
            return
        value = tensor.detach()
        if what in ("block", "attention", "mlp", "cross_attention"):
            value = positions.align(stack, value)
        else:
            value = positions.align_weights(stack, value)
        value = value.clone() if clone else value
        for k in keys:
            result.values[k] = value
            versions[k] = _version_of(value)

    handles: list[Any] = []
    with _hooks(handles):  # registered inside: a lookup that fails half-way leaves no hook behind
        # sublayer hooks first: when a sublayer's output is also a block's (or returns with it), it must be
        # stored before the block's hook stops the forward
        for r in requests:
            if r.what in ("attention", "mlp", "cross_attention"):
                module = mapping.component(r.stack, r.index, r.what)
                hook = _component_hook(store, r.stack, r.what)
            elif r.what in ("attn_weights", "cross_attn_weights"):
                cross = r.what == "cross_attn_weights"
                mods = mapping.attention_modules(r.stack, r.index, cross=cross)
                if not mods:
                    raise InvalidLayerError(f"no attention module found in {r.stack}.{r.index}")
                module, index = mods[0]
                hook = _weights_hook(store, r.stack, r.what, index)
            else:
                continue
            handles.append(module.register_forward_hook(hook))

        used = {r.stack for r in requests} | {last_stack}
        _position_hooks(model, mapping, used, positions, handles)
        for stack_name in used:
            stack = mapping.stacks[stack_name]

            def pre(_m: nn.Module, _a: Any, s: str = stack_name) -> None:
                state[s].current = state[s].calls

            def post(_m: nn.Module, _a: Any, out: Any, s: str = stack_name) -> None:
                state[s].calls += 1
                store(s, "block", _first_tensor(out))
                if early_exit and s == last_stack and state[s].current == deepest:
                    raise StopForward

            for entry in dict.fromkeys(stack.entries):  # shared blocks are hooked once
                handles.append(entry.register_forward_pre_hook(pre))
            for block in dict.fromkeys(stack.modules):
                handles.append(block.register_forward_hook(post))

        try:
            with torch.no_grad():
                run_forward()
        except StopForward:
            result.stopped_early = True
        except InvalidLayerError:
            raise
        except Exception as exc:  # hooks are gone (finally) before this surfaces
            if is_out_of_memory(exc):
                raise OutOfMemoryError(f"out of memory during the forward: {type(exc).__name__}: {exc}; try "
                                       "fewer or shorter texts, a smaller dtype or device='auto'") from exc
            raise ExtractionError(f"forward pass failed while capturing: {type(exc).__name__}: {exc}") from exc
    if not clone and any(_version_of(result.values[k]) != v for k, v in versions.items()):
        # the model changed a captured tensor in place after we saw it: capture copies instead
        return capture(model, mapping, requests, run_forward, stack_order=stack_order,
                       early_exit=early_exit, clone=True)
    missing = [r.key for r in requests if r.key not in result.values]
    if missing:
        raise MissingCaptureError(f"the forward pass never produced {missing!r} (the module did not run or "
                                  "returned no attention weights)")
    return result


def _position_hooks(model: nn.Module, mapping: LayerMapping, stacks: set[str], positions: _Positions,
                    handles: list[Any]) -> None:
    """Record the ids each stack's callers pass (every module on the path to the stack) and the ids the
    input embedding sees; the innermost caller, called last, wins."""
    for name in stacks:
        parts = mapping.stacks[name].path.split(".")
        for depth in range(len(parts)):
            try:
                holder = model.get_submodule(".".join(parts[:depth]))
            except AttributeError:
                continue

            def seen(_m: nn.Module, args: tuple, kwargs: dict, s: str = name) -> None:
                ids = _token_ids(args, kwargs)
                if ids is not None:
                    positions.caller[s] = ids

            handles.append(holder.register_forward_pre_hook(seen, with_kwargs=True))
    if not mapping.embeddings:
        return
    try:
        table = model.get_submodule(mapping.embeddings)
    except AttributeError:
        return

    def embedded(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = _token_ids(args, kwargs)
        if ids is not None:
            positions.embedded.append(ids)

    weight = getattr(table, "weight", None)
    for mod in model.modules():  # the input embedding, and copies tied to it (LED's encoder embed_tokens)
        if mod is table or (weight is not None and isinstance(mod, nn.Embedding) and mod.weight is weight):
            handles.append(mod.register_forward_pre_hook(embedded, with_kwargs=True))


def _component_hook(store: Callable[..., None], stack: str, what: str) -> Callable[..., None]:
    def hook(_m: nn.Module, _a: Any, out: Any) -> None:
        store(stack, what, _first_tensor(out))

    return hook


def _weights_hook(store: Callable[..., None], stack: str, what: str, index: int | None) -> Callable[..., None]:
    def hook(_m: nn.Module, _a: Any, out: Any) -> None:
        store(stack, what, _weights(out, index))

    return hook
