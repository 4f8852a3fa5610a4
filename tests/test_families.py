"""Family detection: name, config and module tiers, dispatch, the original rule, and the labelled set."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    BertConfig,
    LlamaConfig,
)

from adapters import families as F
from adapters.detection_set import config_for, load_detection_set, score, shipped_by_installed, tier_expectations
from adapters.errors import DetectionError
from adapters.families import ModelFamily

GPT, BERT, T5, LLAMA, DOMAIN = (
    ModelFamily.GPT,
    ModelFamily.BERT,
    ModelFamily.T5,
    ModelFamily.LLAMA,
    ModelFamily.DOMAIN_SPECIFIC,
)

transformers.logging.set_verbosity_error()


# ------------------------------------------------------------------------------------------------ name tier
@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("gpt2", GPT),
        ("distilgpt2", GPT),
        ("EleutherAI/gpt-neo-125M", GPT),
        ("Salesforce/codegen-350M-mono", GPT),
        ("microsoft/biogpt", GPT),  # biomedical decoder: not domain
        ("facebook/opt-125m", GPT),
        ("bigscience/bloom-560m", GPT),
        ("microsoft/phi-2", GPT),
        ("microsoft/phi-1_5", GPT),
        ("tiiuae/falcon-7b", GPT),
        ("microsoft/deberta-v3-base", BERT),
        ("roberta-base", BERT),  # contains "bert" but is its own token
        ("xlm-roberta-base", BERT),
        ("distilbert-base-uncased-finetuned-sst-2-english", BERT),
        ("nghuyong/ernie-3.0-base-zh", BERT),
        ("google/flan-t5-base", T5),
        ("google/ul2", T5),
        ("facebook/bart-base", T5),  # "bart" is not "bert"
        ("Salesforce/codet5-base", T5),  # code, but encoder-decoder: not domain
        ("Helsinki-NLP/opus-mt-en-de", T5),
        ("google/bigbird-pegasus-large-arxiv", T5),
        ("patrickvonplaten/bert2bert_cnn_daily_mail", T5),
        ("meta-llama/Llama-2-7b-hf", LLAMA),
        ("lmsys/vicuna-7b-v1.5", LLAMA),
        ("chavinlo/alpaca-native", LLAMA),
        ("mistralai/Mistral-7B-v0.1", LLAMA),
        ("Qwen/Qwen2-0.5B", LLAMA),
        ("microsoft/Phi-3-mini-4k-instruct", LLAMA),
        ("tiiuae/Falcon3-7B-Base", LLAMA),
        ("openai/gpt-oss-20b", LLAMA),
        ("TheBloke/Llama-2-7B-Chat-GPTQ", LLAMA),  # "GPTQ" is a format, not GPT
        ("intfloat/e5-mistral-7b-instruct", LLAMA),
        ("baidu/ERNIE-4.5-0.3B-PT", LLAMA),
        ("microsoft/codebert-base", DOMAIN),
        ("microsoft/graphcodebert-base", DOMAIN),
        ("allenai/scibert_scivocab_uncased", DOMAIN),
        ("dmis-lab/biobert-base-cased-v1.1", DOMAIN),
        ("microsoft/BiomedNLP-PubMedBERT-base-uncased-abstract", DOMAIN),
        ("emilyalsentzer/Bio_ClinicalBERT", DOMAIN),
        ("bionlp/bluebert_pubmed_mimic_uncased_L-12_H-768_A-12", DOMAIN),
        ("m3rg-iitd/matscibert", DOMAIN),
        ("seyonec/ChemBERTa-zinc-base-v1", DOMAIN),
        ("allenai/biomed_roberta_base", DOMAIN),
        ("facebook/esm2_t6_8M_UR50D", DOMAIN),
    ],
)
def test_name_tier(name: str, family: ModelFamily) -> None:
    assert F.family_from_name(name) is family


@pytest.mark.parametrize("name", ["xyz", "Intel/neural-chat-7b-v3-1", "stanford-crfm/BioMedLM", "", "   "])
def test_name_tier_says_none_when_the_name_says_nothing(name: str) -> None:
    assert F.family_from_name(name) is None


def test_name_tier_is_not_substring_matching() -> None:
    # substrings that the original rule trips over
    assert F.family_from_name("facebook/bart-large") is T5
    assert F.family_from_name("BioMistral/BioMistral-7B") is LLAMA  # domain marker on a decoder
    assert F.family_from_name("nlpaueb/legal-bert-base-uncased") is BERT  # legal is not a taxonomy domain


# ---------------------------------------------------------------------------------------------- config tier
@pytest.mark.parametrize(
    ("config", "family"),
    [
        ({"model_type": "gpt2"}, GPT),
        ({"model_type": "gpt_neox"}, GPT),
        ({"model_type": "phi"}, GPT),
        ({"model_type": "llama"}, LLAMA),
        ({"model_type": "phi3"}, LLAMA),
        ({"model_type": "gemma2"}, LLAMA),
        ({"model_type": "bert"}, BERT),
        ({"model_type": "deberta-v2"}, BERT),
        ({"model_type": "t5"}, T5),
        ({"model_type": "bart"}, T5),
        ({"model_type": "marian"}, T5),
        # domain only when the config carries it
        ({"model_type": "roberta", "_name_or_path": "microsoft/codebert-base"}, DOMAIN),
        ({"model_type": "bert", "vocab_size": 31090}, DOMAIN),  # SciBERT scivocab, any name
        ({"model_type": "esm"}, DOMAIN),
        ({"model_type": "bert", "_name_or_path": "/ckpt/run-17/final"}, BERT),  # fine-tuned, opaque name
        ({"model_type": "gpt2", "_name_or_path": "microsoft/biogpt"}, GPT),  # domain word on a decoder
        # unknown model types: structural keys
        ({"model_type": "my_llm", "rms_norm_eps": 1e-6, "rope_theta": 1e4, "hidden_act": "silu"}, LLAMA),
        ({"architectures": ["FooForCausalLM"], "layer_norm_epsilon": 1e-5, "n_layer": 12}, GPT),
        ({"model_type": "foo", "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_size": 768}, BERT),
        ({"model_type": "foo", "is_encoder_decoder": True}, T5),
        ({"model_type": "foo_vl", "text_config": {"model_type": "qwen2"}}, LLAMA),
        ({"_name_or_path": "google/flan-t5-base"}, T5),  # nothing structural: the name is all there is
    ],
)
def test_config_tier_dicts(config: dict[str, Any], family: ModelFamily) -> None:
    assert F.family_from_config(config) is family


def test_config_tier_pretrained_configs() -> None:
    assert F.family_from_config(LlamaConfig()) is LLAMA
    assert F.family_from_config(BertConfig()) is BERT
    cfg = BertConfig()
    cfg._name_or_path = "dmis-lab/biobert-v1.1"
    assert F.family_from_config(cfg) is DOMAIN
    assert F.family_from_config(AutoConfig.for_model("mbart")) is T5


@pytest.mark.parametrize("bad", [{}, {"foo": 1}, {"model_type": "", "note": "x"}])
def test_config_tier_rejects_configs_without_usable_keys(bad: dict[str, Any]) -> None:
    with pytest.raises(DetectionError, match="cannot tell the family from this config"):
        F.family_from_config(bad)


_UNNAMED = [  # (installed type whose architecture a new type copies, family)
    ("llama", LLAMA), ("gpt2", GPT), ("bert", BERT), ("t5", T5),
]


@pytest.fixture
def unnamed_type(request, tmp_path):
    """A model type no table names, registered with transformers for the test only: what a new upstream
    release looks like to this project (5.25 added ergo, kolibri1_1, minicpm5_moe, param2moe)."""
    from adapters import adapter_for_family
    from adapters.zoo import save_tiny_checkpoint, tiny_config, word_tokenizer

    base_type, family = request.param
    new_type = f"nmunnamed_{base_type}"
    base = tiny_config(base_type)
    model_cls = getattr(transformers, base.architectures[0]) if base.architectures else None
    if model_cls is None:
        auto = adapter_for_family(family).default_auto_class
        model_cls = getattr(transformers, auto)._model_mapping[type(base)]
    config_cls = type(f"Nmunnamed{type(base).__name__}", (type(base),), {"model_type": new_type})
    new_model_cls = type(f"Nmunnamed{model_cls.__name__}", (model_cls,), {"config_class": config_cls})
    auto_cls = getattr(transformers, adapter_for_family(family).default_auto_class)
    AutoConfig.register(new_type, config_cls)
    auto_cls.register(config_cls, new_model_cls)
    try:
        facts = {k: v for k, v in base.to_dict().items() if k not in ("model_type", "architectures")}
        config = config_cls(**facts)
        torch.manual_seed(0)
        model = new_model_cls(config).eval()
        path = save_tiny_checkpoint(model, word_tokenizer(encoder=family is BERT), tmp_path / new_type)
        yield new_type, family, config, model, path
    finally:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        CONFIG_MAPPING._extra_content.pop(new_type, None)
        auto_cls._model_mapping._extra_content.pop(config_cls, None)


@pytest.mark.parametrize("unnamed_type", _UNNAMED, indirect=True, ids=[t for t, _ in _UNNAMED])
def test_a_type_no_table_names_gets_family_and_layers_from_structure(unnamed_type) -> None:
    """Detection and mapping of a new type come from its config keys and module tree, not from a list of the
    installed release's types (such a list turned main red the day 5.25 added four types)."""
    from adapters import MultiModelAnalyzer
    from adapters.registry import facts_from_hf_config

    new_type, family, config, model, path = unnamed_type
    assert new_type not in F.ARCH_FAMILY_BY_MODEL_TYPE
    assert F.family_from_config(config) is family
    assert F.family_from_config(json.loads((path / "config.json").read_text())) is family
    assert F.family_from_module(model) is family
    analyzer = MultiModelAnalyzer()
    adapter = analyzer.load_model(str(path))
    assert adapter.family_value() == family.value
    assert adapter.mapping.num_layers == facts_from_hf_config(config)["num_layers"]
    texts = ["hello world", "the cat sat on the mat"]
    acts = adapter.extract_activations(texts, [0, 1])
    inputs = adapter.tokenize(texts)
    with torch.no_grad():
        if config.is_encoder_decoder:
            hidden = adapter.model.get_encoder()(**inputs, output_hidden_states=True).hidden_states
        else:
            hidden = adapter.model(**inputs, output_hidden_states=True).hidden_states
    assert torch.allclose(acts[0], hidden[1], atol=1e-5)
    analyzer.unload_model(str(path))


