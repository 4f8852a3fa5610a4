"""Coverage sweep: every text model type of the installed transformers, built tiny, through NeuronMap.

Model types are those of transformers' causal-LM, masked-LM and seq2seq auto mappings (~250 in 5.x). For
each: build it at tiny size with seeded random weights, save it with a word-level tokenizer, load it back
through `MultiModelAnalyzer.load_model(folder)` and check

- detection: `family_from_config` and `family_from_module` agree with each other and with the kind of model
  the auto mapping says it is (seq2seq → t5; masked-LM → bert / domain_specific; causal-LM → gpt / llama);
- mapping: `discover_layout` finds a stack whose layer count is the config's (encoder and decoder for
  encoder-decoders);
- extraction: every block equals transformers' `output_hidden_states[k + 1]` (≤ 1e-5, fp32), the last one
  either as transformers gives it or after the mapped final norm (README, "What a layer means");
- padded batch: each text alone equals its row of a right-padded batch on its own positions;
- hooks: none of NeuronMap's hooks survive a successful call, an attention call or a failing call;
- attention: `get_attention_patterns` gives [batch, heads, seq, seq] equal to transformers' own eager
  `output_attentions`, rows summing to 1 over unmasked keys, causal for decoders, and the attention
  implementation is restored afterwards.

A check whose reference transformers itself cannot give (no `output_hidden_states`, no attention weights,
weights that are not a softmax) is `not_applicable` with the reason, never a failure. A type that cannot be
built tiny and offline, or is not a text model (its forward takes pixels or audio), is listed as "did not
build" with the reason and is not counted. Coverage = built types whose every applicable check except
detection holds (detection belongs to `adapters/families.py`; its agreement is reported beside it).

Every type runs in this process, guarded by try/except and a per-type alarm, so one broken architecture
never stops the sweep. Nothing here is a per-model table: size quirks are handled by generic retries.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import re
import shutil
import signal
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEXTS = ["hello world", "the cat sat on the mat and the dog sat on it"]
ATOL = 1e-5
SLOW_FORWARD = 0.5  # s; a tiny forward slower than this tries the next (smaller) candidate config
MAX_PARAMS = 40_000_000  # a "tiny" build above this means the tiny sizes did not reach the model
PASS, FAIL, NA = "pass", "fail", "not_applicable"
_TOKEN_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
COUNTED = ("mapping", "final_norm", "extraction", "padded_batch", "hooks", "attention")  # what coverage is made of
CHECKS = ("load", "detection", *COUNTED)

_NON_TEXT_INPUT = re.compile(r"pixel|image|audio|input_features|input_values|speech|video|vision|spectrogram")
_LAYERS = {  # primary / encoder stack gets 3 blocks, a decoder 2: a wrong stack cannot match by accident
    "num_hidden_layers": 3, "num_layers": 3, "n_layer": 3, "encoder_layers": 3, "num_encoder_layers": 3,
    "decoder_layers": 2, "num_decoder_layers": 2,
}
_PROFILES: list[dict[str, Any]] = [  # generic size variants tried in order when a config rejects the sizes
    {},
    {"num_key_value_heads": 4, "multi_query": False},
    {"hidden_size": 64, "d_model": 64, "n_embd": 64, "embedding_size": 64, "num_attention_heads": 4,
     "num_key_value_heads": 4, "head_dim": 16, "d_kv": 16, "num_heads": 8, "mamba_n_heads": 8,
     "mamba_d_head": 16, "mamba_expand": 2, "expand": 2, "intermediate_size": 128, "d_ff": 128},
]


@dataclass(frozen=True)
class TypeSpec:
    """One model type and the class its auto mapping names for it."""

    model_type: str
    task: str  # "seq2seq" | "masked" | "causal"
    class_name: str


def model_types() -> list[TypeSpec]:
    """Every type of the causal-LM, masked-LM and seq2seq auto mappings (seq2seq > masked > causal)."""
    from transformers.models.auto import modeling_auto as auto

    seq2seq = getattr(auto, "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", {})
    out: dict[str, TypeSpec] = {}
    for task, mapping in (("seq2seq", seq2seq), ("masked", auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES),
                          ("causal", auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)):
        for mt, cls in mapping.items():
            if mt not in out:
                out[mt] = TypeSpec(mt, task, cls if isinstance(cls, str) else cls[0])
    return [out[k] for k in sorted(out)]


# ---- pieces ------------------------------------------------------------------------------------------
class _Timeout(BaseException):
    """Not an Exception: the `except Exception` of transformers or of capture must not swallow it."""


@contextlib.contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise _Timeout in this (main) thread after `seconds`; a no-op elsewhere or when None."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(*_: Any) -> None:
        raise _Timeout(f"took longer than {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)  # fires again each second until the type is done
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No warnings or transformers log noise for the length of the sweep."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch_logger = logging.getLogger("torch")
    torch_level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
        torch_logger.setLevel(torch_level)


def _has(cfg: Any, key: str) -> bool:
    try:
        return hasattr(cfg, key)
    except Exception:  # per-layer attributes raise their own error types on access
        return False


def _get(cfg: Any, key: str) -> Any:
    try:
        return getattr(cfg, key, None)
    except Exception:
        return None


def _sizes_for(cfg: Any, profile: dict[str, Any], vocab_size: int, decoder: bool = False) -> dict[str, Any]:
    from adapters.zoo import _TINY_SIZES

    sizes = {k: v for k, v in {**_TINY_SIZES, **_LAYERS, **profile}.items() if _has(cfg, k)}
    # aliases (attribute_map) by their real names: 4.x XLNet derives d_head from n_head inside __init__, before
    # an alias such as num_attention_heads is applied, and then refuses its own config on loading
    aliases = getattr(cfg, "attribute_map", None) or {}
    sizes = {aliases.get(k, k): v for k, v in sizes.items() if not (k in aliases and aliases[k] in sizes)}
    if decoder and not _get(cfg, "is_encoder_decoder"):
        sizes["is_decoder"] = True  # how transformers wants a causal-LM class of an encoder built (BertGeneration)
    for k, v in (("vocab_size", vocab_size), *_TOKEN_IDS.items(), ("decoder_start_token_id", 0)):
        if _has(cfg, k):
            sizes[k] = v
    return sizes


def _shorten_layer_types(cfg: Any, sizes: dict[str, Any]) -> None:
    """Configs that list a kind per layer: the shortest prefix holding every kind, and that many layers."""
    types = _get(cfg, "layer_types")
    if not isinstance(types, list | tuple) or not types:
        return
    kinds = set(map(str, types))
    for k in range(1, len(types) + 1):
        if set(map(str, types[:k])) == kinds:
            break
    k = max(k, min(2, len(types)))
    sizes["layer_types"] = list(types[:k])
    for key in ("num_hidden_layers", "num_layers", "n_layer"):
        if key in sizes:
            sizes[key] = k


_SIZE_KEY = re.compile(r"(_dim|_size|_rank|dim_.*|size_.*)$|^(d_|dim$|n_embd|n_inner)")
_NOT_A_SIZE = re.compile(r"vocab_size$|position|window|chunk|bucket|max_|cache|_id$|ids$|length|layers|image|patch")


def _shrunk(cfg: Any, sizes: dict[str, Any]) -> dict[str, Any]:
    """Every other size-like integer of the config made small too: expert counts, head and rope dims, LoRA
    ranks, extra vocabularies (the tiny sizes name only the common keys; MoE and MLA models have more)."""
    out = {}
    try:
        items = cfg.to_dict().items()
    except Exception:
        return out
    head_dim = sizes.get("head_dim", 8)
    for key, value in items:
        if key in sizes or not isinstance(value, int) or isinstance(value, bool) or value <= 1:
            continue
        low = key.lower()
        if "expert" in low and "per_tok" not in low and "top" not in low and value > 4:
            out[key] = 4
        elif ("per_tok" in low or re.search(r"top_?k", low)) and value > 2:
            out[key] = 2
        elif low.endswith("group") or low.endswith("groups"):
            out[key] = 1
        elif re.search(r"num_.*heads?$|_heads$", low) and value > 4:
            out[key] = 4
        elif low.endswith("head_dim") and value > head_dim:
            out[key] = head_dim
        elif low.endswith("vocab_size") and low != "vocab_size" and value > 128:
            out[key] = 64
        elif _SIZE_KEY.search(low) and not _NOT_A_SIZE.search(low) and value > 64:
            out[key] = 64 if any(t in low for t in ("intermediate", "ffn", "ff_", "hidden", "inner")) else 16
    return out


def _missing_kinds(base: Any, cfg: Any) -> set[str]:
    """Layer kinds (`layer_types`) of the default config that the tiny one lacks."""
    want, got = _get(base, "layer_types"), _get(cfg, "layer_types")
    if not isinstance(want, list | tuple) or not isinstance(got, list | tuple):
        return set()
    return set(map(str, want)) - set(map(str, got))


def tiny_configs(model_type: str, vocab_size: int, decoder: bool = False) -> Iterator[tuple[Any, list[str]]]:
    """Tiny configs of `model_type` to try in order (generic size profiles, each also with every other
    size-like integer shrunk); yields (config, notes on what was adjusted); raises when none can be made."""
    from transformers import AutoConfig, PretrainedConfig

    base = AutoConfig.for_model(model_type)
    errors: list[str] = []
    made = 0
    for p, profile in enumerate(_PROFILES):
        for shrink in (False, True):
            sizes = _sizes_for(base, profile, vocab_size, decoder)
            if shrink:
                extra = _shrunk(base, sizes)
                if not extra:
                    continue
                sizes.update(extra)
            for name in getattr(base, "sub_configs", None) or {}:
                sub = _get(base, name)
                if isinstance(sub, PretrainedConfig):
                    sub_sizes = _sizes_for(sub, profile, vocab_size)
                    if shrink:
                        sub_sizes.update(_shrunk(sub, sub_sizes))
                    _shorten_layer_types(sub, sub_sizes)
                    sizes[name] = {**({"model_type": sub.model_type} if getattr(sub, "model_type", "") else {}),
                                   **sub_sizes}
            cfg, dropped = _make_config(model_type, base, sizes, errors)
            if cfg is None:
                continue
            made += 1
            notes = ([f"size profile {p}"] if p else []) + (["other sizes shrunk"] if shrink else [])
            notes += [k if k.startswith("kept") else f"kept default {k}" for k in dropped]
            if _missing_kinds(base, cfg):  # a hybrid whose first layers are all of one kind: keep every kind
                every = dict(sizes)
                _shorten_layer_types(base, every)
                full, _ = _make_config(model_type, base, every, errors)
                if full is not None and not _missing_kinds(base, full):
                    yield full, [*notes, "one layer of every kind in layer_types"]
            yield cfg, notes
    if not made:
        raise RuntimeError("no tiny config: " + " | ".join(dict.fromkeys(errors)))


def _make_config(model_type: str, base: Any, sizes: dict[str, Any], errors: list[str]) -> tuple[Any, list[str]]:
    """The config for these sizes, dropping sizes the config refuses to set; (None, ...) when it cannot."""
    from transformers import AutoConfig

    dropped: list[str] = []
    for _attempt in range(6):
        try:
            cfg = AutoConfig.for_model(model_type, **sizes)
            _get(cfg, "num_hidden_layers")
            type(cfg).from_dict(cfg.to_dict())  # what loading the saved checkpoint does (4.x XLNet checks d_head)
            return cfg, dropped
        except Exception as exc:
            msg = str(exc)
            errors.append(f"{type(exc).__name__}: {msg.splitlines()[0][:160] if msg else ''}")
            named = [k for k in sizes if re.search(rf"[`'\"]{re.escape(k)}[`'\"]", msg) and k not in dropped]
            if "layer_types" in msg and "layer_types" not in sizes:
                _shorten_layer_types(base, sizes)
                continue
            rejects = ("setter", "not support the setting", "does not support", "no sequence length limit")
            if named and any(r in msg for r in rejects):
                for k in named:
                    sizes.pop(k)
                dropped += named
                continue
            equal = re.search(r"`(\w+)` \(\d+\) (?:should|must) (?:be )?equal (?:to )?.*?\((\d+)\)", msg)
            if equal and sizes.get(equal.group(1)) != int(equal.group(2)):  # "`d_head` (2) should be equal to ... (8)"
                sizes[equal.group(1)] = int(equal.group(2))
                continue
            layer_keys = [k for k in sizes if k in _LAYERS or k == "layer_types"]
            if layer_keys and re.search(r"layer", msg, re.I) and "kept default depth" not in dropped:
                for k in layer_keys:  # a layer count other lists must match (GPT-Neo attention_types)
                    sizes.pop(k)
                dropped.append("kept default depth")
                continue
            if "not support the setting of `num_hidden_layers`" in msg or "no sequence length limit" in msg:
                key = "num_hidden_layers" if "num_hidden_layers" in msg else "max_position_embeddings"
                sizes.pop(key, None)
                dropped.append(key)
                continue
            break
    return None, dropped


def tiny_config_for(model_type: str, vocab_size: int) -> tuple[Any, list[str]]:
    """The first tiny config `tiny_configs` can make."""
    return next(tiny_configs(model_type, vocab_size))


def _non_text_inputs(cls: type) -> list[str]:
    try:
        params = inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return []
    return [p for p in params if _NON_TEXT_INPUT.search(p)]


def layer_counts(cfg: Any) -> tuple[int | None, int | None]:
    """(encoder or only stack, decoder) layer counts the config states."""
    from adapters.compat import text_config

    text = text_config(cfg)
    first = None
    for key in ("num_encoder_layers", "encoder_layers", "num_hidden_layers", "num_layers", "n_layer"):
        value = _get(text, key)
        if isinstance(value, int) and value > 0:
            first = value
            break
    dec = None
    if _get(cfg, "is_encoder_decoder"):
        for key in ("num_decoder_layers", "decoder_layers"):
            value = _get(cfg, key)
            if isinstance(value, int) and value > 0:
                dec = value
                break
    return first, dec


def _hooks(model: Any) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _diff(a: Any, b: Any, mask: Any = None) -> float:
    if a.shape != b.shape:
        return float("inf")
    if mask is not None and tuple(mask.shape) == tuple(a.shape[:2]):
        a, b = a[mask.bool()], b[mask.bool()]
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


def _tensor(out: Any) -> Any:
    """The first tensor of a module output (a tensor, a tuple or a ModelOutput)."""
    import torch

    if isinstance(out, torch.Tensor) or out is None:
        return out
    seq = out.to_tuple() if hasattr(out, "to_tuple") else out if isinstance(out, tuple | list) else ()
    return next((t for t in seq if isinstance(t, torch.Tensor)), None)


def _relaid_close(ours: Any, raw: Any, mask: Any = None) -> bool:
    """`ours` equals `raw` as the model produced it, or re-laid as NeuronMap documents: batch-first, and only
    the caller's positions when the model padded or prefixed them internally."""
    if ours is None or raw is None:
        return False
    for cand in (raw, raw.transpose(0, 1)) if raw.dim() >= 3 else (raw,):
        if cand.shape == ours.shape and _close(ours, cand, mask):
            return True
        if cand.dim() >= 2 and cand.shape[0] == ours.shape[0] and cand.shape[1] > ours.shape[1]:
            n = ours.shape[1]
            if any(_close(ours, cand[:, o:o + n], mask) for o in range(cand.shape[1] - n + 1)):
                return True
    return False


