"""The same checkpoints on every transformers release in range: what the compatibility matrix compares.

Each fixture is a tiny checkpoint folder of one common architecture, written without transformers' own
savers so that every release writes the very same bytes: a config.json of the model type, its class and
the tiny sizes only (every other field is the release's default, as in a minimal hub config), weights
generated per tensor from a seed of its name (safetensors), and a generic fast tokenizer (`tokenizer.json`
+ a `PreTrainedTokenizerFast` config: the kind that emits `token_type_ids` under 4.x and not under 5.x).
`fixture_sha` hashes the folder, so two runs compare activations only when they loaded identical bytes.

Per fixture and release: NeuronMap's blocks against transformers' `output_hidden_states` of the same
loaded model (exact: <= 1e-5), attention patterns (rows sum to 1 over real keys, causal for decoders), the
inputs the forward got, and the activations themselves (base64 float32), so the report can tell whether
the same checkpoint gives the same activations on every release.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

FIXTURES: dict[str, str] = {  # model type -> task; all shipped since 4.51, two families each at least
    "gpt2": "causal", "gpt_neo": "causal", "gpt_neox": "causal", "gptj": "causal", "opt": "causal",
    "bloom": "causal", "falcon": "causal", "phi": "causal", "codegen": "causal", "llama": "causal",
    "mistral": "causal", "qwen2": "causal", "gemma": "causal", "bert": "masked", "roberta": "masked",
    "distilbert": "masked", "albert": "masked", "electra": "masked", "deberta-v2": "masked",
    "xlm-roberta": "masked", "t5": "seq2seq", "bart": "seq2seq",
}
TEXTS = ("hello world", "the cat sat on the mat and the dog sat on it")
ATOL = 1e-5
SEED = 20261207
_SIZES = {  # the same tiny sizes as the zoo's, set only where the type's own config has the field
    "num_hidden_layers": 2, "num_layers": 2, "n_layer": 2, "encoder_layers": 2, "decoder_layers": 2,
    "num_decoder_layers": 2, "hidden_size": 32, "d_model": 32, "n_embd": 32, "dim": 32,
    "num_attention_heads": 4, "num_heads": 4, "n_head": 4, "n_heads": 4, "encoder_attention_heads": 4,
    "decoder_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64, "d_ff": 64,
    "hidden_dim": 64, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "d_kv": 8, "head_dim": 8, "rotary_dim": 4,
    "embedding_size": 32, "max_position_embeddings": 128, "n_positions": 128, "vocab_size": 128,
}
_TOKEN_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}  # every fixture states them
_AUTO = {"causal": "AutoModelForCausalLM", "masked": "AutoModelForMaskedLM", "seq2seq": "AutoModelForSeq2SeqLM"}


def fixture_config(model_type: str) -> dict[str, Any]:
    """The config.json of a fixture: type, class and tiny sizes; everything else is the release's default."""
    import transformers
    from transformers.models.auto import modeling_auto

    defaults = transformers.AutoConfig.for_model(model_type).to_dict()
    mapping = {"causal": modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
               "masked": modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
               "seq2seq": modeling_auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES}[FIXTURES[model_type]]
    cls = mapping[model_type]
    cfg: dict[str, Any] = {"model_type": model_type, "architectures": [cls if isinstance(cls, str) else cls[0]]}
    cfg.update({k: v for k, v in _SIZES.items() if k in defaults})
    cfg.update(_TOKEN_IDS)
    if FIXTURES[model_type] == "seq2seq":
        cfg["decoder_start_token_id"] = 0
    if model_type == "gpt_neo":  # its attention pattern has one entry per layer
        cfg["attention_types"] = [[["global", "local"], 1]]
    return cfg