# ---------------------------------------------------------------------------------------------- module tier
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "encoder_layers", "decoder_layers", "num_decoder_layers")


def _meta_model(model_type: str, auto: Any) -> nn.Module:
    """A small model of a type on the meta device, with its config removed."""
    base = AutoConfig.for_model(model_type)
    try:
        cfg = AutoConfig.for_model(model_type, **{k: 2 for k in _LAYER_KEYS if hasattr(base, k)})
    except Exception:  # layer-pattern configs (GPT-Neo) or read-only depths (ProphetNet): default depth
        cfg = base
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = auto.from_config(cfg)
    del model.config
    assert not hasattr(model, "config")
    return model


_MODULE_CASES = [
    *[(t, GPT) for t in "gpt2 gpt_neo gptj gpt_neox opt bloom falcon phi codegen gpt_bigcode starcoder2".split()],
    ("biogpt", GPT),
    *[(t, LLAMA) for t in "llama mistral mixtral qwen2 gemma phi3 phimoe cohere olmo stablelm".split()],
    *[(t, BERT) for t in "bert roberta distilbert deberta-v2 albert electra xlm-roberta mpnet modernbert".split()],
    *[(t, T5) for t in "t5 mt5 bart mbart pegasus marian m2m_100 prophetnet switch_transformers".split()],
]