def _close(a: Any, b: Any, mask: Any = None) -> bool:
    """Equal within ATOL (fp32); with a [batch, seq] mask, on real positions only (padding means nothing)."""
    import torch

    if a.shape != b.shape:
        return False
    if mask is not None and tuple(mask.shape) == tuple(a.shape[:2]):
        a, b = a[mask.bool()], b[mask.bool()]
    return torch.allclose(a.float(), b.float(), atol=ATOL, rtol=ATOL)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


class _Checks:
    """Collects {check: (status, reason)} for one model type."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}

    def set(self, name: str, status: str, reason: str | None = None) -> None:
        self.results[name] = {"status": status, "reason": reason}

    def run(self, name: str, fn: Callable[[], tuple[str, str | None] | None]) -> None:
        try:
            out = fn()
            status, reason = out if out is not None else (PASS, None)
        except Exception as exc:  # a _Timeout is a BaseException and goes through
            status, reason = FAIL, _short(exc)
        self.set(name, status, reason)


# ---- one type ----------------------------------------------------------------------------------------
def check_type(spec: TypeSpec, workdir: Path, timeout: float | None = 30.0) -> dict[str, Any]:
    """Build, load and check one model type; never raises (the reason goes into the row)."""
    row: dict[str, Any] = {"model_type": spec.model_type, "task": spec.task, "class": spec.class_name,
                           "built": False, "build_error": None, "family": {}, "checks": {}, "notes": [],
                           "failures": [], "seconds": None, "max_abs_diff": None}
    start = time.perf_counter()
    state: dict[str, Any] = {}
    try:
        with _deadline(timeout):
            _check(spec, workdir, row, state)
    except _Timeout as exc:
        if row["built"]:
            row["checks"]["timeout"] = {"status": FAIL, "reason": f"checks {exc}"}
        else:
            row["build_error"] = f"timeout: build {exc}"
    except Exception as exc:  # anything the per-check guards did not catch
        if row["built"]:
            row["checks"]["sweep"] = {"status": FAIL, "reason": _short(exc) + " | " +
                                      traceback.format_exc(limit=-2).strip().splitlines()[-1][:200]}
        else:
            row["build_error"] = _short(exc)
    finally:
        state.clear()  # dropped, not unloaded: unload's full gc costs ~0.7 s a type; sweep() collects in batches
        shutil.rmtree(workdir / spec.model_type, ignore_errors=True)
    row["failures"] = [f"{k}: {v['reason']}" for k, v in row["checks"].items() if v["status"] == FAIL]
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def _check(spec: TypeSpec, workdir: Path, row: dict[str, Any], state: dict[str, Any]) -> None:
    import torch
    import transformers

    from adapters import MultiModelAnalyzer
    from adapters.compat import forward_input_names, select_inputs

    cls = getattr(transformers, spec.class_name, None)
    if cls is None:
        row["build_error"] = f"transformers has no class {spec.class_name} (needs an extra package?)"
        return
    non_text = _non_text_inputs(cls)
    if non_text:
        row["build_error"] = f"not a text model: {spec.class_name}.forward takes {', '.join(non_text[:3])}"
        return
    from adapters.zoo import word_tokenizer

    tok = word_tokenizer(encoder=spec.task == "masked")
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    problems: list[str] = []
    model, best, chosen = None, float("inf"), []
    for cfg, notes in tiny_configs(spec.model_type, vocab_size=128, decoder=spec.task == "causal"):
        want = getattr(cls, "config_class", None)
        if isinstance(want, type) and not isinstance(cfg, want):  # a text-only class of a composite config
            with contextlib.suppress(Exception):
                text = cfg.get_text_config()
                if isinstance(text, want):
                    cfg, notes = text, [*notes, f"built from its {type(text).__name__}"]
        for key, value in _TOKEN_IDS.items():  # 5.0.0 drops these from some configs its models still read
            if not _has(cfg, key):
                with contextlib.suppress(Exception):
                    setattr(cfg, key, value)
        try:
            with torch.device("meta"):
                n_params = sum(p.numel() for p in cls(cfg).parameters())
        except Exception as exc:
            problems.append(f"transformers cannot build it from this config: {_short(exc)}")
            continue
        try:  # a text part of a composite config that the release cannot load back (4.x emu3_text_model)
            transformers.AutoConfig.for_model(**cfg.to_dict())
        except Exception as exc:
            problems.append(f"transformers cannot read back the config it saves: {_short(exc)}")
            continue
        if n_params > MAX_PARAMS:
            problems.append(f"not tiny: {n_params / 1e6:.0f}M parameters")
            continue
        torch.manual_seed(0)
        try:
            candidate = cls(cfg).eval()
            start = time.perf_counter()
            with torch.no_grad():  # what the forward takes: 4.x FNet has no attention_mask
                _hf_forward(candidate, select_inputs(enc, forward_input_names(candidate)))
            took = time.perf_counter() - start
        except Exception as exc:
            problems.append(f"transformers' own build or forward fails on text input: {_short(exc)}")
            continue
        if model is None or took < best:
            model, best, chosen = candidate, took, notes
        if took < SLOW_FORWARD:  # else a smaller candidate may run faster (reference state-space kernels)
            break
    if model is not None:
        row["notes"] += chosen
    if model is None:
        row["build_error"] = problems[0] if len(set(problems)) == 1 else " | ".join(dict.fromkeys(problems))
        return
    try:
        dest = _save(model, tok, workdir / spec.model_type)
    except Exception as exc:
        row["build_error"] = f"transformers cannot save it at tiny size: {_short(exc)}"
        return
    row["built"] = True
    del model
    checks = _Checks()
    row["checks"] = checks.results  # filled in place: a timeout keeps what was checked before it
    analyzer = state["analyzer"] = MultiModelAnalyzer()
    name = str(dest)
    try:
        adapter = analyzer.load_model(name)
    except Exception as exc:
        checks.set("load", FAIL, _short(exc))
        row["checks"] = checks.results
        return
    checks.set("load", PASS)
    if adapter.tokenizer(TEXTS)["input_ids"] != tok(TEXTS)["input_ids"]:
        # AutoTokenizer rebuilt the saved word-level tokenizer as the model type's own class (Qwen2: its BPE
        # pre-tokenizer drops our words); the tokenizer is not under test here, so the sweep's is used
        row["notes"].append(f"AutoTokenizer loaded {type(adapter.tokenizer).__name__}, which splits the test "
                            "words differently; the saved word-level tokenizer is used instead")
        tok.padding_side = "right"
        adapter.tokenizer = tok
    model, cfg = adapter.model, adapter.model.config
    row["adapter"] = type(adapter).__name__
    checks.run("detection", lambda: _detection(spec, model, row))
    checks.run("mapping", lambda: _mapping(adapter, spec))
    mapped = checks.results["mapping"]["status"] == PASS or adapter.mapping is not None
    if not mapped:
        row["checks"] = checks.results
        return
    _warm_up(adapter)  # transformers installs hooks of its own on first calls: count ours after those
    hooks_before = _hooks(model)
    impl_before = getattr(cfg, "_attn_implementation", None)
    checks.run("extraction", lambda: _extraction(adapter, spec, row, checks))
    checks.run("padded_batch", lambda: _padded(adapter))
    checks.run("attention", lambda: _attention(adapter, spec, impl_before))
    with contextlib.suppress(Exception):
        adapter.extract_activations(TEXTS, [0, 99])  # a failing call
    after = _hooks(model)
    checks.set("hooks", PASS if after == hooks_before else FAIL,
               None if after == hooks_before else f"{after - hooks_before} hooks left on the model")
    row["checks"] = checks.results


def _save(model: Any, tok: Any, dest: Path) -> Path:
    """Save the tiny checkpoint; a generation config that 4.57 refuses to save (its defaults clash with the tiny
    token ids) is replaced by the defaults: it plays no part in a forward."""
    from adapters.zoo import save_tiny_checkpoint

    try:
        return save_tiny_checkpoint(model, tok, dest)
    except ValueError as exc:
        if "GenerationConfig" not in str(exc):
            raise
        from transformers import GenerationConfig

        shutil.rmtree(dest, ignore_errors=True)
        model.generation_config = GenerationConfig()
        return save_tiny_checkpoint(model, tok, dest)


def _warm_up(adapter: Any) -> None:
    """One call of each kind, NeuronMap's and transformers' (eager, hidden states and attentions)."""
    from adapters.capture import attention_implementation

    inputs = adapter.tokenize(TEXTS)
    calls = [lambda: adapter.extract_activations(TEXTS, [0]), lambda: adapter.get_attention_patterns(TEXTS, [0]),
             lambda: _hidden_refs(adapter, inputs)]
    for call in calls:
        with contextlib.suppress(Exception):
            call()
    with contextlib.suppress(Exception), attention_implementation(adapter.model, "eager"):
        _hf_forward(adapter.model, inputs, output_attentions=True, output_hidden_states=True)


def _hf_forward(model: Any, inputs: dict[str, Any], **flags: Any) -> Any:
    import torch

    from adapters.compat import forward_input_names, select_inputs

    kwargs = {**select_inputs(inputs, forward_input_names(model)), **flags}
    if getattr(model.config, "is_encoder_decoder", False):
        start = _start_token(model)
        kwargs["decoder_input_ids"] = torch.full((inputs["input_ids"].shape[0], 1), start, dtype=torch.long)
    from adapters.compat import no_cache_kwargs

    return model(**kwargs, **no_cache_kwargs(model))


def _start_token(model: Any) -> int:
    start = getattr(model.config, "decoder_start_token_id", None)
    return int(start if start is not None else model.config.pad_token_id or 0)


def _detection(spec: TypeSpec, model: Any, row: dict[str, Any]) -> tuple[str, str | None]:
    from adapters.families import ModelFamily, family_from_config, family_from_module

    expected = {"seq2seq": {ModelFamily.T5}, "masked": {ModelFamily.BERT, ModelFamily.DOMAIN_SPECIFIC},
                "causal": {ModelFamily.GPT, ModelFamily.LLAMA}}[spec.task]
    if getattr(model.config, "is_encoder_decoder", False):
        expected = {ModelFamily.T5}
    problems = []
    try:
        by_config = family_from_config(model.config)
    except Exception as exc:
        by_config = None
        problems.append(f"config tier: {_short(exc)}")
    try:
        by_module = family_from_module(model)
    except Exception as exc:
        by_module = None
        problems.append(f"module tier: {_short(exc)}")
    from adapters.families import ARCH_FAMILY_BY_MODEL_TYPE

    row["family"] = {"config": getattr(by_config, "value", None), "module": getattr(by_module, "value", None),
                     "expected": sorted(f.value for f in expected),
                     # a type no table names (new upstream) gets its family from config keys and structure
                     "source": "table" if spec.model_type in ARCH_FAMILY_BY_MODEL_TYPE else "structure"}
    arch = ModelFamily.BERT if by_config is ModelFamily.DOMAIN_SPECIFIC else by_config
    for tier, fam in (("config", by_config), ("module", by_module)):
        if fam is not None and fam not in expected:
            problems.append(f"{tier} tier says {fam.value}, a {spec.task} model is "
                            f"{' or '.join(sorted(f.value for f in expected))}")
    if arch is not None and by_module is not None and arch is not by_module and not problems:
        problems.append(f"config tier says {by_config.value}, module tier says {by_module.value}")
    return (FAIL, "; ".join(problems)) if problems else (PASS, None)


def _mapping(adapter: Any, spec: TypeSpec) -> tuple[str, str | None]:
    mapping, cfg = adapter.mapping, adapter.model.config
    first, dec = layer_counts(cfg)
    if spec.task == "causal":  # the causal-LM class of an encoder-decoder's config is its decoder
        stated = [v for v in (_get(cfg, k) for k in ("num_decoder_layers", "decoder_layers")) if isinstance(v, int)]
        first, dec = (stated[0] if stated else first), None
    got = {n: s.num_layers for n, s in mapping.stacks.items()}
    problems = []
    if dec is not None:
        if not mapping.is_encoder_decoder:
            problems.append(f"config is encoder-decoder ({first}+{dec} layers), mapping found {got}")
        else:
            if got.get("encoder") != first:
                problems.append(f"encoder: {got.get('encoder')} mapped, config {first}")
            if got.get("decoder") != dec:
                problems.append(f"decoder: {got.get('decoder')} mapped, config {dec}")
    elif first is not None and mapping.num_layers != first:
        problems.append(f"{mapping.primary}: {mapping.num_layers} mapped ({mapping.stacks[mapping.primary].path}),"
                        f" config {first}")
    elif first is None:
        return NA, "the config states no layer count"
    return (FAIL, "; ".join(problems)) if problems else (PASS, None)


def _hidden_refs(adapter: Any, inputs: dict[str, Any]) -> dict[str, tuple[Any, Any, Any, Any]]:
    """Per stack: transformers' hidden states (or None), and from hooks on the same forward its first block's
    input, its first block's output and its last block's raw output."""
    import torch

    model, mapping = adapter.model, adapter.mapping
    firsts: dict[str, Any] = {}
    first_outs: dict[str, Any] = {}
    lasts: dict[str, Any] = {}
    handles = []
    for name, stack in mapping.stacks.items():
        def pre(_m: Any, args: tuple, kwargs: dict, name: str = name) -> None:
            x = args[0] if args else kwargs.get("hidden_states")
            if isinstance(x, torch.Tensor):
                firsts.setdefault(name, x.detach().clone())

        def post(_m: Any, _a: Any, out: Any, name: str = name) -> None:
            x = _tensor(out)
            if x is not None:
                first_outs.setdefault(name, x.detach().clone())
                lasts[name] = x.detach().clone()  # overwritten by each call: the last block's raw output

        entry = next(iter(stack.parallel.values()))[0] if stack.parallel else stack.modules[0]
        handles.append(entry.register_forward_pre_hook(pre, with_kwargs=True))
        for block in dict.fromkeys(stack.modules):
            handles.append(block.register_forward_hook(post))
    refs: dict[str, Any] = {}
    try:
        with torch.no_grad():
            if mapping.is_encoder_decoder:
                enc = model.get_encoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                          output_hidden_states=True)
                refs["encoder"] = getattr(enc, "hidden_states", None)
                out = _hf_forward(model, inputs, output_hidden_states=True)
                refs["decoder"] = getattr(out, "decoder_hidden_states", None)
            else:
                out = _hf_forward(model, inputs, output_hidden_states=True)
                refs[mapping.primary] = getattr(out, "hidden_states", None)
    finally:
        for h in handles:
            h.remove()
    return {k: (None if v is None else [_tensor(h) for h in v], firsts.get(k), first_outs.get(k), lasts.get(k))
            for k, v in refs.items()}


def _track_diff(row: dict[str, Any], diff: float) -> None:
    """Largest difference from transformers' hidden states over the compared blocks (the matrix's cell)."""
    if diff == diff and diff != float("inf"):  # a shape mismatch (inf) is a failure of its own, not a size
        row["max_abs_diff"] = max(row.get("max_abs_diff") or 0.0, diff)


def _extraction(adapter: Any, spec: TypeSpec, row: dict[str, Any], checks: _Checks) -> tuple[str, str | None]:
    """Blocks = transformers' hidden_states[k + 1]; the last = its raw block output (README)."""
    import torch

    mapping = adapter.mapping
    inputs = adapter.tokenize(TEXTS)
    refs = _hidden_refs(adapter, inputs)
    problems, skipped, norm_problems = [], [], []
    for stack_name, stack in mapping.stacks.items():
        n = stack.num_layers
        ref, first, first_out, raw_last = refs.get(stack_name, (None, None, None, None))
        prefix = "" if stack_name == mapping.primary else f"{stack_name}."
        layers = [f"{prefix}{k}" if prefix else k for k in range(n)]
        acts = adapter.extract_activations(TEXTS, layers)
        mask = inputs["attention_mask"].cpu() if stack_name != "decoder" else None
        last = acts[layers[-1]]
        if raw_last is not None and n == 1 and last.shape == raw_last.shape:
            _track_diff(row, _diff(last, raw_last, mask))
        if raw_last is not None and not _relaid_close(last, raw_last, mask):
            problems.append(f"{stack_name}.{n - 1} (last): differs from the block's own output by "
                            f"{_diff(last, raw_last, mask):.3g} (shapes {tuple(last.shape)} vs "
                            f"{tuple(raw_last.shape)})")
        if ref is None or len(ref) == 0:
            skipped.append(f"{stack_name}: transformers returns no hidden states")
            continue
        ref = list(ref)
        if (len(ref) == n + 1 and first is not None and first_out is not None and not _relaid_close(ref[0], first)
                and _relaid_close(ref[0], first_out)):
            # transformers' tuple for this model starts after block 0 (no embedding entry): read it so
            row["notes"].append(f"{stack_name}: transformers' hidden_states[0] is not the first block's input; "
                                "its entries are read as block outputs from index 0")
            ref = [first, *ref[: n - 1], ref[n]]
        if len(ref) != n + 1:
            problems.append(f"{stack_name}: transformers gives {len(ref)} hidden states for {n} mapped blocks")
            continue
        for k in range(n - 1):
            _track_diff(row, _diff(acts[layers[k]], ref[k + 1], mask))
            if not _close(acts[layers[k]], ref[k + 1], mask):
                problems.append(f"{stack_name}.{k}: max diff {_diff(acts[layers[k]], ref[k + 1], mask):.3g} "
                                f"(shapes {tuple(acts[layers[k]].shape)} vs {tuple(ref[k + 1].shape)})")
        # what transformers gives for the last block: the raw output, or the mapped final norm applied to it
        if _close(last, ref[n], mask) or _relaid_close(last, ref[n], mask):
            continue
        if stack.final_norm is not None:
            with torch.no_grad():
                normed = adapter.model.get_submodule(stack.final_norm)(last)
            if _close(normed, ref[n], mask) or _relaid_close(normed, ref[n], mask) or _relaid_close(
                    ref[n], normed, mask):  # transformers may unpad only its last entry (PEGASUS-X)
                continue
            norm_problems.append(f"{stack_name}: hidden_states[-1] differs by {_diff(normed, ref[n], mask):.3g} "
                                 f"from the mapped final norm {stack.final_norm} applied to the last block")
        else:
            norm_problems.append(f"{stack_name}: hidden_states[-1] differs from the last block by "
                                 f"{_diff(last, ref[n], mask):.3g} and no final norm is mapped")
    if norm_problems:
        checks.set("final_norm", FAIL, "; ".join(norm_problems))
    elif len(skipped) < len(mapping.stacks):
        checks.set("final_norm", PASS)
    else:
        checks.set("final_norm", NA, "transformers returns no hidden states")
    if problems:
        return FAIL, "; ".join(problems)
    if skipped and len(skipped) == len(mapping.stacks):
        return NA, "; ".join(skipped)
    return PASS, "; ".join(skipped) or None