def _values(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter (tied ones once, under their first name), generated alone from a seed of its name:
    matrices ~ N(0, 0.02), 1-D weights 1 + N(0, 0.1), other vectors N(0, 0.1). Nothing is zero, so a
    bias or a norm that one release skips shows up as a difference."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        seed = int.from_bytes(hashlib.sha256(f"{SEED}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)
        t = torch.empty(tuple(param.shape), dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        if t.dim() >= 2:
            t.normal_(0.0, 0.02, generator=gen)
        else:
            t.normal_(0.0, 0.1, generator=gen)
            if name.endswith("weight"):
                t += 1.0
        out[name] = t
    return out


def _tokenizer_files(dest: Path, encoder: bool) -> None:
    """tokenizer.json (the `tokenizers` library's own serialisation) and a generic fast tokenizer config."""
    from adapters.zoo import TINY_SPECIALS, word_tokenizer_object

    (dest / "tokenizer.json").write_text(word_tokenizer_object(encoder).to_str(pretty=True), encoding="utf-8")
    pad, bos, eos, unk, cls, sep, mask = TINY_SPECIALS
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 128, "pad_token": pad,
              "bos_token": bos, "eos_token": eos, "unk_token": unk}
    if encoder:
        config.update(cls_token=cls, sep_token=sep, mask_token=mask)
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=1, sort_keys=True), encoding="utf-8")


PROVENANCE = "neuronmap_fixture.json"  # who built the folder; not part of the hash
FIXTURE_VERSION = 1  # bump when build_fixture writes other bytes


def folder_sha(folder: Path) -> str:
    """sha256 over the folder's files (names and bytes): equal hashes mean identical checkpoints."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file() and p.name != PROVENANCE):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def fixture_root() -> Path:
    """Where fixtures are kept between runs, so every release in a matrix loads the very same folder."""
    from adapters.assets import cache_root

    return cache_root() / "compat-fixtures" / f"v{FIXTURE_VERSION}"


def ensure_fixture(model_type: str, root: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """The fixture folder of `model_type`, built once by the first release that asks (the matrix runs the
    lower bound first: its files are what an older hub checkpoint holds) and reused by every later one;
    returns the folder and its provenance ({"built_with": transformers version, ...})."""
    import os

    import transformers
    from filelock import FileLock

    root = root or fixture_root()
    folder = root / model_type
    marker = folder / PROVENANCE
    if not marker.is_file():
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if not marker.is_file():
                tmp = Path(tempfile.mkdtemp(prefix=f".{model_type}-", dir=root))
                try:
                    build_fixture(model_type, tmp)
                    info = {"built_with": transformers.__version__, "fixture_version": FIXTURE_VERSION,
                            "sha": folder_sha(tmp)}
                    (tmp / PROVENANCE).write_text(json.dumps(info), encoding="utf-8")
                    shutil.rmtree(folder, ignore_errors=True)
                    os.replace(tmp, folder)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    return folder, json.loads(marker.read_text(encoding="utf-8"))


def build_fixture(model_type: str, dest: Path) -> Path:
    """Write the fixture folder of `model_type` (identical bytes on every release that builds it alike)."""
    import transformers
    from safetensors.torch import save_file

    cfg = fixture_config(model_type)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True), encoding="utf-8")
    config = transformers.AutoConfig.from_pretrained(dest)
    with torch.device("meta"):
        model = getattr(transformers, _AUTO[FIXTURES[model_type]]).from_config(config)
    save_file(_values(model), str(dest / "model.safetensors"), metadata={"format": "pt"})
    _tokenizer_files(dest, encoder=FIXTURES[model_type] == "masked")
    return dest


def encode(t: torch.Tensor) -> dict[str, Any]:
    """A float32 tensor as JSON: shape and base64 of its little-endian bytes (exact, ~1.3 x the bytes)."""
    data = t.detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4").tobytes()
    return {"shape": list(t.shape), "f32": base64.b64encode(data).decode("ascii")}


def decode(d: dict[str, Any]) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.frombuffer(base64.b64decode(d["f32"]), dtype="<f4").copy()).reshape(d["shape"])


def _masked_max(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None) -> float:
    if a.shape != b.shape:
        return float("inf")
    if mask is not None and tuple(mask.shape) == tuple(a.shape[:2]):
        a, b = a[mask.bool()], b[mask.bool()]
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _attention_checks(adapter: Any, causal: bool) -> dict[str, Any]:
    """Block 0's pattern: rows over real keys sum to 1, nothing above the diagonal for decoders."""
    att = adapter.get_attention_patterns(list(TEXTS), [0])[0]
    mask = adapter.tokenize(list(TEXTS))["attention_mask"].cpu().bool()
    keys = mask[:, None, None, :].expand_as(att)
    real_rows = mask[:, None, :].expand(att.shape[:3])
    sums = (att * keys).sum(-1)[real_rows]
    upper = torch.triu(torch.ones(att.shape[-2:], dtype=torch.bool), diagonal=1)
    above = float(att[..., upper].abs().max()) if upper.any() else 0.0
    return {"shape": list(att.shape), "row_sum_max_error": float((sums - 1).abs().max()),
            "above_diagonal_max": above, "causal_required": causal,
            "ok": bool((sums - 1).abs().max() <= 1e-4 and (not causal or above <= 1e-6))}


