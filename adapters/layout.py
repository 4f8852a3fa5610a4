"""LayerMapping: blocks, attention, MLP and norms of any transformers model, found from its module tree.

Signals, strongest first: the classes transformers names itself (`_can_record_outputs["hidden_states"]`,
`_no_split_modules`), then the longest ModuleList of identical modules. Nothing here is a per-family table,
so a model nobody listed maps the same way.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from . import compat
from .errors import InvalidLayerError

COMPONENTS = ("attention", "mlp", "cross_attention")
_CROSS_NAMES = ("crossattention", "encoder_attn", "cross_attn", "encdecattention", "cross_attention")
_MLP_NAMES = ("mlp", "ffn", "feed_forward", "feedforward", "ff", "block_sparse_moe", "moe")
_MLP_OUT_NAMES = ("fc2", "fc_out", "output_dense")  # MLPs written inline in the block: their last linear
_LAYER_RE = re.compile(r"^(?:(encoder|decoder|blocks)\.)?(-?\d+)(?:\.(attention|mlp|cross_attention))?$")


def _recorders(model: nn.Module, key: str) -> list[tuple[type | None, int | None, str | None]]:
    """(class, output index, layer name) of each `_can_record_outputs` entry transformers declares for key.

    An entry is a class, an OutputRecorder, or a list of either (hybrid stacks name one class per kind).
    """
    spec = (getattr(model, "_can_record_outputs", None) or {}).get(key)
    specs = spec if isinstance(spec, list | tuple) else [spec] if spec is not None else []
    out = []
    for one in specs:
        if isinstance(one, type):
            out.append((one, None, None))
        elif getattr(one, "target_class", None) is not None:
            out.append((one.target_class, getattr(one, "index", None), getattr(one, "layer_name", None)))
    return out


def _recorder(model: nn.Module, key: str) -> tuple[type | None, int | None, str | None]:
    """The first `_can_record_outputs` entry for key, or (None, None, None)."""
    found = _recorders(model, key)
    return found[0] if found else (None, None, None)


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
    # blocks written as sibling ModuleLists (XLM: attentions[k], layer_norm1[k], ffns[k], layer_norm2[k]):
    # name → list, in execution order; `modules` is then the last list, whose k-th output leaves layer k
    parallel: dict[str, list[nn.Module]] | None = None

    @property
    def entries(self) -> list[nn.Module]:
        """The modules that start each layer (the first list of a parallel stack, else the blocks)."""
        return next(iter(self.parallel.values())) if self.parallel else self.modules

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

    def block_scope(self, stack: str, index: int) -> nn.Module:
        """The module to search for a block's sublayers (parallel stacks: the k-th member of every list)."""
        st = self.stacks[stack]
        if not st.parallel:
            return self.block(stack, index)
        return nn.ModuleDict({name: mods[index % len(mods)] for name, mods in st.parallel.items()})

    def component(self, stack: str, index: int, kind: str) -> nn.Module:
        """The submodule of a block whose output is the named component."""
        found = find_component(self.block_scope(stack, index), kind)
        if found is None:
            raise InvalidLayerError(f"{stack}.{index} has no {kind} submodule that NeuronMap can recognise")
        return found[1]

    def attention_modules(self, stack: str, index: int, cross: bool = False) -> list[tuple[nn.Module, int | None]]:
        """Modules whose output carries attention weights in block `index`, with the output index to read."""
        block = self.block_scope(stack, index)
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
                    "shared": s.shared, "final_norm": s.final_norm,
                    **({"parallel": list(s.parallel)} if s.parallel else {})}
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
                any(t in cls for t in ("mlp", "feedforward", "layerff", "densereludense", "moe", "ffn"))
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


def _block_lists(model: nn.Module, hints: set[str] = frozenset()) -> list[tuple[str, nn.ModuleList]]:
    """ModuleLists whose members are all of one class, or all of classes transformers names as blocks
    (hybrid stacks mix e.g. attention and state-space layers): the candidate stacks of blocks."""
    out = []
    for path, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        if all(isinstance(m, nn.ModuleList) and len(m) for m in mod):  # groups of blocks (Funnel): in order
            mod = nn.ModuleList([b for group in mod for b in group])
        names = {type(m).__name__ for m in mod}
        if (len({type(m) for m in mod}) == 1 or names <= hints) and not isinstance(mod[0], nn.ModuleList):
            out.append((path, mod))
    return out


def _forward_source(module: nn.Module) -> str | None:
    try:
        return inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return None


def _uses(source: str, name: str) -> list[int]:
    """Positions where a forward's source refers to `self.<name>`."""
    return [m.start() for m in re.finditer(rf"self\.{re.escape(name)}\b", source)]


def _final_norm_by_order(model: nn.Module, list_path: str) -> str | None:
    """Without readable source: a norm sibling registered after the block list (embedding norms excluded)."""
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