def parity(adapter: Any) -> dict[str, dict[str, Any]]:
    """The sweep's value checks on any loaded adapter (the API-consistency suite runs them on registered
    models at real size): every block against transformers' hidden states, the last block and the final norm,
    and a padded batch against each text alone. {check: {"status": pass|fail|not_applicable, "reason"}}."""
    checks, row = _Checks(), {"notes": []}
    checks.run("extraction", lambda: _extraction(adapter, None, row, checks))  # type: ignore[arg-type]
    checks.run("padded", lambda: _padded(adapter))
    if row["notes"]:
        checks.results["extraction"]["notes"] = row["notes"]
    return checks.results


def _hf_alone_error(adapter: Any, text: str) -> str | None:
    """Why transformers' own forward fails on one text alone (None when it runs)."""
    import torch

    inputs = adapter.tokenize([text])
    try:
        with torch.no_grad():
            if adapter.mapping.is_encoder_decoder:
                adapter.model.get_encoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            else:
                _hf_forward(adapter.model, inputs)
    except Exception as exc:
        return _short(exc)
    return None


def _hf_padding_diff(adapter: Any) -> tuple[float, float]:
    """How much transformers' own hidden states of a text change when it sits in a right-padded batch: the
    largest absolute change over every entry, and the largest change relative to its entry's magnitude
    (models with massive activations — SmolLM2's residual stream reaches 2.5e4 — show float noise of 1e-2
    in absolute terms; a model that is really not padding-invariant shows relative changes far above 1e-4)."""
    import torch

    model = adapter.model
    outs = []
    for texts in (TEXTS, *([t] for t in TEXTS)):
        inputs = adapter.tokenize(texts)
        with torch.no_grad():
            out = (model.get_encoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                       output_hidden_states=True) if adapter.mapping.is_encoder_decoder
                   else _hf_forward(model, inputs, output_hidden_states=True))
        hs = getattr(out, "hidden_states", None)
        if not hs:
            return 0.0, 0.0
        outs.append((hs, int(inputs["attention_mask"].sum())))
    (batch, _), worst, relative = outs[0], 0.0, 0.0
    for i, (alone, n) in enumerate(outs[1:]):
        for j in range(1, len(alone)):
            diff = _diff(batch[j][i, :n], alone[j][0, :n])
            scale = float(alone[j][0, :n].abs().max()) if alone[j].numel() else 0.0
            worst, relative = max(worst, diff), max(relative, diff / scale if scale > 0 else diff)
    return worst, relative