@pytest.mark.parametrize(("model_type", "family"), _MODULE_CASES)
def test_module_tier_on_meta_models(model_type: str, family: ModelFamily) -> None:
    if family is T5:
        task = AutoModelForSeq2SeqLM
    elif family is BERT:
        task = AutoModel
    else:
        task = AutoModelForCausalLM
    assert F.family_from_module(_meta_model(model_type, AutoModel)) is family
    assert F.family_from_module(_meta_model(model_type, task)) is family


class _Wrapper(nn.Module):
    """A plain nn.Module around a model: no config, no transformers class at the root."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner


@pytest.mark.parametrize(("model_type", "family"), [("gpt2", GPT), ("llama", LLAMA), ("bert", BERT), ("t5", T5)])
def test_module_tier_through_a_plain_wrapper(model_type: str, family: ModelFamily) -> None:
    assert F.family_from_module(_Wrapper(_meta_model(model_type, AutoModel))) is family


def test_module_tier_on_a_real_cpu_model_leaves_weights_alone() -> None:
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=64)
    model = AutoModelForCausalLM.from_config(cfg)
    del model.config
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert F.family_from_module(model) is LLAMA
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# Hand-written toy blocks: class names the detector has never seen, so only structure can decide.
class _ScaleOnlyNorm(nn.Module):
    """RMS-style: weight, no bias, no mean subtraction, and no 'RMS' in the class name."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