def check_fixture(model_type: str, root: Path | None = None) -> dict[str, Any]:
    """Load the fixture through NeuronMap, compare with transformers; never raises (errors go into the row)."""
    from adapters import MultiModelAnalyzer

    row: dict[str, Any] = {"model_type": model_type, "task": FIXTURES.get(model_type), "fixture_sha": None,
                           "built_with": None, "max_abs_diff": None, "attention": None, "forward_inputs": None,
                           "tokenizer_outputs": None, "activations": {}, "error": None, "stage": "build"}
    try:
        folder, info = ensure_fixture(model_type, root)
        row["fixture_sha"], row["built_with"] = folder_sha(folder), info.get("built_with")
        row["stage"] = "load"
        analyzer = MultiModelAnalyzer()
        adapter = analyzer.load_model(str(folder))
        row["stage"] = "extract"
        texts = list(TEXTS)
        row["tokenizer_outputs"] = sorted(adapter.tokenizer(texts).keys())
        inputs = adapter.tokenize(texts)
        row["forward_inputs"] = sorted(adapter.model_inputs(inputs))
        stacks = adapter.mapping.stacks
        primary = stacks[adapter.mapping.primary]
        layers = list(range(primary.num_layers))
        acts = adapter.extract_activations(texts, layers)
        row["activations"] = {str(k): encode(acts[k]) for k in layers}
        row["activations"]["_mask"] = encode(acts.attention_mask)  # padded positions compare as nothing
        with torch.no_grad():
            if adapter.mapping.is_encoder_decoder:
                hidden = adapter.model.get_encoder()(**adapter.model_inputs(inputs),
                                                     output_hidden_states=True).hidden_states
            else:
                hidden = adapter.model(**adapter.model_inputs(inputs), output_hidden_states=True).hidden_states
        mask = inputs["attention_mask"].cpu()
        row["max_abs_diff"] = max(_masked_max(acts[k], hidden[k + 1], mask) for k in layers[:-1])
        row["stage"] = "attention"
        row["attention"] = _attention_checks(adapter, causal=FIXTURES[model_type] == "causal")
        row["stage"] = "done"
        analyzer.unload_model(str(folder))
    except Exception as exc:  # one architecture failing on one release is a matrix cell, not a crash
        row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return row


def check_all(types: list[str] | None = None, root: Path | None = None) -> list[dict[str, Any]]:
    """Every fixture (FIXTURES by default) this release ships."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    rows = []
    for t in types or list(FIXTURES):
        if t not in CONFIG_MAPPING_NAMES:
            rows.append({"model_type": t, "task": FIXTURES.get(t), "error": None, "not_shipped": True})
            continue
        rows.append(check_fixture(t, root))
    return rows


def exact(row: dict[str, Any]) -> bool:
    """The fixture matched transformers (<= ATOL) and its attention checks held."""
    return (row.get("error") is None and row.get("max_abs_diff") is not None and row["max_abs_diff"] <= ATOL
            and bool((row.get("attention") or {}).get("ok")))
