"""Model families and their detection from a name, a config or a module tree.

Three tiers, each structural so that it reaches past the models anyone named (DESIGN.md, "Family taxonomy"):

* ``family_from_name``: token-aware reading of a hub id ("distilgpt2" is GPT, "bart" is T5-family, "roberta"
  is BERT); domain markers of code/science/biomedical *encoders* win over architecture tokens.
* ``family_from_config``: ``model_type`` against a table covering every text model type of the installed
  transformers' causal-LM, masked-LM and seq2seq mappings; unknown types fall back to structural config keys.
  Domain comes only from what the config carries (``_name_or_path``, a distinctive vocabulary).
* ``family_from_module``: the module tree alone (``module.config`` is never read): cross-attention → T5;
  causal vs bidirectional attention → decoder vs encoder; for decoders, the majority of RMSNorm, rotary
  positions and a gated MLP → LLaMA, else GPT. Domain cannot be seen here, so the architecture's family is
  the answer.

Decoder rule, and why a majority: the taxonomy's GPT kin include rotary models (GPT-J, GPT-NeoX, Phi-2, Falcon,
StarCoder2: one LLaMA trait) while LLaMA kin can miss one trait (Phi-3.5-MoE, Cohere and OLMo-1 use LayerNorm
with rotary + gated MLP). Two of three traits is the smallest rule that puts every named model where
DESIGN.md puts it.

``original_rule`` keeps the original design's substring baseline verbatim, for measuring against.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from enum import Enum
from typing import Any

import torch
from torch import nn

from .errors import DetectionError


class ModelFamily(str, Enum):
    """Structural families of DESIGN.md; values are the strings results and models.toml use."""

    GPT = "gpt"
    BERT = "bert"
    T5 = "t5"
    LLAMA = "llama"
    DOMAIN_SPECIFIC = "domain_specific"


GPT, BERT, T5, LLAMA, DOMAIN = (
    ModelFamily.GPT,
    ModelFamily.BERT,
    ModelFamily.T5,
    ModelFamily.LLAMA,
    ModelFamily.DOMAIN_SPECIFIC,
)

# --------------------------------------------------------------------------------------------------------
# model_type → architecture family. Covers every model type of transformers 5.x MODEL_FOR_CAUSAL_LM,
# MODEL_FOR_MASKED_LM and MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM mappings (tests/test_families.py checks coverage
# against the installed version). Labels follow the structural rule above, read off each type's default
# config and module tree (norm kind, rotary, gated MLP, cross-attention). Multimodal wrappers take the
# family of the language model they wrap; speech/music encoder-decoders are encoder-decoders.
# --------------------------------------------------------------------------------------------------------
_T5_TYPES = """
    bart bigbird_pegasus blenderbot blenderbot-small encoder-decoder fsmt led longt5 m2m_100 marian mbart mt5
    musicgen musicgen_melody mvp nllb-moe pegasus pegasus_x plbart prophetnet seamless_m4t seamless_m4t_v2
    switch_transformers t5 t5gemma t5gemma2 umt5 whisper xlm-prophetnet speech-encoder-decoder
    vision-encoder-decoder speech_to_text pop2piano
"""
_BERT_TYPES = """
    albert bert bert-generation big_bird camembert canine convbert data2vec-text deberta deberta-v2 distilbert
    dpr electra ernie eurobert flaubert fnet funnel gte ibert jina_embeddings_v3 layoutlm lilt longformer luke
    markuplm megatron-bert mobilebert modernbert modernvbert mpnet mra neomme nezha nomic_bert nystromformer
    perceiver qdqbert realm rembert retribert roberta roberta-prelayernorm roc_bert roformer splinter
    squeezebert tapas ultrabert ultravbert xlm xlm-roberta xlm-roberta-xl xmod yoso
"""
_GPT_TYPES = """
    biogpt bloom codegen ctrl falcon falcon_mamba fuyu git gpt-sw3 gpt2 gpt_bigcode gpt_neo gpt_neox
    gpt_neox_japanese gptj imagegpt jais2 mamba mamba2 mpt nemotron nemotron_h nemo_speechlm openai-gpt opt
    persimmon phi reformer rwkv starcoder2 transfo-xl trocr xglm xlnet