class _ToyAttention(nn.Module):
    def __init__(self, d: int, causal: bool) -> None:
        super().__init__()
        self.is_causal = causal
        self.qkv = nn.Linear(d, 3 * d)
        self.o = nn.Linear(d, d)


class _ToyBlock(nn.Module):
    def __init__(self, d: int, modern: bool, causal: bool) -> None:
        super().__init__()
        self.norm1 = _ScaleOnlyNorm(d) if modern else nn.LayerNorm(d)
        self.attn = _ToyAttention(d, causal)
        self.norm2 = _ScaleOnlyNorm(d) if modern else nn.LayerNorm(d)
        if modern:  # gated: two hidden→inner projections of one shape, one inner→hidden
            self.mlp = nn.ModuleDict({"a": nn.Linear(d, 4 * d), "b": nn.Linear(d, 4 * d), "c": nn.Linear(4 * d, d)})
        else:
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))


class _ToyLM(nn.Module):
    def __init__(self, modern: bool, causal: bool = True, d: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, d)
        self.blocks = nn.ModuleList(_ToyBlock(d, modern, causal) for _ in range(2))
        if modern:
            self.register_buffer("inv_freq", torch.ones(d // 2), persistent=False)


def test_module_tier_is_structural_not_a_class_table() -> None:
    assert F.family_from_module(_ToyLM(modern=True)) is LLAMA
    assert F.family_from_module(_ToyLM(modern=False)) is GPT
    assert F.family_from_module(_ToyLM(modern=False, causal=False)) is BERT
    traits = F.module_traits(_ToyLM(modern=True))
    assert traits["rms_norm"] and traits["gated_mlp"] and traits["rotary"] and traits["causal"]


# ------------------------------------------------------------------------------------------------- dispatch
def test_detect_dispatches_on_every_accepted_type(tmp_path: Path) -> None:
    assert F.detect("gpt2") is GPT
    assert F.detect({"model_type": "t5"}) is T5
    assert F.detect(LlamaConfig()) is LLAMA
    assert F.detect(_ToyLM(modern=True)) is LLAMA
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "vocab_size": 31090}))
    assert F.detect(str(tmp_path)) is DOMAIN  # an unnamed local checkpoint: its config decides


def test_detect_errors_name_what_went_wrong() -> None:
    with pytest.raises(DetectionError, match="cannot tell the family of 'xyz' from its name"):
        F.detect("xyz")
    for bad in (42, None, ["gpt2"], b"gpt2"):
        with pytest.raises(DetectionError, match=type(bad).__name__) as info:
            F.detect(bad)
        assert "nn.Module" in str(info.value) and "PretrainedConfig" in str(info.value)


