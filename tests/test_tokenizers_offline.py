"""Offline tokenizers: each kind loads through AutoTokenizer with its real class and special-token layout;
GPT-2's BPE converted from tiktoken ranks encodes exactly like tiktoken."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters import assets
from adapters.errors import InvalidInputError
from adapters.tokenizers_offline import PROVENANCE_FILE, TOKENIZER_KINDS, build_tokenizer, gpt2_bpe_files

MAX_LEN = 512
EXPECTED_CLASS = {
    "gpt2": "GPT2TokenizerFast",
    "roberta": "RobertaTokenizerFast",
    "codegen": "CodeGenTokenizerFast",
    "bert-uncased": "BertTokenizerFast",
    "bert-cased": "BertTokenizerFast",
    "t5": "T5TokenizerFast",
    "llama": "LlamaTokenizerFast",
    "deberta-v3": "DebertaV2TokenizerFast",
}
ODD_TEXTS = [
    "Hello world",
    " Hello world",
    "  leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nand\n\n\nblank lines\n",
    "It's, isn't, they'll, we've, I'd, I'M, YOU'RE",
    "numbers 1234567890 3.14159 1e-9 ¼ ½ ٣",
    "accents: café naïve coöperate Ångström façade",
    "CJK 日本語のテキスト 中文 한국어",
    "emoji 🤗🚀👩‍👩‍👧 flags 🇯🇵",
    "combining e\u0301 and zero\u200bwidth and nbsp\u00a0here",
    "RTL שלום עולם مرحبا",
    "code:\n    def f(x):\n\t\treturn x ** 2  # comment\n",
    "<|endoftext|> is just text here",
    "".join(chr(c) for c in range(0x20, 0x7F)),
    "\u0000\u0001 control \u007f\u0085",
    "     ",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("tokenizers")
    return {kind: (root / kind, build_tokenizer(kind, root / kind, model_max_length=MAX_LEN))
            for kind in TOKENIZER_KINDS}


@pytest.fixture(scope="module")
def loaded(built: dict[str, tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    return {kind: AutoTokenizer.from_pretrained(path) for kind, (path, _) in built.items()}


@pytest.fixture(scope="module")
def tiktoken_gpt2() -> Any:
    """tiktoken's own GPT-2 encoding, from the same rank file (tiktoken.get_encoding would need the net)."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str

    ranks = load_tiktoken_bpe(str(assets.gpt2_tiktoken_file()))
    return tiktoken.Encoding("gpt2-offline", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


@pytest.fixture(scope="module")
def botchan_lines() -> list[str]:
    lines = [line for line in assets.botchan_text().read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:: max(1, len(lines) // 400)]


# --- every kind ------------------------------------------------------------------------------------------


def test_kinds_constant() -> None:
    assert set(TOKENIZER_KINDS) == set(EXPECTED_CLASS)


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_loads_with_expected_class(kind: str, loaded: dict[str, Any], built: dict[str, Any]) -> None:
    import transformers

    tok = loaded[kind]
    assert isinstance(tok, getattr(transformers, EXPECTED_CLASS[kind]))
    assert tok.model_max_length == MAX_LEN
    assert tok.pad_token is not None and tok.pad_token_id is not None
    info = built[kind][1]
    assert info["kind"] == kind and info["tokenizer_class"] == type(tok).__name__
    assert info["vocab_size"] == len(tok)
    assert isinstance(info["real_vocabulary"], bool) and info["method"]
    assert all({"package", "version", "file"} <= set(src) for src in info["sources"])
    on_disk = json.loads((built[kind][0] / PROVENANCE_FILE).read_text())
    assert on_disk == info


def test_real_vocabulary_flags(built: dict[str, Any]) -> None:
    real = {kind for kind, (_, info) in built.items() if info["real_vocabulary"]}
    assert real == {"gpt2", "roberta", "codegen", "bert-uncased"}
    assert not built["roberta"][1]["real_ids"] and built["gpt2"][1]["real_ids"]


# --- GPT-2 family -----------------------------------------------------------------------------------------


def test_gpt2_known_ids(loaded: dict[str, Any]) -> None:
    tok = loaded["gpt2"]
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok(" Hello world")["input_ids"] == [18435, 995]
    assert len(tok) == 50257
    assert tok.eos_token == tok.bos_token == tok.pad_token == "<|endoftext|>" and tok.eos_token_id == 50256


def test_gpt2_bpe_files_shape() -> None:
    vocab_file, merges_file = gpt2_bpe_files()
    assert len(json.loads(vocab_file.read_text(encoding="utf-8"))) == 50257
    merges = merges_file.read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version") and len(merges) == 50001
    assert merges[1] == "Ġ t"  # GPT-2's first merge


def test_gpt2_matches_tiktoken(loaded: dict[str, Any], tiktoken_gpt2: Any, botchan_lines: list[str]) -> None:
    tok = loaded["gpt2"]
    texts = botchan_lines + ODD_TEXTS
    assert len(texts) > 300
    # like the hub's GPT-2 tokenizer, "<|endoftext|>" written in the text is the special token
    mismatches = [t for t in texts if tok(t)["input_ids"] != tiktoken_gpt2.encode(t, allowed_special="all")]
    assert mismatches == []
    whole = assets.botchan_text().read_text(encoding="utf-8")
    assert tok(whole)["input_ids"] == tiktoken_gpt2.encode_ordinary(whole)


@pytest.mark.parametrize("kind", ["gpt2", "roberta", "codegen", "llama"])
def test_roundtrip_is_exact(kind: str, loaded: dict[str, Any]) -> None:
    """Byte-level BPE and byte-fallback BPE lose nothing: decode(encode(text)) == text.

    LLaMA's class drops one leading space (its Metaspace does not prepend a second "▁" and its decoder
    strips one), as it does with the hub's tokenizer: texts starting with a space are left out for it.
    """
    tok = loaded[kind]
    texts = [t for t in ODD_TEXTS if "<|" not in t and not (kind == "llama" and t[:1].isspace())]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == text, (kind, text)


def test_roberta_layout(loaded: dict[str, Any]) -> None:
    tok, gpt2 = loaded["roberta"], loaded["gpt2"]
    assert [tok.convert_ids_to_tokens(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.mask_token_id == 50264 and len(tok) == 50265
    text = "RoBERTa shares GPT-2's byte-level BPE."
    ids = tok(text)["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2
    assert ids[1:-1] == [i + 4 for i in gpt2(text)["input_ids"]]
    assert tok("a <mask> b")["input_ids"].count(50264) == 1


def test_codegen_whitespace_tokens(loaded: dict[str, Any]) -> None:
    tok = loaded["codegen"]
    assert len(tok) == 50295
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok("    ", add_special_tokens=False)["input_ids"] == [50284]  # 31 spaces is 50257
    assert tok.convert_ids_to_tokens(50257) == " " * 31
    assert tok("\t\t", add_special_tokens=False)["input_ids"] == [50294]


# --- WordPiece ----------------------------------------------------------------------------------------------


def test_bert_uncased_is_real(loaded: dict[str, Any]) -> None:
    tok = loaded["bert-uncased"]
    assert len(tok) == 30522
    assert tok("Hello World")["input_ids"] == [101, 7592, 2088, 102]  # bert-base-uncased's ids
    assert (tok.pad_token_id, tok.unk_token_id, tok.mask_token_id) == (0, 100, 103)


def test_bert_cased_layout(loaded: dict[str, Any]) -> None:
    tok = loaded["bert-cased"]
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (
        0, 100, 101, 102, 103,
    )
    assert 4000 < len(tok) <= 28996
    ids = tok("Hello hello")["input_ids"]
    assert ids[0] == 101 and ids[-1] == 102
    assert tok.tokenize("Hello") != tok.tokenize("hello")  # cased
    assert tok.unk_token not in tok.tokenize("The café in Zürich; naïve Ångström 2024")


# --- SentencePiece kinds ------------------------------------------------------------------------------------


def test_t5_layout(loaded: dict[str, Any]) -> None:
    tok = loaded["t5"]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.bos_token is None
    assert tok.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1
    assert tok.convert_tokens_to_ids("<extra_id_99>") == len(tok) - 100
    assert len(tok) > 4000
    ids = tok("Hello world.")["input_ids"]
    assert ids[-1] == 1 and 2 not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "Hello world."


def test_t5_matches_sentencepiece(built: dict[str, Any], loaded: dict[str, Any], botchan_lines: list[str]) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(built["t5"][0] / "spiece.model"))
    tok = loaded["t5"]
    for line in botchan_lines[:100]:
        assert tok(line, add_special_tokens=False)["input_ids"] == sp.encode(line)


def test_llama_layout(loaded: dict[str, Any]) -> None:
    tok = loaded["llama"]
    assert (tok.unk_token, tok.bos_token, tok.eos_token) == ("<unk>", "<s>", "</s>")
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    ids = tok("Hello world")["input_ids"]
    assert ids[0] == 1 and ids[-1] != 2
    assert "<0xF0>" in tok.convert_ids_to_tokens(tok("🤗", add_special_tokens=False)["input_ids"])  # byte fallback
    assert tok.pad_token == "</s>"


def test_deberta_v3_layout(loaded: dict[str, Any]) -> None:
    tok = loaded["deberta-v3"]
    assert [tok.convert_ids_to_tokens(i) for i in range(4)] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    assert tok.mask_token_id == len(tok) - 1
    ids = tok("Hello world")["input_ids"]
    assert ids[0] == 1 and ids[-1] == 2
    assert tok.decode(ids, skip_special_tokens=True) == "Hello world"


# --- building ---------------------------------------------------------------------------------------------


def test_unknown_kind() -> None:
    with pytest.raises(InvalidInputError, match="allowed: gpt2, roberta"):
        build_tokenizer("gpt-5", Path("/nonexistent/never-written"))


def test_bad_max_length(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="model_max_length"):
        build_tokenizer("gpt2", tmp_path / "t", model_max_length=0)


def test_reuse_and_rebuild(tmp_path: Path) -> None:
    dest = tmp_path / "tok"
    first = build_tokenizer("t5", dest, model_max_length=128)
    stamp = (dest / "tokenizer.json").stat().st_mtime_ns
    assert build_tokenizer("t5", dest, model_max_length=128) == first
    assert (dest / "tokenizer.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    second = build_tokenizer("t5", dest)
    assert second["model_max_length"] is None and first["model_max_length"] == 128


def test_build_into_existing_model_folder(tmp_path: Path) -> None:
    """dest may already hold a model: its files stay, tokenizer files of another kind go."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    dest = tmp_path / "model"
    build_tokenizer("deberta-v3", dest)
    (dest / "config.json").write_text("{}")
    build_tokenizer("gpt2", dest, model_max_length=1024)
    assert (dest / "config.json").read_text() == "{}"
    assert not (dest / "spm.model").exists()
    assert isinstance(AutoTokenizer.from_pretrained(dest), GPT2TokenizerFast)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_build_is_deterministic(tmp_path: Path, built: dict[str, Any]) -> None:
    for kind in ("gpt2", "llama"):
        build_tokenizer(kind, tmp_path / kind, model_max_length=MAX_LEN)
        for name in ("tokenizer.json", "tokenizer_config.json", PROVENANCE_FILE):
            assert (tmp_path / kind / name).read_bytes() == (built[kind][0] / name).read_bytes(), (kind, name)


# --- one folder for every transformers release (4.51 through 5.x) ------------------------------------------

# Keys a release reads differently from another: 5.x writes `extra_special_tokens` as a list that 4.x reads as
# a dict (and fails), `backend` and `added_tokens_decoder` belong to one line's save_pretrained only.
ONE_LINE_KEYS = {"extra_special_tokens", "backend", "added_tokens_decoder", "auto_map", "tokenizer_file"}


def test_files_are_the_same_under_every_release(built: dict[str, Any]) -> None:
    """Only version-neutral files are written: the same assertions hold under 4.51, 4.57 and 5.x."""
    for kind, (path, _) in built.items():
        config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        assert config["tokenizer_class"] == EXPECTED_CLASS[kind].removesuffix("Fast"), kind
        assert not ONE_LINE_KEYS & set(config), kind
        assert config["model_max_length"] == MAX_LEN and config["clean_up_tokenization_spaces"] is False
        assert not (path / "special_tokens_map.json").exists() and not (path / "added_tokens.json").exists()
        if kind in ("t5", "llama"):  # under 4.x it makes the class rebuild from the .model, ignoring tokenizer.json
            assert "add_prefix_space" not in config
    assert json.loads((built["gpt2"][0] / "tokenizer_config.json").read_text(encoding="utf-8")) == {
        "add_prefix_space": False, "bos_token": "<|endoftext|>", "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": MAX_LEN,
        "pad_token": "<|endoftext|>", "tokenizer_class": "GPT2Tokenizer", "unk_token": "<|endoftext|>",
    }
    t5 = json.loads((built["t5"][0] / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert t5["additional_special_tokens"] == [f"<extra_id_{i}>" for i in range(100)] and t5["extra_ids"] == 100


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_loaded_pipeline_is_the_written_one(kind: str, loaded: dict[str, Any], built: dict[str, Any]) -> None:
    """4.x runs tokenizer.json as written; 5.x rebuilds normaliser, pre-tokeniser and decoder from its class:
    equal pipelines are what makes ids and offsets the same on both lines."""
    written = json.loads((built[kind][0] / "tokenizer.json").read_text(encoding="utf-8"))
    running = json.loads(loaded[kind].backend_tokenizer.to_str())
    for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "added_tokens"):
        assert running[part] == written[part], (kind, part)
    model_written, model_running = written["model"], running["model"]
    assert model_running.keys() == model_written.keys()
    for key, value in model_written.items():
        if key == "vocab" and model_written["type"] == "Unigram":  # 4.x's JSON parser may be an ulp off
            assert [p for p, _ in model_running[key]] == [p for p, _ in value]
            assert [s for _, s in model_running[key]] == pytest.approx([s for _, s in value], rel=1e-12)
        else:
            assert model_running[key] == value, (kind, key)


def test_a_release_that_runs_another_pipeline_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If a release's class rebuilt a different pipeline on load, its ids would differ from the other releases':
    the build fails instead of publishing the folder."""
    import transformers
    from tokenizers import decoders

    from adapters.errors import ModelSourceError

    real = transformers.AutoTokenizer.from_pretrained

    def rebuilt(*args: Any, **kwargs: Any) -> Any:
        tok = real(*args, **kwargs)
        tok.backend_tokenizer.decoder = decoders.WordPiece()
        return tok

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", rebuilt)
    with pytest.raises(ModelSourceError, match="decoder"):
        build_tokenizer("gpt2", tmp_path / "tok")
    assert not (tmp_path / "tok").exists() and list(tmp_path.iterdir()) == []