def _final_norm(model: nn.Module, list_path: str, other_stacks: tuple[str, ...] = ()) -> str | None:
    """The norm applied after a stack, read from the forward source of the stack's parent, then ancestors.

    At each level (the list's parent, then up, never into a module that also holds another stack) the
    norm is a norm child the level's forward uses after its last use of the child holding the stack.
    Names do not decide it: BART registers `layernorm_embedding` after its layers but runs it before;
    BigBird-Pegasus and LFM2 run a norm named for embeddings after theirs. Where no source can be read,
    the registration order decides.
    """
    parts = list_path.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        level_path, child = ".".join(parts[:depth]), parts[depth]
        if any(not level_path or o == level_path or o.startswith(level_path + ".") for o in other_stacks):
            return None  # this level also runs another stack: its norms are not this stack's
        level = model.get_submodule(level_path) if level_path else model
        source = _forward_source(level)
        used = _uses(source, child) if source else []
        if not used:
            return _final_norm_by_order(model, list_path) if depth == len(parts) - 1 else None
        last = max(used)
        after = []
        for name, mod in level.named_children():
            if name != child and _is_norm(mod):
                later = [pos for pos in _uses(source, name) if pos > last]
                if later:
                    after.append((min(later), name))
        if after:
            name = min(after)[1]
            return f"{level_path}.{name}" if level_path else name
    return None


def _layer_count(model: nn.Module, stack_name: str, listed: int) -> int:
    """Logical layers of a stack: the config's count when blocks are shared (fewer modules than layers)."""
    cfg = getattr(model, "config", None)
    text = compat.text_config(cfg) if cfg is not None else cfg
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
    hint_classes = set(getattr(model, "_no_split_modules", None) or ())
    hint_classes |= {cls.__name__ for cls, _, _ in _recorders(model, "hidden_states") if cls is not None}
    lists = _block_lists(model, hint_classes)
    hinted = [(p, m) for p, m in lists if {type(b).__name__ for b in m} <= hint_classes]
    pool = hinted or lists
    # drop lists nested inside members of another candidate (e.g. MoE experts inside a block)
    pool = [(p, m) for p, m in pool if not any(p != q and p.startswith(q + ".") for q, _ in pool)]
    if not pool:
        raise InvalidLayerError(f"no stack of transformer blocks found in {type(model).__name__}")

    def tokens(path: str) -> set[str]:
        return set(re.split(r"[._]", path.lower()))  # "encoder.layers", "text_encoder.layers"

    enc = [(p, m) for p, m in pool if "encoder" in tokens(p)]
    dec = [(p, m) for p, m in pool if "decoder" in tokens(p)]
    if getattr(getattr(model, "config", None), "is_encoder_decoder", None) is False:
        enc = dec = []  # the config says it is not one (Funnel's "decoder" upsamples inside one forward)
    stacks: dict[str, Stack] = {}
    if enc and dec:
        chosen = {name: max(group, key=lambda pm: (len(pm[1]), -pm[0].count(".")))
                  for name, group in (("encoder", enc), ("decoder", dec))}
        for name, (path, mods) in chosen.items():
            others = tuple(p for n, (p, _) in chosen.items() if n != name)
            stacks[name] = Stack(name, path, list(mods), _layer_count(model, name, len(mods)),
                                 _final_norm(model, path, others))
        primary = "encoder"
    else:
        path, mods = max(pool, key=lambda pm: (len(pm[1]), -pm[0].count(".")))
        parallel = None if hinted else _parallel_lists(lists, path)
        if parallel:
            path = next(p for p, m in lists if list(m) == parallel[next(reversed(parallel))])
            mods = model.get_submodule(path)
        stacks["blocks"] = Stack("blocks", path, list(mods), _layer_count(model, "blocks", len(mods)),
                                 _final_norm(model, path), parallel)
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


def _parallel_lists(lists: list[tuple[str, nn.ModuleList]], path: str) -> dict[str, list[nn.Module]] | None:
    """Sibling ModuleLists as long as the chosen one, in registration order, when there are several.

    Models written before block classes (XLM, FlauBERT) keep each sublayer kind in its own list; layer k
    is then attentions[k] → ... → the k-th member of the last list, whose output leaves the layer.
    """
    parent = path.rpartition(".")[0]
    length = next(len(m) for p, m in lists if p == path)
    group = [(p, m) for p, m in lists if p.rpartition(".")[0] == parent and len(m) == length]
    if len(group) < 2:
        return None
    return {p.rpartition(".")[2]: list(m) for p, m in group}


POSITION_TABLE = re.compile(r"(^|\.)(position_embeddings|embed_positions|wpe)$")


def position_limit(model: nn.Module, configured: int | None) -> int | None:
    """Positions a text may really use: fewer than configured where the position table reserves rows.

    RoBERTa-style embeddings (RoBERTa, CodeBERT, XLM-R, MPNet, Longformer, ...) count positions from
    `padding_idx + 1`, so a table of 514 rows takes 512 tokens; index 514 would fail deep in torch.
    """
    limits = [configured] if configured else []
    for path, module in model.named_modules():
        if isinstance(module, nn.Embedding) and module.padding_idx is not None and POSITION_TABLE.search(path):
            limits.append(module.num_embeddings - module.padding_idx - 1)
    return min(limits) if limits else None