# -------------------------------------------------------------------------------------------- original rule
@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("microsoft/codebert-base", DOMAIN),
        ("allenai/scibert_scivocab_uncased", DOMAIN),
        ("dmis-lab/biobert-v1.1", DOMAIN),
        ("gpt2", GPT),
        ("Salesforce/codegen-350M-mono", GPT),
        ("microsoft/biogpt", GPT),
        ("bert-base-uncased", BERT),
        ("roberta-base", BERT),
        ("microsoft/deberta-v3-base", BERT),  # "deberta" contains "bert"
        ("emilyalsentzer/Bio_ClinicalBERT", BERT),  # not one of its three domain markers
        ("t5-small", T5),
        ("google/ul2", T5),
        ("google/flan-ul2", T5),
        ("Salesforce/codet5-base", T5),
        ("meta-llama/Llama-2-7b-hf", LLAMA),
        ("chavinlo/alpaca-native", LLAMA),
        ("lmsys/vicuna-7b-v1.5", LLAMA),
        ("TheBloke/Llama-2-7B-GPTQ", GPT),  # gpt is tested before llama
        ("bert2gpt", GPT),  # gpt before bert
        ("facebook/bart-base", DOMAIN),  # everything else falls to domain
        ("mistralai/Mistral-7B-v0.1", DOMAIN),
        ("", DOMAIN),
    ],
)
def test_original_rule_is_the_baseline_verbatim(name: str, family: ModelFamily) -> None:
    assert F.original_rule(name) is family


# -------------------------------------------------------------------------------------------- labelled set
@pytest.fixture(scope="module")
def entries() -> list[dict[str, Any]]:
    return load_detection_set()


def test_labelled_set_is_broad_and_consistent(entries: list[dict[str, Any]]) -> None:
    assert len(entries) >= 300
    assert len({e["id"] for e in entries}) == len(entries)
    assert {e["family"] for e in entries} == {f.value for f in ModelFamily}
    kin = set(
        "gpt_neox opt bloom falcon phi gpt_bigcode starcoder2 biogpt mistral mixtral qwen2 gemma phi3 albert "
        "electra xlm-roberta mpnet mt5 bart mbart pegasus marian".split()
    )
    assert kin <= {e["model_type"] for e in entries}
    known = set(transformers.models.auto.configuration_auto.CONFIG_MAPPING_NAMES)
    # every type is a real one: known to the installed release, or (on an older release) named by the table
    unknown = {e["model_type"] for e in entries} - known
    assert unknown <= set(F.ARCH_FAMILY_BY_MODEL_TYPE), sorted(unknown - set(F.ARCH_FAMILY_BY_MODEL_TYPE))
    for e in entries:
        if e.get("domain_hint") or e.get("vocab_size"):
            assert e["family"] == DOMAIN.value, e["id"]
    assert sum(bool(e.get("opaque")) for e in entries) >= 5


def test_name_tier_accuracy(entries: list[dict[str, Any]]) -> None:
    acc, failures = score(entries, "name", lambda e: F.family_from_name(e["id"]))
    assert acc >= 0.97, failures


def test_config_tier_accuracy(entries: list[dict[str, Any]]) -> None:
    acc, failures = score(entries, "config", lambda e: F.family_from_config(config_for(e)))
    assert acc >= 0.99, failures


def test_config_tier_accuracy_on_full_default_configs(entries: list[dict[str, Any]]) -> None:
    """Same, with every key transformers' default config of each model_type has (as a real config.json)."""
    shipped, _ = shipped_by_installed(entries)  # an older release cannot build a newer type's default config
    acc, failures = score(shipped, "config", lambda e: F.family_from_config(config_for(e, full=True)))
    assert acc >= 0.99, failures


def test_tiers_beat_the_original_rule(entries: list[dict[str, Any]]) -> None:
    original = sum(F.original_rule(e["id"]) is ModelFamily(e["family"]) for e in entries) / len(entries)
    named = sum(F.family_from_name(e["id"]) is ModelFamily(e["family"]) for e in entries) / len(entries)
    assert named > original
    assert tier_expectations({"id": "x", "model_type": "esm", "family": "domain_specific"})["module"] is BERT