def _padded(adapter: Any) -> tuple[str, str | None]:
    batch = adapter.extract_activations(TEXTS, [0, -1])
    worst, problems = 0.0, []
    for i, text in enumerate(TEXTS):
        try:
            alone = adapter.extract_activations([text], [0, -1])
        except Exception as exc:
            own = _hf_alone_error(adapter, text)
            if own is not None:
                return NA, f"transformers' own forward fails on text {i} alone: {own}"
            raise exc
        n = int(alone.attention_mask.sum())
        if int(batch.attention_mask[i].sum()) != n:
            problems.append(f"text {i}: {int(batch.attention_mask[i].sum())} tokens in the batch, {n} alone")
            continue
        for layer in (0, -1):
            a, b = batch[layer][i, :n], alone[layer][0, :n]
            if not _close(a, b):
                worst = max(worst, _diff(a, b))
                problems.append(f"text {i} layer {layer}: max diff {_diff(a, b):.3g}")
    if not problems:
        return PASS, None
    if worst < float("inf"):
        own, own_relative = _hf_padding_diff(adapter)
        if own_relative > 1e-4:
            return NA, (f"transformers' own hidden states change by {own:.3g} ({own_relative:.2g} of their "
                        "magnitude) when a text is padded in a batch: the model is not padding-invariant "
                        f"(NeuronMap: {worst:.3g})")
        if worst <= 4 * own:  # the same float noise batching gives transformers itself
            return PASS, f"batch noise {worst:.3g}, transformers' own {own:.3g}"
    return FAIL, "; ".join(problems)


