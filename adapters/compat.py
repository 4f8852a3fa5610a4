"""What differs between the transformers releases in range (4.51 through 5.x), decided in one place.

The rest of adapters/ asks this module instead of testing versions itself:

- loading: the dtype keyword is `dtype` from 4.56 on, `torch_dtype` before (`dtype_kwargs`);
- attention: 4.56+ switch a loaded model's implementation with `set_attn_implementation` (4.56-4.57 leave a
  marker on sub-configs that blocks the next switch back: removed here); 4.51-4.55 have no such method, and
  models written on the attention interface read `config._attn_implementation` at call time, so setting it
  switches them; older-style models (per-implementation classes chosen at init) are left as they are and
  give weights when called with `output_attentions=True` (`attention_implementation`);
- inputs: what a forward gets is decided by the model, not by whatever the tokenizer emits. A generic fast
  tokenizer emits `token_type_ids` under 4.x and not under 5.x; passed to GPT-2 they add token-type
  embeddings (0.06 apart on the same checkpoint), passed to a forward without that argument they crash
  (`forward_input_names`);
- configs: the dtype field is `dtype` (4.56+) or `torch_dtype` (`config_dtype`); composite configs expose
  their text part through `get_text_config` (`text_config`).
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
from collections.abc import Iterator
from functools import cache
from typing import Any

import transformers
from packaging.version import Version
from torch import nn

#: The releases this project supports; pyproject.toml's dependency range says the same.
SUPPORTED_RANGE = ">=4.51,<6"
MINIMUM = Version("4.51.0")
VERSION = Version(transformers.__version__)
IS_V5 = VERSION.major >= 5


def _dtype_keyword() -> str:
    """4.56 renamed `torch_dtype` to `dtype` (from_pretrained, from_config, configs) and kept the old name as
    a config property: its presence tells the release apart without parsing versions."""
    from transformers import PretrainedConfig

    return "dtype" if isinstance(inspect.getattr_static(PretrainedConfig, "torch_dtype", None), property) \
        else "torch_dtype"


DTYPE_KEYWORD = _dtype_keyword()

# Inputs a tokenizer may emit that change what a model computes only if the architecture has a use for them.
_TOKEN_TYPE_KEYS = ("type_vocab_size", "token_type_vocab_size")


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """The dtype keyword for from_pretrained / from_config under the installed release."""
    return {DTYPE_KEYWORD: dtype}


def config_dtype(config: Any) -> Any:
    """The dtype a config declares, whichever field name its release wrote (None when none)."""
    for name in ("dtype", "torch_dtype"):
        with contextlib.suppress(Exception):  # 4.56-4.57 warn on torch_dtype; some configs raise on access
            value = getattr(config, name, None)
            if value is not None:
                return value
    return None


def set_config_dtype(config: Any, dtype: Any) -> None:
    """Record the dtype weights are stored in, under the field name the installed release serializes."""
    setattr(config, DTYPE_KEYWORD, dtype)


_LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "encoder_layers", "num_encoder_layers")


def text_config(config: Any) -> Any:
    """The language-model part of a composite config (the config itself for plain text models).

    A config that states its own layer count is a text model's, whatever `get_text_config` says: 4.x hands
    back FSMT's decoder sub-config there, which lacks the encoder's facts.
    """
    getter = getattr(config, "get_text_config", None)
    if getter is None:
        return config
    try:
        sub = getter()
    except Exception:  # some releases raise on configs with several text parts
        return config
    if sub is not config and any(isinstance(vars(config).get(k), int) for k in _LAYER_KEYS):
        return config
    return sub


def _accepted(fn: Any) -> tuple[set[str], bool]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def uses_token_types(config: Any) -> bool:
    """True when the architecture has a token-type (segment) embedding: then the ids are real inputs."""
    cfg = text_config(config)
    return any(isinstance(getattr(cfg, k, None), int) and getattr(cfg, k) > 0 for k in _TOKEN_TYPE_KEYS)


def forward_input_names(model: nn.Module, forward: Any = None) -> frozenset[str]:
    """Tokenizer outputs that `forward` (default `model.forward`) is given: ids, the mask where the forward
    names it (or takes **kwargs), token-type ids only where the architecture embeds token types."""
    names, var_kw = _accepted(forward if forward is not None else model.forward)
    keep = {"input_ids"}
    if "attention_mask" in names or var_kw:
        keep.add("attention_mask")
    config = getattr(model, "config", None)
    if "token_type_ids" in names and config is not None and uses_token_types(config):
        keep.add("token_type_ids")
    return frozenset(keep)


def no_cache_kwargs(module: nn.Module, config: Any = None) -> dict[str, Any]:
    """`use_cache=False` where the forward takes it (a KV cache only costs memory when extracting): named in
    the signature, or the config has the flag and the forward takes **kwargs (5.x); never otherwise (4.x
    encoders such as BertForMaskedLM reject it although their config carries it)."""
    names, var_kw = _accepted(module.forward)
    config = config if config is not None else getattr(module, "config", None)
    has_flag = getattr(config, "use_cache", None) is not None
    return {"use_cache": False} if "use_cache" in names or (var_kw and has_flag) else {}


def select_inputs(encoded: Any, keep: frozenset[str]) -> dict[str, Any]:
    """The entries of a tokenizer's output that the model takes (see forward_input_names)."""
    return {k: v for k, v in dict(encoded).items() if k in keep}


