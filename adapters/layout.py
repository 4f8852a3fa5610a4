"""LayerMapping: blocks, attention, MLP and norms of any transformers model, found from its module tree.

Signals, strongest first: the classes transformers names itself (`_can_record_outputs["hidden_states"]`,
`_no_split_modules`), then the longest ModuleList of identical modules. Nothing here is a per-family table,
so a model nobody listed maps the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .errors import InvalidLayerError

COMPONENTS = ("attention", "mlp", "cross_attention")
_CROSS_NAMES = ("crossattention", "encoder_attn", "cross_attn", "encdecattention", "cross_attention")
_MLP_NAMES = ("mlp", "ffn", "feed_forward", "feedforward", "ff", "block_sparse_moe", "moe")
_MLP_OUT_NAMES = ("fc2", "fc_out", "output_dense")  # MLPs written inline in the block: their last linear
_LAYER_RE = re.compile(r"^(?:(encoder|decoder|blocks)\.)?(-?\d+)(?:\.(attention|mlp|cross_attention))?$")


def _recorder(model: nn.Module, key: str) -> tuple[type | None, int | None, str | None]:
    """(class, output index, layer name) of a `_can_record_outputs` entry, if transformers declares one."""
    spec = (getattr(model, "_can_record_outputs", None) or {}).get(key)
    if spec is None:
        return None, None, None
    if isinstance(spec, type):
        return spec, None, None
    return getattr(spec, "target_class", None), getattr(spec, "index", None), getattr(spec, "layer_name", None)


def _is_norm(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return isinstance(module, nn.LayerNorm) or ("norm" in name and "dropout" not in name)


def _is_cross(path: str, module: nn.Module) -> bool:
    low = path.lower().replace("_", "")
    return "cross" in type(module).__name__.lower() or any(n.replace("_", "") in low for n in _CROSS_NAMES)


@dataclass
class Stack:
    """One stack of blocks run in sequence (the only one, or the encoder's/decoder's of an encoder-decoder)."""

    name: str
    path: str
    modules: list[nn.Module]
    num_layers: int
    final_norm: str | None = None

    @property
    def shared(self) -> bool:
        """True when fewer modules than layers exist (ALBERT-style weight sharing: layer = call order)."""
        return len(self.modules) < self.num_layers


@dataclass
class LayerMapping:
    """Where things are in one model; layer k of a stack is the k-th block call of that stack's forward."""

    stacks: dict[str, Stack]
    primary: str
    embeddings: str | None = None
    attention_class: type | None = None
    attention_index: int | None = None
    attention_layer_name: str | None = None
    cross_attention_class: type | None = None
    cross_attention_index: int | None = None
    cross_attention_layer_name: str | None = None
    is_encoder_decoder: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return self.stacks[self.primary].num_layers

    def parse(self, layer: Any) -> tuple[str, int, str | None]:
        """(stack, non-negative index, component or None) for an int or a name like "decoder.3.mlp"."""
        if isinstance(layer, bool) or not isinstance(layer, int | str):
            raise InvalidLayerError(
                f"layer {layer!r} ({type(layer).__name__}) is not an int or a name like '3', '-1', "
                f"'3.mlp', 'decoder.2.cross_attention'"
            )
        stack_name, index, component = self.primary, layer, None
        if isinstance(layer, str):
            match = _LAYER_RE.match(layer.strip())
            if not match:
                raise InvalidLayerError(
                    f"layer name {layer!r} is not of the form [encoder.|decoder.]INDEX[.attention|.mlp|"
                    f".cross_attention]; stacks here: {', '.join(self.stacks)}"
                )
            stack_name = match.group(1) or self.primary
            if stack_name == "blocks" and "blocks" not in self.stacks:
                stack_name = self.primary
            index, component = int(match.group(2)), match.group(3)
        if stack_name not in self.stacks:
            raise InvalidLayerError(f"layer {layer!r}: this model has no {stack_name!r} stack; it has "
                                    f"{', '.join(self.stacks)}")
        n = self.stacks[stack_name].num_layers
        if not -n <= index < n:
            raise InvalidLayerError(
                f"layer {layer!r} is out of range: the {stack_name} stack has {n} layers (0..{n - 1}, or "
                f"-{n}..-1 from the end)"
            )
        if component == "cross_attention" and not (self.is_encoder_decoder and stack_name == "decoder"):
            raise InvalidLayerError(f"layer {layer!r}: cross-attention exists only in a decoder stack of an "
                                    "encoder-decoder")
        return stack_name, index % n, component

    def block(self, stack: str, index: int) -> nn.Module:
        st = self.stacks[stack]
        return st.modules[index % len(st.modules)] if st.shared else st.modules[index]

    def component(self, stack: str, index: int, kind: str) -> nn.Module:
        """The submodule of a block whose output is the named component."""
        found = find_component(self.block(stack, index), kind)
        if found is None:
            raise InvalidLayerError(f"{stack}.{index} has no {kind} submodule that NeuronMap can recognise")
        return found[1]

    def attention_modules(self, stack: str, index: int, cross: bool = False) -> list[tuple[nn.Module, int | None]]:
        """Modules whose output carries attention weights in block `index`, with the output index to read."""
        block = self.block(stack, index)
        cls = self.cross_attention_class if cross else self.attention_class
        idx = self.cross_attention_index if cross else self.attention_index
        lname = self.cross_attention_layer_name if cross else self.attention_layer_name
        found: list[tuple[nn.Module, int | None]] = []
        if cls is not None:
            for path, mod in block.named_modules():
                if isinstance(mod, cls) and _is_cross(path, mod) == cross:
                    if lname and not ("." + path).endswith(lname):
                        continue
                    found.append((mod, idx))
        if not found:  # structural fallback: innermost attention modules of the block
            for path, mod in block.named_modules():
                if "attention" in type(mod).__name__.lower() and _is_cross(path, mod) == cross:
                    inner = [m for p, m in mod.named_modules() if p and "attention" in type(m).__name__.lower()]
                    if not inner:
                        found.append((mod, None))
        return found[:1]

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary for results and model info."""
        return {
            "primary": self.primary,
            "stacks": {
                n: {"path": s.path, "num_layers": s.num_layers, "block_class": type(s.modules[0]).__name__,
                    "shared": s.shared, "final_norm": s.final_norm}
                for n, s in self.stacks.items()
            },
            "embeddings": self.embeddings,
            "attention_class": self.attention_class.__name__ if self.attention_class else None,
            "is_encoder_decoder": self.is_encoder_decoder,
        }


def find_component(block: nn.Module, kind: str) -> tuple[str, nn.Module] | None:
    """Shallowest submodule of a block that is its attention, cross-attention or MLP sublayer."""
    candidates: list[tuple[int, str, nn.Module]] = []
    children = dict(block.named_modules())
    for path, mod in children.items():
        if not path:
            continue
        cls = type(mod).__name__.lower()
        last = path.split(".")[-1].lower()
        if kind in ("attention", "cross_attention"):
            ok = ("attention" in cls or "attn" in last or "attention" in last) and _is_cross(path, mod) == (
                kind == "cross_attention"
            )
        else:
            ok = (
                any(t in cls for t in ("mlp", "feedforward", "layerff", "densereludense", "moe"))
                or last in _MLP_NAMES
                or (last == "output" and "intermediate" in {p.split(".")[-1] for p in children})
            )
            ok = ok and "attention" not in cls and "norm" not in cls
        if ok:
            candidates.append((path.count("."), path, mod))
    if not candidates and kind == "mlp":
        candidates = [(p.count("."), p, m) for p, m in children.items() if p.split(".")[-1] in _MLP_OUT_NAMES]
    if not candidates:
        return None
    _, path, mod = min(candidates, key=lambda c: c[0])
    return path, mod


def _block_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """ModuleLists whose members are all of one class (candidate stacks of blocks)."""
    out = []
    for path, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(m) for m in mod}) == 1:
            out.append((path, mod))
    return out


def _final_norm(model: nn.Module, list_path: str) -> str | None:
    """The norm applied after a stack: a norm sibling registered after the block list in the same parent."""
    parent_path = list_path.rpartition(".")[0]
    parent = model.get_submodule(parent_path) if parent_path else model
    blocks = model.get_submodule(list_path)
    after, before, seen = None, None, False
    for name, child in parent.named_children():
        if child is blocks:
            seen = True
        elif _is_norm(child) and "emb" not in name.lower():  # embedding norms run before the stack
            full = f"{parent_path}.{name}" if parent_path else name
            after, before = (full, before) if seen else (after, full)
    return after or before


def _layer_count(model: nn.Module, stack_name: str, listed: int) -> int:
    """Logical layers of a stack: the config's count when blocks are shared (fewer modules than layers)."""
    cfg = getattr(model, "config", None)
    text = cfg.get_text_config() if cfg is not None and hasattr(cfg, "get_text_config") else cfg
    keys = {"decoder": ("num_decoder_layers", "decoder_layers")}.get(
        stack_name, ("num_hidden_layers", "num_layers", "encoder_layers")
    )
    for key in keys:
        value = getattr(text, key, None)
        if isinstance(value, int) and value > listed and value % listed == 0:
            return value
    return listed