def _hf_attentions(adapter: Any, inputs: dict[str, Any]) -> tuple[Any, str | None]:
    """transformers' own eager attention weights of the primary stack (None and why when it gives none)."""
    import torch

    from adapters.capture import attention_implementation

    model, mapping = adapter.model, adapter.mapping
    try:
        with attention_implementation(model, "eager"), torch.no_grad():
            if mapping.is_encoder_decoder:
                out = model.get_encoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                          output_attentions=True)
            else:
                out = _hf_forward(model, inputs, output_attentions=True)
    except Exception as exc:
        return None, f"transformers' eager forward with output_attentions fails: {_short(exc)}"
    att = getattr(out, "attentions", None)
    if not att:
        return None, "transformers returns no attention weights"
    att = [a for a in att if a is not None]
    odd = next((a for a in att if not isinstance(a, torch.Tensor) or a.dim() != 4), None)
    if odd is not None:
        what = tuple(odd.shape) if isinstance(odd, torch.Tensor) else type(odd).__name__
        return None, f"transformers' own 'attentions' are not [batch, heads, query, key] weights ({what})"
    return att, None


def _attention(adapter: Any, spec: TypeSpec, impl_before: Any) -> tuple[str, str | None]:
    import torch

    from adapters import InvalidLayerError
    from adapters.capture import MissingCaptureError

    model, mapping = adapter.model, adapter.mapping
    inputs = adapter.tokenize(TEXTS)
    ref, why_no_ref = _hf_attentions(adapter, inputs)
    if getattr(model.config, "_attn_implementation", None) != impl_before:
        return FAIL, f"attention implementation not restored by the reference call ({impl_before!r})"
    n = mapping.num_layers
    got: dict[int, Any] = {}
    errors: dict[int, str] = {}
    for k in range(n):
        try:
            got[k] = adapter.get_attention_patterns(TEXTS, [k])[k]
        except (InvalidLayerError, MissingCaptureError) as exc:
            errors[k] = _short(exc)
        except Exception as exc:
            errors[k] = _short(exc)
        now = getattr(model.config, "_attn_implementation", None)
        if now != impl_before:
            return FAIL, f"attention implementation left at {now!r}, was {impl_before!r}"
    if ref is None and (not got or "not [batch, heads" in (why_no_ref or "")):
        return NA, f"{why_no_ref}; NeuronMap: {next(iter(errors.values()), 'gave weights')}"
    problems: list[str] = []
    if ref is not None and len(got) < len(ref):
        problems.append(f"transformers gives weights for {len(ref)} blocks, NeuronMap for {len(got)}: "
                        + "; ".join(f"{k}: {e}" for k, e in list(errors.items())[:2]))
    mask = inputs["attention_mask"].bool().cpu()
    batch, seq = mask.shape
    if ref is not None and any(tuple(r.shape[-2:]) != (seq, seq) for r in ref):
        odd = next(tuple(r.shape) for r in ref if tuple(r.shape[-2:]) != (seq, seq))
        return NA, (f"transformers' own attention weights are {odd}, not [batch, heads, {seq}, {seq}] "
                    "(local or sparse attention)")
    from adapters.compat import text_config

    heads = _get(text_config(model.config), "num_attention_heads") or _get(model.config, "encoder_attention_heads")
    aligned = ref if ref is not None and len(ref) == len(got) else None
    causal = spec.task == "causal" and not mapping.is_encoder_decoder and not (
        aligned is not None and any(float(torch.triu(r.float(), diagonal=1).abs().max()) > 0 for r in aligned))
    rows_na = []
    for j, (k, a) in enumerate(sorted(got.items())):
        r = aligned[j].detach().cpu() if aligned is not None else None
        want = tuple(r.shape) if r is not None else (batch, heads, seq, seq)
        if tuple(a.shape) != want and not (r is None and heads is None and a.dim() == 4):
            problems.append(f"layer {k}: shape {tuple(a.shape)}, expected {want}")
            continue
        if r is not None and not _close(a, r):
            problems.append(f"layer {k}: differs from transformers' own weights by {_diff(a, r):.3g}")
        for b in range(batch):
            m = int(mask[b].sum())
            rows = a[b, :, :m, :m].float().sum(-1)
            if not torch.allclose(rows, torch.ones_like(rows), atol=1e-4):
                ref_rows = r[b, :, :m, :m].float().sum(-1) if r is not None else None
                if ref_rows is not None and not torch.allclose(ref_rows, torch.ones_like(ref_rows), atol=1e-4):
                    rows_na.append(f"layer {k}")  # the model's own weights are not a softmax over real keys
                else:
                    problems.append(f"layer {k} text {b}: rows sum to {float(rows.min()):.4g}..{float(rows.max()):.4g}")
                break
            if causal and float(torch.triu(a[b, :, :m, :m].float(), diagonal=1).abs().max() if m > 1 else 0) > 1e-6:
                problems.append(f"layer {k} text {b}: weights on future keys in a causal decoder")
                break
    if problems:
        return FAIL, "; ".join(problems)
    notes = []
    if errors:
        notes.append("no attention in blocks " + ", ".join(map(str, errors)))
    if rows_na:
        notes.append("rows do not sum to 1 in transformers' own weights either (" + ", ".join(rows_na) + ")")
    if ref is None:
        notes.append(f"not compared with transformers: {why_no_ref}")
    return PASS, "; ".join(notes) or None