"""
_LLAMA_TYPES = """
    afmoe apertus apertus1p5_text arcee aria_text audioflamingo3 axk1 axk2 bailing_hybrid bamba beam bitnet
    blt cohere cohere2 cohere2_moe cohere_compass_text cpmant cwm dbrx deepseek_v2 deepseek_v3 deepseek_v32
    deepseek_v4 diffllama doge dory dots1 dots3_note dots3_note_text emu3 ernie4_5 ernie4_5_moe exaone exaone4
    exaone_moe falcon_h1 flex_olmo flint gemma gemma2 gemma3 gemma3_text gemma3n gemma3n_text gemma4
    gemma4_assistant gemma4_text gemma4_unified gemma4_unified_assistant gemma4_unified_text glm glm4 glm4_moe
    glm4_moe_lite glm_moe_dsa glmasr got_ocr2 gpt_oss granite granite_speech granite_speech_plus granite_swa
    granitemoe granitemoe_swa granitemoehybrid granitemoeshared helium hrm_text hunyuan_v1_dense
    hunyuan_v1_moe hy_v3 hy_v4 hyperclovax inkling2_loop_text inkling2_text inkling_text internlm3 iquestcoder
    jamba jetmoe kimi_linear kolibri1 laguna lara_mini lfm2 lfm2_moe lfm3 llama llama4 llama4_text longcat_flash
    mellum mimo_v2_flash minicpm3 minimax minimax_m2 minimax_m3_vl_text ministral ministral3 mistral mistral3
    mixtral mllama modernbert-decoder moshi moss_transcribe_diarize musicflamingo nanochat olmo olmo2 olmo3
    olmo_hybrid olmoe omniasr phi3 phi4_multimodal phimoe qwen2 qwen2_audio qwen2_moe qwen3 qwen3_5
    qwen3_5_moe qwen3_5_moe_text qwen3_5_text qwen3_asr qwen3_moe qwen3_next qwen4_exp qwen4_exp_text
    recurrent_gemma sarvam_mla sarvam_moe seed_oss smollm3 solar_open stablelm vaultgemma vibevoice_asr voxtral
    voxtral_realtime xlstm youtu zamba zamba2 zaya llava llava_next mistral3 paligemma qwen2_vl qwen2_5_vl idefics3