# ---- attention implementation ------------------------------------------------------------------------------
@cache
def _module_switchable(module_name: str) -> bool:
    """Whether a modeling file dispatches attention through the config at call time (the attention interface):
    then setting `_attn_implementation` switches a loaded model. The test transformers itself uses (4.56+)."""
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if not path:
        return False
    try:
        with open(path, encoding="utf-8") as f:
            code = f.read()
    except OSError:
        return False
    if re.search(r"class \w+Attention\(nn\.Module\)", code):
        return "ALL_ATTENTION_FUNCTIONS" in code and "_attn_implementation" in code
    return True


def can_switch_attention(model: nn.Module) -> bool:
    """Whether this loaded model can change its attention implementation at run time."""
    probe = getattr(type(model), "_can_set_attn_implementation", None)
    if callable(probe):
        try:
            return bool(probe())
        except Exception:
            return False
    return _module_switchable(type(model).__module__)


def _pretrained_parts(model: nn.Module) -> list[Any]:
    from transformers import PreTrainedModel

    return [m for m in model.modules() if isinstance(m, PreTrainedModel)]


def _set_attention(model: nn.Module, wanted: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(wanted)
        for part in _pretrained_parts(model):  # 4.56-4.57: a marker that makes the next switch skip sub-models
            with contextlib.suppress(AttributeError):
                delattr(part.config, "_attn_was_changed")
        return
    configs = {id(p.config): p.config for p in _pretrained_parts(model) if getattr(p, "config", None) is not None}
    for cfg in configs.values():
        cfg._attn_implementation = wanted  # the property setter of 4.51-4.55 configs


def current_attention(model: nn.Module) -> str | None:
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


@contextlib.contextmanager
def attention_implementation(model: nn.Module, wanted: str = "eager") -> Iterator[bool]:
    """Switch to an implementation that returns weights for one call, and always switch back.

    Yields True when the model now runs `wanted`. A model that cannot switch at run time is left as it is and
    yields False: its attention classes (one per implementation, chosen at init) return weights only when the
    forward is called with `output_attentions=True`, and until then a 4-D output may be something else
    (4.x T5 returns its position bias there).
    """
    current = current_attention(model)
    if current is None or not can_switch_attention(model):
        yield False
        return
    if current == wanted:
        yield True
        return
    _set_attention(model, wanted)
    try:
        yield True
    finally:
        _set_attention(model, current)


# ---- tokenizers ----------------------------------------------------------------------------------------------
_GENERIC_TOKENIZERS = frozenset({"PreTrainedTokenizerFast", "TokenizersBackend"})


def declared_tokenizer_class(location: str) -> str | None:
    """The tokenizer class a local folder's tokenizer_config.json declares (None elsewhere or when unset)."""
    import json
    from pathlib import Path

    path = Path(location) / "tokenizer_config.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def load_tokenizer(location: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer a checkpoint folder declares, the same on every release.

    A folder that declares the generic fast class and ships tokenizer.json is read as written: 5.x's
    AutoTokenizer otherwise swaps in the model type's own class for some types (Qwen2, Phi-3, ...), which
    rebuilds the pipeline from the vocabulary and splits text differently than 4.x does for the same folder.
    """
    from pathlib import Path

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if declared_tokenizer_class(location) in _GENERIC_TOKENIZERS and (Path(location) / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(location)
    return AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)


# ---- disk offload ------------------------------------------------------------------------------------------
def alias_tied_offloaded_weights(model: nn.Module) -> int:
    """Make every name of a tied weight readable from accelerate's offload index; returns names added.

    4.x indexes a disk-offloaded tied weight under one name only (T5: `shared.weight`), while the hooks of the
    modules that share it look it up under theirs (`encoder.embed_tokens.weight`): the forward then fails
    with a KeyError. 5.x indexes every name, and then this adds nothing.
    """
    loaders = {}
    for module in model.modules():
        hook = getattr(module, "_hf_hook", None)
        for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
            data = getattr(getattr(h, "weights_map", None), "dataset", None)
            if data is not None and hasattr(data, "index") and hasattr(data, "state_dict"):
                loaders[id(data)] = data
    if not loaders:
        return 0
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    added = 0
    for data in loaders.values():
        for names in groups.values():
            known = [n for n in names if n in data.state_dict or n in data.index]
            for name in names if known else ():
                if name in data.state_dict or name in data.index:
                    continue
                if known[0] in data.state_dict:
                    data.state_dict[name] = data.state_dict[known[0]]
                else:
                    data.index[name] = data.index[known[0]]
                if hasattr(data, "all_keys"):
                    data.all_keys.append(name)
                added += 1
    return added


def describe() -> dict[str, Any]:
    """The installed release and what this module decided for it (goes into results' environment)."""
    return {"transformers": str(VERSION), "supported_range": SUPPORTED_RANGE, "dtype_keyword": DTYPE_KEYWORD,
            "in_range": MINIMUM <= VERSION < Version("6"),
            "runtime_attention_switch": "set_attn_implementation" if hasattr(transformers.PreTrainedModel,
                                                                             "set_attn_implementation")
            else "config attribute"}