# ---- the sweep ---------------------------------------------------------------------------------------
def sweep(model_types: list[str] | None = None, timeout_per_type: float | None = 30.0,
          progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """One row per model type (all text types of the installed transformers when None)."""
    import torch

    specs = {s.model_type: s for s in globals()["model_types"]()}
    chosen = [specs[t] if t in specs else TypeSpec(t, "causal", "") for t in model_types] if model_types \
        else list(specs.values())
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is 5-10x faster than several on a busy machine
    with _quiet(), tempfile.TemporaryDirectory(prefix="nm-coverage-") as tmp:
        for i, spec in enumerate(chosen):
            if i % 16 == 15:
                gc.collect()
            if not spec.class_name:
                rows.append({"model_type": spec.model_type, "built": False, "checks": {}, "failures": [],
                             "build_error": "not in transformers' causal-LM, masked-LM or seq2seq mappings"})
                continue
            row = check_type(spec, Path(tmp), timeout_per_type)
            torch.set_num_threads(1)
            rows.append(row)
            if progress is not None:
                progress(row)
    torch.set_num_threads(threads)
    gc.collect()
    return rows


def covered(row: dict[str, Any]) -> bool:
    """A built type whose load and every counted check held or did not apply."""
    checks = row.get("checks", {})
    if not row.get("built") or checks.get("load", {}).get("status") != PASS:
        return False
    if any(v["status"] == FAIL for k, v in checks.items() if k not in ("detection",)):
        return False
    return all(checks.get(k, {}).get("status") in (PASS, NA) for k in COUNTED)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, the coverage fraction and every failure with its reason."""
    built = [r for r in rows if r.get("built")]
    ok = [r for r in built if covered(r)]
    detect_ok = [r for r in built if r.get("checks", {}).get("detection", {}).get("status") == PASS]
    return {
        "types": len(rows),
        "built": len(built),
        "covered": len(ok),
        "coverage_fraction": len(ok) / len(built) if built else None,
        "detection_agreement_fraction": len(detect_ok) / len(built) if built else None,
        "failures": {r["model_type"]: [f for f in r["failures"] if not f.startswith("detection:")]
                     for r in built if not covered(r)},
        "detection_disagreements": {r["model_type"]: r["checks"]["detection"]["reason"] for r in built
                                    if r.get("checks", {}).get("detection", {}).get("status") == FAIL},
        "not_applicable": {r["model_type"]: {k: v["reason"] for k, v in r["checks"].items() if v["status"] == NA}
                           for r in built if any(v["status"] == NA for v in r["checks"].values())},
        "did_not_build": {r["model_type"]: r.get("build_error") for r in rows if not r.get("built")},
        "unnamed_types": sorted(r["model_type"] for r in built if r.get("family", {}).get("source") == "structure"),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Plain-text report of a summary (for the terminal and the suite's failure message)."""
    lines = [f"coverage: {summary['covered']}/{summary['built']} built types"
             f" = {summary['coverage_fraction']:.1%}" if summary["built"] else "coverage: nothing built",
             f"types: {summary['types']}, did not build: {len(summary['did_not_build'])}",
             f"detection agreement: {summary['detection_agreement_fraction'] or 0:.1%}"]
    if summary.get("unnamed_types"):
        lines.append("types no table names (family and layers from structure): "
                     + ", ".join(summary["unnamed_types"]))
    if summary["failures"]:
        lines.append("failures:")
        lines += [f"  {t}: {' | '.join(f) or 'incomplete checks'}" for t, f in summary["failures"].items()]
    if summary["detection_disagreements"]:
        lines.append("detection disagreements:")
        lines += [f"  {t}: {r}" for t, r in summary["detection_disagreements"].items()]
    if summary["not_applicable"]:
        lines.append("not applicable:")
        lines += [f"  {t}: " + "; ".join(f"{k}: {r}" for k, r in v.items()) for t, v in
                  summary["not_applicable"].items()]
    lines.append("did not build:")
    lines += [f"  {t}: {r}" for t, r in summary["did_not_build"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.coverage [TYPE ...] [--json FILE]`: run the sweep and print the summary."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m harness.coverage")
    parser.add_argument("types", nargs="*")
    parser.add_argument("--json", default=None)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    def show(row: dict[str, Any]) -> None:
        state = "ok" if covered(row) else ("FAIL" if row.get("built") else "skip")
        print(f"{row['model_type']:28s} {state:4s} {row.get('seconds') or 0:6.2f}s "
              f"{'; '.join(row['failures']) or row.get('build_error') or ''}"[:400], flush=True)

    start = time.perf_counter()
    rows = sweep(args.types or None, timeout_per_type=args.timeout, progress=show if args.verbose else None)
    summary = summarize(rows)
    print(format_summary(summary))
    print(f"sweep took {time.perf_counter() - start:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