"""
ARCH_FAMILY_BY_MODEL_TYPE: dict[str, ModelFamily] = {
    t: fam
    for fam, block in ((T5, _T5_TYPES), (BERT, _BERT_TYPES), (GPT, _GPT_TYPES), (LLAMA, _LLAMA_TYPES))
    for t in block.split()
}
# Model types whose very type says "protein/biology encoder": the config carries the domain by itself.
DOMAIN_MODEL_TYPES: frozenset[str] = frozenset({"esm", "esmc"})
ARCH_FAMILY_BY_MODEL_TYPE.update({t: BERT for t in DOMAIN_MODEL_TYPES})

# Vocabulary sizes that only domain encoders have (SciBERT scivocab uncased; its derivatives SPECTER and
# MatSciBERT keep it). A fine-tuned copy with an opaque name still carries its vocabulary.
DOMAIN_VOCAB_SIZES: frozenset[int] = frozenset({31090})

# --------------------------------------------------------------------------------------------------------
# Name tier
# --------------------------------------------------------------------------------------------------------
# Whole tokens (after lowercasing and splitting on / - _ . and spaces) → family. Trailing digits and version
# suffixes are also tried ("gpt2" → "gpt", "qwen2" → "qwen", "arabertv02" → "arabert").
_NAME_TOKENS: dict[str, ModelFamily] = {
    # GPT: decoder-only, LayerNorm
    **dict.fromkeys(
        "gpt gptj neo neox pythia opt bloom bloomz falcon codegen starcoder starcoderbase santacoder biogpt "
        "dialogpt galactica mpt xglm ctrl rwkv persimmon fuyu polyglot redpajama codeparrot xlnet reformer "
        "jais nemotron mamba".split(),
        GPT,
    ),
    # LLaMA kin: RMSNorm + rotary + gated MLP (or two of them)
    **dict.fromkeys(
        "llama alpaca vicuna mistral mixtral ministral mathstral codestral zephyr qwen qwq gemma yi deepseek "
        "internlm baichuan olmo olmoe smollm tinyllama openllama solar granite exaone minicpm glm chatglm "
        "cohere command aya dbrx jamba zamba xgen recurrentgemma phimoe".split(),
        LLAMA,
    ),
    # BERT: encoder-only
    **dict.fromkeys(
        "bert roberta deberta albert electra xlm mpnet minilm camembert flaubert longformer bigbird funnel "
        "convbert squeezebert mobilebert tinybert distilbert distilroberta ernie luke rembert modernbert "
        "tapas layoutlm canine dpr muril xmod".split(),
        BERT,
    ),
    # T5 kin: encoder-decoder
    **dict.fromkeys(
        "t5 mt5 byt5 umt5 longt5 flan ul2 codet5 codet5p t0 t0pp mt0 bart mbart distilbart plbart barthez "
        "bartpho pegasus marian nllb m2m prophetnet blenderbot switch whisper fsmt mvp led t5gemma".split(),
        T5,
    ),
}
# Brands of embedding models: usually BERT-like, but a stronger token in the same name wins
# ("e5-mistral-7b-instruct" is Mistral, "gte-Qwen2" is Qwen).
_WEAK_NAME_TOKENS: dict[str, ModelFamily] = dict.fromkeys("e5 bge gte nomic".split(), BERT)
# Tokens that say nothing about architecture but look like one ("GPTQ" is a quantisation format).
_NOISE_TOKENS = frozenset("gptq awq gguf ggml exl2 hf base large small tiny mini medium xl xxl chat instruct".split())
# Two-token names whose parts would mislead one by one.
_BIGRAMS: dict[tuple[str, str], ModelFamily] = {
    ("bigbird", "pegasus"): T5,
    ("gpt", "oss"): LLAMA,
    ("opus", "mt"): T5,
    ("open", "llama"): LLAMA,
    ("code", "llama"): LLAMA,
    ("falcon", "mamba"): GPT,
    ("falcon", "h1"): LLAMA,
}
# Architecture morphemes that may be glued to a prefix/suffix inside one token ("distilgpt", "codellama",
# "chemberta"); longest first so "roberta" wins over "bert".
_MORPHEMES: list[tuple[str, ModelFamily]] = sorted(
    [
        ("gpt", GPT),
        ("neox", GPT),
        ("bloom", GPT),
        ("falcon", GPT),
        ("starcoder", GPT),
        ("codegen", GPT),
        ("llama", LLAMA),
        ("mistral", LLAMA),
        ("mixtral", LLAMA),
        ("gemma", LLAMA),
        ("qwen", LLAMA),
        ("vicuna", LLAMA),
        ("alpaca", LLAMA),
        ("glm", LLAMA),
        ("bert", BERT),
        ("roberta", BERT),
        ("berta", BERT),
        ("deberta", BERT),
        ("electra", BERT),
        ("t5", T5),
        ("bart", T5),
        ("pegasus", T5),
    ],
    key=lambda kv: -len(kv[0]),
)
# Domain: markers that name a code/science/biomedical encoder outright...
_DOMAIN_TOKENS = frozenset(
    "codebert graphcodebert codeberta unixcoder scibert matscibert biobert pubmedbert biomedbert "
    "bioclinicalbert clinicalbert bluebert biomednlp chemberta sapbert biolinkbert bioelectra pubmedelectra "
    "protbert esm esm1b esm2 scivocab".split()
)
# ...and domain morphemes that make any *encoder* name a domain one ("biomed_roberta", "Bio_ClinicalBERT",
# "prot_bert"); on a decoder they do not ("biogpt", "BioMistral", "codegen" keep their architecture).
_DOMAIN_MORPHEMES = (
    "bio",
    "biomed",
    "biomedical",
    "pubmed",
    "clinical",
    "med",
    "medical",
    "sci",
    "scientific",
    "chem",
    "chemical",
    "code",
    "prot",
    "protein",
    "mimic",
)


def _tokens(part: str) -> list[str]:
    return [t for t in re.split(r"[/\-_.\s]+", part.lower()) if t]


def _variants(tok: str) -> Iterator[str]:
    """A token, then without trailing digits / version ("qwen2" → "qwen", "arabertv02" → "arabert")."""
    yield tok
    stripped = re.sub(r"\d+$", "", tok)
    if stripped and stripped != tok:
        yield stripped
    unversioned = re.sub(r"v\d*$", "", stripped)
    if unversioned and unversioned not in (tok, stripped):
        yield unversioned


def _version_after(tokens: list[str], i: int) -> int | None:
    """Major version of tokens[i] ("phi3" → 3, "phi", "3" → 3, "falcon3" → 3), else None."""
    m = re.search(r"(\d+)$", tokens[i])
    if m and re.sub(r"\d+$", "", tokens[i]):
        return int(m.group(1))
    if i + 1 < len(tokens) and tokens[i + 1].isdigit():
        return int(tokens[i + 1])
    return None


def _versioned(tokens: list[str], i: int) -> ModelFamily | None:
    """Families that changed architecture between versions of one brand."""
    base = re.sub(r"\d+$", "", tokens[i])
    version = _version_after(tokens, i)
    if base == "phi":  # Phi-1/1.5/2: LayerNorm decoders; Phi-3, 3.5, 4: the LLaMA recipe
        return LLAMA if version is not None and version >= 3 else GPT
    if base == "falcon":  # Falcon 1 (7B/40B/180B, RW): GPT-like; Falcon3 is a Llama architecture
        return LLAMA if version is not None and version >= 3 else GPT
    if base == "ernie":  # ERNIE 1-3: BERT encoders; ERNIE 4.5: LLaMA-like decoder
        return LLAMA if version is not None and version >= 4 else BERT
    if base == "stablelm":  # alpha models are GPT-NeoX; StableLM 2 / 3B-4E1T / Zephyr: LLaMA-like
        return GPT if "alpha" in tokens else LLAMA
    if tokens[i] == "codegen25":  # CodeGen2.5 is a Llama architecture
        return LLAMA
    return None


def _token_family(tok: str) -> ModelFamily | None:
    for v in _variants(tok):
        if v in _NAME_TOKENS:
            return _NAME_TOKENS[v]
    for v in _variants(tok):
        # X2Y: an encoder-decoder assembled from two architectures ("bert2bert", "roberta2roberta")
        m = re.fullmatch(r"([a-z]+)2([a-z]+)", v)
        if m and _token_family(m.group(1)) and _token_family(m.group(2)):
            return T5
        for morpheme, fam in _MORPHEMES:
            if len(v) > len(morpheme) and (v.endswith(morpheme) or v.startswith(morpheme)):
                return fam
    return None


def _scan(tokens: list[str]) -> tuple[ModelFamily | None, ModelFamily | None]:
    """(first strong family, first weak family) of a token list, left to right."""
    strong: ModelFamily | None = None
    weak: ModelFamily | None = None
    for i, tok in enumerate(tokens):
        if tok in _NOISE_TOKENS:
            continue
        if i + 1 < len(tokens) and (tok, tokens[i + 1]) in _BIGRAMS:
            return _BIGRAMS[(tok, tokens[i + 1])], weak
        fam = _versioned(tokens, i) or _token_family(tok)
        if fam is not None:
            strong = fam
            break
        for v in _variants(tok):
            if weak is None and v in _WEAK_NAME_TOKENS:
                weak = _WEAK_NAME_TOKENS[v]
    return strong, weak


def _has_domain_marker(tokens: list[str]) -> bool:
    for tok in tokens:
        if any(v in _DOMAIN_TOKENS for v in _variants(tok)):
            return True
        if any(v in _DOMAIN_MORPHEMES for v in _variants(tok)):
            return True
        # glued: a domain prefix on an encoder morpheme ("pubmedbert", "chemberta", "matscibert")
        for enc in ("roberta", "berta", "bert", "electra"):
            if tok.endswith(enc) and len(tok) > len(enc):
                prefix = tok[: -len(enc)]
                if any(d in prefix for d in _DOMAIN_MORPHEMES):
                    return True
    return False


def family_from_name(name: str) -> ModelFamily | None:
    """Family that a hub id or model name states, or None when it states none.

    The model part of the id (after the last "/") is read first, then the organisation ("meta-llama/...").
    Domain markers count only when the architecture read is an encoder, per the taxonomy.
    """
    if not isinstance(name, str) or not name.strip():
        return None
    org, _, model = name.strip().rpartition("/")
    model_tokens, org_tokens = _tokens(model), _tokens(org)
    strong, weak = _scan(model_tokens)
    if strong is None and weak is None:
        strong, weak = _scan(org_tokens)
        if org_tokens and org_tokens[-1] == "mistralai":
            strong = strong or LLAMA
    arch = strong or weak
    domain_named = any(v in _DOMAIN_TOKENS for t in model_tokens for v in _variants(t))
    if (arch in (BERT, None) and domain_named) or (arch is BERT and _has_domain_marker(model_tokens)):
        return DOMAIN
    return arch


# --------------------------------------------------------------------------------------------------------
# Config tier
# --------------------------------------------------------------------------------------------------------
def _is_pretrained_config(obj: Any) -> bool:
    tf = sys.modules.get("transformers")  # not imported → obj cannot be one; keeps detect() import-light
    return tf is not None and isinstance(obj, tf.PretrainedConfig)


def _config_view(config: Any) -> Mapping[str, Any]:
    if isinstance(config, Mapping):
        return config
    if _is_pretrained_config(config):
        view = dict(vars(config))
        for key in ("model_type", "is_encoder_decoder"):
            view.setdefault(key, getattr(config, key, None))
        view.setdefault("_name_or_path", getattr(config, "name_or_path", None))
        return view
    raise DetectionError(f"expected a transformers PretrainedConfig or a config.json dict, got {type(config).__name__}")


_STRUCTURAL_KEYS = (
    "is_encoder_decoder",
    "is_decoder",
    "architectures",
    "rms_norm_eps",
    "layer_norm_eps",
    "layer_norm_epsilon",
    "norm_eps",
    "type_vocab_size",
    "rope_theta",
    "rope_parameters",
    "rope_scaling",
    "rotary_dim",
    "rotary_pct",
    "hidden_act",
    "encoder",
    "decoder",
    "text_config",
    "num_hidden_layers",
    "n_layer",
)


def _structural_config_family(cfg: Mapping[str, Any]) -> ModelFamily | None:
    """Family of a config whose model_type is unknown, from the keys transformers configs share."""
    text = cfg.get("text_config") or cfg.get("language_config") or cfg.get("llm_config")
    if isinstance(text, Mapping) or _is_pretrained_config(text):
        sub = _config_view(text)
        if not (cfg.get("is_encoder_decoder") or cfg.get("encoder")):
            return _arch_family_from_config(sub)
    if cfg.get("is_encoder_decoder") or (cfg.get("encoder") and cfg.get("decoder")):
        return T5
    archs = " ".join(cfg.get("architectures") or [])
    causal = bool(cfg.get("is_decoder")) or bool(re.search(r"CausalLM|LMHeadModel|ForConditionalGeneration", archs))
    encoder = bool(re.search(r"MaskedLM|ForSequenceClassification|ForTokenClassification|ForQuestionAnswering", archs))
    if not causal and not encoder:
        # No head named: vote with the keys that separate the default configs of encoders and decoders
        # (BERT-style dropout names, token types and [CLS]/[SEP]/[MASK] ids vs KV heads, caches, experts).
        enc_keys = ("type_vocab_size", "attention_probs_dropout_prob", "cls_token_id", "sep_token_id", "mask_token_id")
        dec_keys = ("num_key_value_heads", "use_cache", "sliding_window", "num_experts_per_tok", "layer_types")
        enc_votes = sum(cfg.get(k) not in (None, False) for k in enc_keys)
        dec_votes = sum(cfg.get(k) not in (None, False) for k in dec_keys)
        if enc_votes > dec_votes:
            encoder = True
        elif dec_votes > enc_votes:
            causal = True
    if encoder and not causal:
        return BERT
    rms = "rms_norm_eps" in cfg or "rms" in str(cfg.get("normalization_type", cfg.get("norm_type", ""))).lower()
    rope = any(k in cfg for k in ("rope_theta", "rope_parameters", "rotary_dim", "rotary_pct", "rotary_emb_base"))
    rope = rope or cfg.get("rope_scaling") is not None or "rope" in str(cfg.get("position_embedding_type", ""))
    act = str(cfg.get("hidden_act", cfg.get("activation_function", ""))).lower()
    gated = act in {"silu", "swiglu", "geglu", "swish"}
    if causal or rms or rope or "layer_norm_epsilon" in cfg or "n_layer" in cfg:
        return LLAMA if rms + rope + gated >= 2 else GPT
    if any(k in cfg for k in ("layer_norm_eps", "num_hidden_layers", "hidden_size")):
        return BERT
    return None


def _arch_family_from_config(cfg: Mapping[str, Any]) -> ModelFamily | None:
    model_type = str(cfg.get("model_type") or "").strip().lower()
    if model_type in ARCH_FAMILY_BY_MODEL_TYPE:
        return ARCH_FAMILY_BY_MODEL_TYPE[model_type]
    return _structural_config_family(cfg)


def _config_carries_domain(cfg: Mapping[str, Any]) -> bool:
    if str(cfg.get("model_type") or "").lower() in DOMAIN_MODEL_TYPES:
        return True
    name = cfg.get("_name_or_path") or cfg.get("name_or_path") or ""
    if isinstance(name, (str, os.PathLike)) and family_from_name(os.fspath(name)) is DOMAIN:
        return True
    vocab = cfg.get("vocab_size")
    return isinstance(vocab, int) and vocab in DOMAIN_VOCAB_SIZES


def family_from_config(config: Any) -> ModelFamily:
    """Family of a transformers PretrainedConfig or a config.json dict.

    Architecture comes from ``model_type`` (or structural keys when the type is unknown); a BERT-family
    config becomes domain_specific only when it carries the domain itself (its ``_name_or_path``, a domain
    model type, or a domain-only vocabulary), so a fine-tuned copy with an opaque name keeps its architecture.
    """
    cfg = _config_view(config)
    arch = _arch_family_from_config(cfg)
    if arch is None:
        name = cfg.get("_name_or_path") or cfg.get("name_or_path")
        named = family_from_name(name) if isinstance(name, str) else None
        if named is not None:
            return named
        keys = ", ".join(sorted(map(str, cfg))[:12]) or "none"
        raise DetectionError(
            f"cannot tell the family from this config: no known model_type and none of the structural keys "
            f"({', '.join(_STRUCTURAL_KEYS[:8])}, ...); keys present: {keys}"
        )
    if arch is BERT and _config_carries_domain(cfg):
        return DOMAIN
    return arch


# --------------------------------------------------------------------------------------------------------
# Module tier
# --------------------------------------------------------------------------------------------------------
_CROSS_NAME = re.compile(r"cross|encoder_attn|encdecattention|enc_dec", re.I)
_ATTN_NAME = re.compile(r"attn|attention", re.I)
_GATED_NAMES = (
    {"gate_proj"},
    {"gate_up_proj"},
    {"w1", "w3"},
    {"w1", "v1"},
    {"wi_0", "wi_1"},
    {"gate_up"},
    {"ffn_gate"},
)


def _stacks(root: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """Outermost ModuleLists with parameters: the block stacks (nested expert/sub-layer lists excluded)."""
    found: list[tuple[str, nn.ModuleList]] = []

    def walk(mod: nn.Module, prefix: str) -> None:
        for name, child in mod.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if isinstance(child, nn.ModuleList) and len(child) > 0 and any(True for _ in child.parameters()):
                found.append((path, child))
            else:
                walk(child, path)

    walk(root, "")
    return found


def _numel(mod: nn.Module) -> int:
    return sum(p.numel() for p in mod.parameters())


def _attention_kinds(layer: nn.Module) -> tuple[bool, bool]:
    """(has self-attention, has cross-attention) inside one block."""
    self_attn = cross = False
    for name, sub in layer.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        cls = type(sub).__name__
        if (leaf and _CROSS_NAME.search(leaf)) or "CrossAttention" in cls or "EncDecAttention" in cls:
            cross = True
        elif (leaf and _ATTN_NAME.fullmatch(leaf.split("_")[-1] if "_" in leaf else leaf)) or (
            cls.endswith("Attention") and not _CROSS_NAME.search(cls)
        ):
            self_attn = True
    return self_attn, cross


def _is_encoder_decoder(root: nn.Module, stacks: list[tuple[str, nn.ModuleList]]) -> bool:
    """A stack of decoder blocks (self- and cross-attention in nearly every block) beside another stack.

    Adapters that cross-attend to an image every few layers (Mllama), cross-attention-only stacks (BLT) and
    small query transformers (Q-Former projectors of speech LLMs) do not make an encoder-decoder: the
    crossing stack must hold both attentions in at least half its blocks and a quarter of the stacks' weights.
    """
    if len(stacks) < 2:
        return False
    sizes = {p: _numel(s) for p, s in stacks}
    total = sum(sizes.values()) or 1
    for path, stack in stacks:
        both = sum(all(_attention_kinds(b)) for b in stack)
        if both * 2 >= len(stack) and sizes[path] * 4 >= total:
            return True
    # Merged self+cross attention (T5Gemma2) shows no cross module: an `encoder` and a `decoder` child
    # that both hold stacks, the decoder's blocks named as decoder blocks.
    for mod in root.modules():
        enc, dec = getattr(mod, "encoder", None), getattr(mod, "decoder", None)
        if isinstance(enc, nn.Module) and isinstance(dec, nn.Module) and _stacks(enc) and _stacks(dec):
            dec_blocks = [b for _, s in _stacks(dec) for b in s]
            if any("Decoder" in type(b).__name__ for b in dec_blocks):
                return True
    return False


def _bool_attrs(mods: Iterable[nn.Module], names: tuple[str, ...]) -> list[bool]:
    out = []
    for m in mods:
        for n in names:
            v = m.__dict__.get(n)
            if isinstance(v, bool):
                out.append(v)
    return out


def _is_causal(root: nn.Module, main: nn.ModuleList | None) -> bool:
    """Decoder-only (causal) or encoder-only (bidirectional), from the tree alone."""
    scope = list(main.modules()) if main is not None else list(root.modules())
    flags = _bool_attrs((m for m in scope if _ATTN_NAME.search(type(m).__name__)), ("is_causal",))
    if flags:
        return any(flags)
    flags = _bool_attrs(root.modules(), ("is_decoder", "causal"))
    if flags:
        return any(flags)
    names = {n.rsplit(".", 1)[-1] for n, _ in root.named_modules()}
    if any(n.startswith("token_type_embeddings") for n in names) or "pooler" in names:
        return False
    root_cls = type(root).__name__
    if re.search(r"CausalLM|LMHead", root_cls):
        return True
    if "MaskedLM" in root_cls:
        return False
    block_classes = {type(b).__name__ for b in (main or [])}
    container_classes = {type(m).__name__ for m in root.modules() if main is not None and main in m.children()}
    text = " ".join(block_classes | container_classes)
    # "Decoder" wins over "Encoder"; language models with neither mark (RWKV, Mamba, BLOOM...) generate
    return "Decoder" in text or "Encoder" not in text


def _norm_modules(layer: nn.Module) -> list[nn.Module]:
    """Norm modules of a block, shallowest first (the block's own pre/post norms before q/k norms)."""
    found = []
    for name, mod in layer.named_modules():
        cls = type(mod).__name__
        if isinstance(mod, (nn.LayerNorm, nn.RMSNorm)) or (
            "Norm" in cls and not re.search(r"Batch|Group|Instance|Gated|Embedding|NoNorm", cls)
        ):
            found.append((name.count("."), name, mod))
    found.sort(key=lambda t: (t[0], t[1]))
    return [m for _, _, m in found]


def _norm_dim(norm: nn.Module) -> int | None:
    shape = getattr(norm, "normalized_shape", None)
    if isinstance(shape, (tuple, list)) and shape:
        return int(shape[-1])
    w = norm._parameters.get("weight")
    if w is not None and w.ndim >= 1:
        return int(w.shape[-1])
    for attr in ("hidden_size", "dim", "d_model"):
        v = norm.__dict__.get(attr)
        if isinstance(v, int):
            return v
    return None


def _is_rms_norm(norm: nn.Module, fallback_dim: int | None) -> bool | None:
    """RMS-style (no mean subtraction) or LayerNorm: by class when standard, else by running a CPU copy."""
    cls = type(norm).__name__
    if isinstance(norm, nn.RMSNorm) or "RMSNorm" in cls or "RmsNorm" in cls:
        return True
    if type(norm) is nn.LayerNorm:
        return False
    dim = _norm_dim(norm) or fallback_dim
    if dim is None:
        return None
    try:
        probe = copy.deepcopy(norm).to_empty(device="cpu").float()
        with torch.no_grad():
            for pname, p in probe.named_parameters():
                p.fill_(0.0 if pname.endswith("bias") else 1.0)
            x = torch.randn(2, 3, dim, generator=torch.Generator().manual_seed(0)) * 0.5 + 3.0
            y = type(probe).forward(probe, x)  # class forward: bypass instance-level hooks (accelerate)
            y = y[0] if isinstance(y, tuple) else y
        return bool(y.float().mean().abs() > 0.1 * y.float().abs().mean())
    except Exception:
        return None


def _linear_shapes(mod: nn.Module) -> list[tuple[str, int, int]]:
    out = []
    for name, sub in mod.named_modules():
        if isinstance(sub, nn.Linear):
            out.append((name, sub.in_features, sub.out_features))
        elif type(sub).__name__ == "Conv1D" and isinstance(sub.__dict__.get("nf"), int):
            w = sub._parameters.get("weight")
            if w is not None and w.ndim == 2:
                out.append((name, int(w.shape[0]), int(w.shape[1])))
    return out


_MLP_SCOPE = re.compile(r"^(mlp|ffn|feed_?forward|ff|moe|experts|block_sparse_moe|shared_experts?|intermediate)$")
_NOT_MLP = re.compile(r"attn|attention|mixer|ssm|mamba|conv|norm", re.I)


def _mlp_scopes(layer: nn.Module) -> list[nn.Module]:
    """The feed-forward part of a block: named MLP children, else the block minus attention/SSM mixers."""
    named = [m for n, m in layer.named_modules() if n and _MLP_SCOPE.match(n.rsplit(".", 1)[-1].lower())]
    if named:
        return named
    return [m for n, m in layer.named_children() if not _NOT_MLP.search(n) and not _NOT_MLP.search(type(m).__name__)]


def _has_gated_mlp(blocks: Iterable[nn.Module], hidden: int | None) -> bool:
    """Gate and up projections (named, or two hidden→inner linears of one shape, or one fused hidden→2·inner)."""
    seen: set[type] = set()
    for block in blocks:
        if type(block) in seen:
            continue
        seen.add(type(block))
        for scope in _mlp_scopes(block):
            leaves = {n.rsplit(".", 1)[-1] for n, _ in scope.named_modules()} | {
                n.rsplit(".", 1)[-1] for n, _ in scope.named_parameters()
            }
            if any(group <= leaves for group in _GATED_NAMES):
                return True
            if any(re.search(r"GLU|Gated(?!.*Norm)", type(m).__name__) for m in scope.modules()):
                return True
            if hidden is None:
                continue
            shapes = _linear_shapes(scope)
            ups = [(i, o) for _, i, o in shapes if i == hidden and o != hidden]
            downs = {i for _, i, o in shapes if o == hidden and i != hidden}
            if len(ups) >= 2 and ups[0] == ups[1] and ups[0][1] in downs:
                return True
            if any(o == 2 * d for _, o in ups for d in downs):
                return True
    return False


def _has_rotary(scope: nn.Module) -> bool:
    """Rotary positions: a rotary module, rotary attributes or an ``inv_freq`` buffer in the text model."""
    for mod in scope.modules():
        if re.search(r"Rotary|RoPE|Rope", type(mod).__name__):
            return True
        if any(k in mod.__dict__ for k in ("rotary_dim", "rotary_ndims", "rotary_emb", "rotary_fn")):
            return True
        if any(b.endswith("inv_freq") for b in mod._buffers):
            return True
    return False


def _owner(root: nn.Module, child: nn.Module) -> nn.Module:
    for mod in root.modules():
        if any(c is child for c in mod.children()):
            return mod
    return root


def _hidden_size(layer: nn.Module, norms: list[nn.Module]) -> int | None:
    for n in norms:
        d = _norm_dim(n)
        if d:
            return d
    shapes = _linear_shapes(layer)
    return shapes[0][1] if shapes else None


def module_traits(module: nn.Module) -> dict[str, Any]:
    """What family_from_module sees: for debugging a detection and for the suite's report."""
    if not isinstance(module, nn.Module):
        raise DetectionError(f"expected an nn.Module, got {type(module).__name__}")
    stacks = _stacks(module)
    main = max(stacks, key=lambda s: _numel(s[1]))[1] if stacks else None
    traits: dict[str, Any] = {"stacks": [p for p, _ in stacks], "encoder_decoder": _is_encoder_decoder(module, stacks)}
    traits["causal"] = _is_causal(module, main)
    blocks = list(main) if main is not None else [module]
    norms = _norm_modules(blocks[0]) or _norm_modules(module)
    hidden = _hidden_size(blocks[0], norms)
    kinds = [k for k in (_is_rms_norm(n, hidden) for n in norms[:4]) if k is not None]
    traits["rms_norm"] = (sum(kinds) * 2 > len(kinds)) if kinds else None
    traits["rotary"] = _has_rotary(_owner(module, main) if main is not None else module)
    traits["gated_mlp"] = _has_gated_mlp(blocks, hidden)
    return traits


def family_from_module(module: nn.Module) -> ModelFamily:
    """Architecture family of a module tree (never reads ``module.config``); domain is not visible here."""
    t = module_traits(module)
    if t["encoder_decoder"]:
        return T5
    if not t["causal"]:
        return BERT
    votes = int(bool(t["rms_norm"])) + int(t["rotary"]) + int(t["gated_mlp"])
    return LLAMA if votes >= 2 else GPT


# --------------------------------------------------------------------------------------------------------
# Dispatch and the original rule
# --------------------------------------------------------------------------------------------------------
def detect(obj: Any) -> ModelFamily:
    """Family of a model name, a config (PretrainedConfig or config.json dict) or an nn.Module."""
    if isinstance(obj, ModelFamily):
        return obj
    if isinstance(obj, str):
        fam = family_from_name(obj)
        if fam is not None:
            return fam
        cfg_path = os.path.join(os.path.expanduser(obj), "config.json")
        if os.path.isfile(cfg_path):
            try:
                with open(cfg_path, encoding="utf-8") as fh:
                    cfg = json.load(fh)
            except (OSError, ValueError) as exc:
                raise DetectionError(f"cannot read {cfg_path}: {exc}") from exc
            if not isinstance(cfg, dict):
                raise DetectionError(f"{cfg_path} is not a JSON object")
            cfg.setdefault("_name_or_path", obj)
            return family_from_config(cfg)
        raise DetectionError(f"cannot tell the family of {obj!r} from its name; pass its config or module")
    if isinstance(obj, Mapping) or _is_pretrained_config(obj):
        return family_from_config(obj)
    if isinstance(obj, nn.Module):
        return family_from_module(obj)
    raise DetectionError(
        f"cannot detect a family from a {type(obj).__name__}: pass a model name (str), a transformers "
        f"PretrainedConfig, a config.json dict or a torch.nn.Module"
    )


def original_rule(name: str) -> ModelFamily:
    """The original design's baseline, verbatim: first matching substring of the lowercased name."""
    n = name.lower()
    if any(k in n for k in ("codebert", "scibert", "biobert")):
        return DOMAIN
    if any(k in n for k in ("gpt", "codegen")):
        return GPT
    if any(k in n for k in ("bert", "roberta")):
        return BERT
    if any(k in n for k in ("t5", "ul2", "flan")):
        return T5
    if any(k in n for k in ("llama", "alpaca", "vicuna")):
        return LLAMA
    return DOMAIN
