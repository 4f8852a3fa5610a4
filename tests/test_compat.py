"""adapters/compat.py and harness/compat.py: what differs between transformers releases, decided in one place,
and the shared fixtures the compatibility matrix compares. Every test runs on any release of the range."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from transformers import PreTrainedTokenizerFast

from adapters import MultiModelAnalyzer, compat
from adapters.zoo import save_tiny_checkpoint, tiny_config, word_tokenizer_object
from harness import compat as fixtures

TEXTS = ["hello world", "the cat sat on the mat"]


def _tokenizer_emitting_token_types() -> PreTrainedTokenizerFast:
    """A generic fast tokenizer that emits token_type_ids, as every such tokenizer does under 4.x."""
    return PreTrainedTokenizerFast(tokenizer_object=word_tokenizer_object(False), pad_token="[PAD]",
                                   unk_token="[UNK]", bos_token="<s>", eos_token="</s>",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


@pytest.fixture(scope="module")
def gpt2_with_token_types(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(tiny_config("gpt2"))
    tok = _tokenizer_emitting_token_types()
    assert "token_type_ids" in tok(TEXTS)
    return save_tiny_checkpoint(model, tok, tmp_path_factory.mktemp("tt") / "gpt2")


def test_the_model_decides_the_inputs_not_the_tokenizer(gpt2_with_token_types: Path):
    """GPT-2 has no token-type embedding: ids the tokenizer emits are dropped, and the activations are those of
    the model called with ids and mask (with them, GPT-2 adds wte(token_type_ids): 0.06 apart in the issue)."""
    an = MultiModelAnalyzer()
    adapter = an.load_model(str(gpt2_with_token_types))
    inputs = adapter.tokenize(TEXTS)
    assert set(inputs) == {"input_ids", "attention_mask"}
    acts = adapter.extract_activations(TEXTS, [0, 1])
    with torch.no_grad():
        plain = adapter.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                              output_hidden_states=True).hidden_states
        typed = adapter.model(**inputs, token_type_ids=torch.ones_like(inputs["input_ids"]),
                              output_hidden_states=True).hidden_states
    assert torch.equal(acts[0], plain[1])
    assert not torch.allclose(acts[0], typed[1])  # token types would have changed the values
    an.unload_model(str(gpt2_with_token_types))


@pytest.mark.parametrize(("model_type", "auto", "expected"), [
    ("gpt2", transformers.AutoModelForCausalLM, {"input_ids", "attention_mask"}),
    ("llama", transformers.AutoModelForCausalLM, {"input_ids", "attention_mask"}),
    ("bert", transformers.AutoModelForMaskedLM, {"input_ids", "attention_mask", "token_type_ids"}),
    ("distilbert", transformers.AutoModelForMaskedLM, {"input_ids", "attention_mask"}),
    ("t5", transformers.AutoModelForSeq2SeqLM, {"input_ids", "attention_mask"}),
])
def test_forward_input_names(model_type: str, auto, expected: set[str]):
    with torch.device("meta"):
        model = auto.from_config(tiny_config(model_type))
    assert compat.forward_input_names(model) == expected


def test_no_cache_kwargs_only_where_the_forward_takes_it():
    with torch.device("meta"):
        llama = transformers.AutoModelForCausalLM.from_config(tiny_config("llama"))
        bert = transformers.AutoModelForMaskedLM.from_config(tiny_config("bert"))
    assert compat.no_cache_kwargs(llama) == {"use_cache": False}
    names = compat._accepted(bert.forward)
    assert compat.no_cache_kwargs(bert) == ({"use_cache": False} if "use_cache" in names[0] or names[1] else {})


def test_dtype_keyword_is_the_release_s():
    config = tiny_config("gpt2")
    compat.set_config_dtype(config, torch.float16)
    assert str(compat.config_dtype(config)).endswith("float16")
    saved = json.loads(config.to_json_string())
    assert saved[compat.DTYPE_KEYWORD] == "float16"
    with torch.device("meta"):
        model = transformers.GPT2LMHeadModel._from_config(tiny_config("gpt2"), **compat.dtype_kwargs(torch.float16))
    assert model.dtype == torch.float16


def test_text_config_keeps_a_config_that_states_its_own_layers():
    fsmt = transformers.AutoConfig.for_model("fsmt", encoder_layers=3, decoder_layers=2)
    assert compat.text_config(fsmt).encoder_layers == 3  # 4.x's get_text_config hands back the decoder part
    gpt2 = tiny_config("gpt2")
    assert compat.text_config(gpt2) is gpt2


def test_attention_switch_is_undone_and_says_what_it_did():
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(tiny_config("llama"), attn_implementation="sdpa")
    before = compat.current_attention(model)
    with compat.attention_implementation(model, "eager") as eager:
        assert eager is compat.can_switch_attention(model)
        if eager:
            assert compat.current_attention(model) == "eager"
    assert compat.current_attention(model) == before
    assert not any(hasattr(m.config, "_attn_was_changed") for m in model.modules() if hasattr(m, "config"))


def test_a_module_without_a_config_cannot_switch():
    with compat.attention_implementation(torch.nn.Linear(2, 2), "eager") as eager:
        assert eager is False


def test_generic_tokenizer_is_read_as_written(tmp_path: Path):
    """A folder that declares PreTrainedTokenizerFast keeps its tokenizer.json on every release (5.x's
    AutoTokenizer would rebuild Qwen2's own BPE class from the vocabulary and split words differently)."""
    folder, _ = fixtures.ensure_fixture("qwen2", tmp_path)
    tok = compat.load_tokenizer(str(folder))
    assert tok("hello world")["input_ids"] == [7, 8]  # the word-level ids of "hello" and "world"


def test_describe_names_the_release():
    info = compat.describe()
    assert info["transformers"] == transformers.__version__ and info["in_range"] is True


# ---- harness/compat.py: the shared fixtures ----------------------------------------------------------------
def test_fixture_bytes_are_deterministic(tmp_path: Path):
    a = fixtures.build_fixture("llama", tmp_path / "a")
    b = fixtures.build_fixture("llama", tmp_path / "b")
    assert fixtures.folder_sha(a) == fixtures.folder_sha(b)
    cfg = json.loads((a / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["hidden_size"] == 32 and "transformers_version" not in cfg


def test_a_fixture_is_built_once_and_reused(tmp_path: Path):
    first, info = fixtures.ensure_fixture("gpt2", tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again, info2 = fixtures.ensure_fixture("gpt2", tmp_path)
    assert again == first and info2 == info and info["built_with"] == transformers.__version__
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp
    assert info["sha"] == fixtures.folder_sha(first)


@pytest.mark.parametrize("model_type", ["gpt2", "bert", "t5"])
def test_fixture_check_is_exact_against_transformers(tmp_path: Path, model_type: str):
    row = fixtures.check_fixture(model_type, tmp_path)
    assert row["error"] is None, row["error"]
    assert fixtures.exact(row), row
    assert "token_type_ids" not in row["forward_inputs"] or model_type == "bert"
    assert sorted(row["activations"]) == ["0", "1", "_mask"]  # both blocks, and which positions are real
    assert fixtures.decode(row["activations"]["_mask"]).sum() < fixtures.decode(row["activations"]["_mask"]).numel()
    t = fixtures.decode(row["activations"]["0"])
    assert t.shape[0] == 2 and t.dtype == torch.float32


def test_encode_decode_is_exact():
    t = torch.randn(2, 3, 4)
    assert torch.equal(fixtures.decode(fixtures.encode(t)), t)


def test_unshipped_fixture_is_a_row_not_an_error(tmp_path: Path):
    rows = fixtures.check_all(["gpt2", "no_such_type"], tmp_path)
    assert rows[1] == {"model_type": "no_such_type", "task": None, "error": None, "not_shipped": True}
    assert fixtures.exact(rows[0])