def discover_layout(model: nn.Module) -> LayerMapping:
    """Map any transformers text model; raises InvalidLayerError when no stack of blocks can be found."""
    lists = _block_lists(model)
    hint_classes = set(getattr(model, "_no_split_modules", None) or ())
    block_cls, _, _ = _recorder(model, "hidden_states")
    if block_cls is not None:
        hint_classes.add(block_cls.__name__)
    hinted = [(p, m) for p, m in lists if type(m[0]).__name__ in hint_classes]
    pool = hinted or lists
    # drop lists nested inside members of another candidate (e.g. MoE experts inside a block)
    pool = [(p, m) for p, m in pool if not any(p != q and p.startswith(q + ".") for q, _ in pool)]
    if not pool:
        raise InvalidLayerError(f"no stack of transformer blocks found in {type(model).__name__}")

    def tokens(path: str) -> set[str]:
        return set(path.lower().split("."))

    enc = [(p, m) for p, m in pool if "encoder" in tokens(p)]
    dec = [(p, m) for p, m in pool if "decoder" in tokens(p)]
    stacks: dict[str, Stack] = {}
    if enc and dec:
        for name, group in (("encoder", enc), ("decoder", dec)):
            path, mods = max(group, key=lambda pm: (len(pm[1]), -pm[0].count(".")))
            stacks[name] = Stack(name, path, list(mods), _layer_count(model, name, len(mods)),
                                 _final_norm(model, path))
        primary = "encoder"
    else:
        path, mods = max(pool, key=lambda pm: (len(pm[1]), -pm[0].count(".")))
        stacks["blocks"] = Stack("blocks", path, list(mods), _layer_count(model, "blocks", len(mods)),
                                 _final_norm(model, path))
        primary = "blocks"
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    emb_path = next((p for p, m in model.named_modules() if m is emb), None) if emb is not None else None
    a_cls, a_idx, a_name = _recorder(model, "attentions")
    c_cls, c_idx, c_name = _recorder(model, "cross_attentions")
    return LayerMapping(
        stacks=stacks,
        primary=primary,
        embeddings=emb_path,
        attention_class=a_cls,
        attention_index=a_idx,
        attention_layer_name=a_name,
        cross_attention_class=c_cls,
        cross_attention_index=c_idx,
        cross_attention_layer_name=c_name,
        is_encoder_decoder=len(stacks) == 2,
    )
