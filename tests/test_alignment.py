"""Subword → word alignment on the offline tokenizers of every kind: tricky texts, special tokens, the decode
fallback, word pooling of (fake) activations from right-padded batches, and typed errors."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import torch

import adapters.alignment as alignment_module
import suites.test_alignment as alignment_suite  # module import: its test function is not collected here
from adapters.alignment import WordAlignment, pool_by_word, split_words, word_alignment, words_to_tokens
from adapters.errors import InvalidInputError, NeuronMapError
from adapters.tokenizers_offline import build_tokenizer

KINDS = ("gpt2", "roberta", "bert-uncased", "bert-cased", "t5", "llama", "deberta-v3")
TRICKY = [
    "Hello  world café naïve",
    "don't stop: 3.14, 1,000 and state-of-the-art!",
    "  leading\tand\ntrailing  ",
    "emoji 🤗🚀 glued😀word and 日本語のテキスト",
    "def f(x):\n\treturn x**2  # e-mail john.doe@example.com",
    "https://example.com/a?b=1 ½ ﬁne Ångström",
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
]


@pytest.fixture(scope="module")
def toks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("alignment-tokenizers")
    out = {}
    for kind in KINDS:
        build_tokenizer(kind, root / kind)
        out[kind] = AutoTokenizer.from_pretrained(str(root / kind))
    return out


def _norm(s: str) -> str:
    """Case, accents, compatibility forms and whitespace compared away (what the tokenizers normalise)."""
    return "".join(c for c in unicodedata.normalize("NFKD", s.casefold())
                   if not c.isspace() and not unicodedata.combining(c))


# ---------------------------------------------------------------------------------------------------------
# Words


def test_split_words_is_whitespace_units():
    text = "a  b\tc\nd\u00a0e\u3000f zero\u200bwidth soft\u00adhyphen (x): 日本語"
    spans = split_words(text)
    assert [text[s:e] for s, e in spans] == text.split()
    assert "zero\u200bwidth" in [text[s:e] for s, e in spans]  # U+200B is not whitespace
    assert split_words("") == [] and split_words(" \t\n ") == []


# ---------------------------------------------------------------------------------------------------------
# Alignment on every kind


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["offsets", "decode"])
def test_each_word_is_rebuilt_from_its_tokens(toks, kind, method):
    """Decoding a word's tokens gives the word back (modulo normalisation); inserted tokens map to None."""
    tok = toks[kind]
    for text in TRICKY:
        al = word_alignment(tok, text, method=method)
        assert al.method == method
        assert list(al.input_ids) == tok(text)["input_ids"]
        assert len(al.token_to_word) == len(al.tokens) == len(al.special) == al.num_tokens
        assert al.words == tuple(text.split())
        for i, inserted in enumerate(al.special):
            if inserted:
                assert al.token_to_word[i] is None and al.token_spans[i] is None
        assert not al.straddling
        for w, token_indices in enumerate(al.words_to_tokens()):
            assert token_indices, f"{kind}: word {al.words[w]!r} of {text!r} has no token"
            assert token_indices == sorted(token_indices)
            ids = [al.input_ids[i] for i in token_indices]
            if tok.unk_token_id in ids:
                continue
            rebuilt = tok.decode(ids, clean_up_tokenization_spaces=False)
            assert _norm(rebuilt) == _norm(al.words[w]), (kind, text, al.words[w], rebuilt)
        for i, w in enumerate(al.token_to_word):  # a mapped token's characters lie inside its word
            if w is not None:
                start, end = al.token_spans[i]
                assert al.word_spans[w][0] <= start < end <= al.word_spans[w][1]


@pytest.mark.parametrize("kind", KINDS)
def test_offsets_and_decode_agree(toks, kind):
    for text in TRICKY:
        a = word_alignment(toks[kind], text, method="offsets")
        b = word_alignment(toks[kind], text, method="decode")
        assert a.token_to_word == b.token_to_word, (kind, text)


def test_known_mappings(toks):
    gpt2 = word_alignment(toks["gpt2"], "Hello world")
    assert gpt2.tokens == ("Hello", "Ġworld") and gpt2.token_to_word == (0, 1) and gpt2.method == "offsets"
    # GPT-2: a second space is a token of its own that carries whitespace only
    assert word_alignment(toks["gpt2"], "a  b").token_to_word == (0, None, 1)
    # RoBERTa trims offsets: the lone 'Ġ' has an empty span
    roberta = word_alignment(toks["roberta"], "a  b")
    assert roberta.token_to_word == (None, 0, None, 1, None) and roberta.special == (True, False, False, False, True)
    # WordPiece: punctuation and ## pieces stay in their whitespace word; lowercasing and accents undone
    bert = word_alignment(toks["bert-uncased"], "Don't café")
    assert bert.tokens == ("[CLS]", "don", "'", "t", "cafe", "[SEP]")
    assert bert.token_to_word == (None, 0, 0, 0, 1, None)
    # SentencePiece: a lone '▁' gets the offsets of the next character, but carries only the word start
    t5 = word_alignment(toks["t5"], "Hello x")
    lone = [i for i, t in enumerate(t5.tokens) if t == "▁"]
    assert lone and all(t5.token_to_word[i] is None for i in lone)
    assert t5.token_to_word[t5.tokens.index("</s>")] is None
    # byte fallback: the four byte tokens of one emoji all belong to its word
    llama = word_alignment(toks["llama"], "hi 🤗!")
    byte_tokens = [i for i, t in enumerate(llama.tokens) if t.startswith("<0x")]
    assert len(byte_tokens) == 4 and {llama.token_to_word[i] for i in byte_tokens} == {1}
    assert llama.token_to_word[0] is None and llama.special[0]  # <s>


def test_special_token_written_in_the_text_belongs_to_its_word(toks):
    al = word_alignment(toks["gpt2"], "end <|endoftext|> here")
    i = al.tokens.index("<|endoftext|>")
    assert not al.special[i] and al.token_to_word[i] == 1
    bert = word_alignment(toks["bert-uncased"], "a [SEP] b")
    assert bert.token_to_word == (None, 0, 1, 2, None)


def test_words_the_tokenizer_drops_have_no_tokens(toks):
    al = word_alignment(toks["bert-uncased"], "a \u200b b")  # WordPiece deletes the zero-width space
    assert al.words == ("a", "\u200b", "b")
    assert al.words_without_tokens == [1]
    assert words_to_tokens(al) == [[1], [], [2]]


def test_empty_and_whitespace_only_text(toks):
    for kind in KINDS:
        for text in ("", "  \n\t "):
            al = word_alignment(toks[kind], text)
            assert al.words == () and all(w is None for w in al.token_to_word)


def test_max_length_truncates_like_the_batch(toks):
    tok = toks["bert-uncased"]
    text = "one two three four five six"
    al = word_alignment(tok, text, max_length=5)
    assert list(al.input_ids) == tok(text, truncation=True, max_length=5)["input_ids"]
    assert al.token_to_word == (None, 0, 1, 2, None)
    assert al.words_without_tokens == [3, 4, 5]
    decoded = word_alignment(tok, text, max_length=5, method="decode")
    assert decoded.token_to_word == al.token_to_word


def test_decode_fallback_on_a_tokenizer_without_offsets(toks, tmp_path: Path):
    from transformers import BertGenerationTokenizer  # a SentencePiece (Python) backend: no offsets

    spm_file = next(Path(toks["t5"].name_or_path).glob("*.model"))
    slow = BertGenerationTokenizer(vocab_file=str(spm_file))
    assert not slow.is_fast
    al = word_alignment(slow, "Hello  wörld 🤗 don't")
    assert al.method == "decode"
    assert al.words == ("Hello", "wörld", "🤗", "don't")
    assert [bool(t) for t in al.words_to_tokens()] == [True, True, True, True]
    with pytest.raises(InvalidInputError, match="offsets"):
        word_alignment(slow, "x", method="offsets")


def test_words_to_tokens_is_the_inverse(toks):
    al = word_alignment(toks["llama"], "state-of-the-art 3.14 🤗")
    groups = words_to_tokens(al)
    assert len(groups) == al.num_words
    for w, token_indices in enumerate(groups):
        for i in token_indices:
            assert al.token_to_word[i] == w
    assert sorted(i for g in groups for i in g) == [i for i, w in enumerate(al.token_to_word) if w is not None]


# ---------------------------------------------------------------------------------------------------------
# Word pooling


def _fake_batch(tok, texts: list[str], hidden: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids as extract_activations returns them; activation[b, i, :] = i (the position)."""
    tok.padding_side = "right"
    enc = tok(texts, padding=True, return_tensors="pt")
    batch, seq = enc["input_ids"].shape
    acts = torch.arange(seq, dtype=torch.float32)[None, :, None].expand(batch, seq, hidden).clone()
    return acts, enc["input_ids"], enc["attention_mask"]


@pytest.mark.parametrize("kind", ["gpt2", "bert-uncased", "llama"])
def test_pool_by_word_on_a_padded_batch(toks, kind):
    tok = toks[kind]
    texts = ["Hello wonderful world!", "a 🤗 b", "Pneumonoultramicroscopicsilicovolcanoconiosis is long"]
    acts, ids, mask = _fake_batch(tok, texts)
    alignments = [word_alignment(tok, t) for t in texts]
    for reduce in ("mean", "first", "last"):
        pooled = pool_by_word(acts, alignments, reduce, input_ids=ids, attention_mask=mask)
        assert len(pooled) == len(texts)
        for al, rows in zip(alignments, pooled, strict=True):
            assert rows.shape == (al.num_words, acts.shape[-1]) and rows.dtype == acts.dtype
            for w, token_indices in enumerate(al.words_to_tokens()):
                want = {"mean": sum(token_indices) / len(token_indices), "first": token_indices[0],
                        "last": token_indices[-1]}[reduce]
                assert torch.allclose(rows[w], torch.full((acts.shape[-1],), float(want)))


def test_pool_by_word_word_without_tokens_is_nan(toks):
    tok = toks["bert-uncased"]
    texts = ["a \u200b b"]
    acts, ids, _ = _fake_batch(tok, texts)
    (rows,) = pool_by_word(acts, [word_alignment(tok, texts[0])], "mean", input_ids=ids)
    assert torch.isnan(rows[1]).all() and not torch.isnan(rows[[0, 2]]).any()


def test_pool_by_word_rejects_mismatches(toks):
    tok = toks["gpt2"]
    texts = ["one two", "three four five"]
    acts, ids, mask = _fake_batch(tok, texts)
    good = [word_alignment(tok, t) for t in texts]
    with pytest.raises(InvalidInputError, match="input_ids differ"):
        pool_by_word(acts, good[::-1], input_ids=ids)
    with pytest.raises(InvalidInputError, match="attention mask"):
        pool_by_word(acts, [good[1], good[1]], attention_mask=mask)
    with pytest.raises(InvalidInputError, match="2 alignments for a batch of 1"):
        pool_by_word(acts[:1], good)
    with pytest.raises(InvalidInputError, match="positions"):
        pool_by_word(acts[:, :2], good)
    with pytest.raises(InvalidInputError, match="reduce"):
        pool_by_word(acts, good, reduce="max")
    with pytest.raises(InvalidInputError, match="batch, seq, hidden"):
        pool_by_word(acts[0], good)
    with pytest.raises(InvalidInputError, match="sequence of WordAlignment"):
        pool_by_word(acts, good[0])
    with pytest.raises(InvalidInputError, match="input_ids must be"):
        pool_by_word(acts, good, input_ids=ids[:, :1])


def test_bad_input_raises_typed_errors(toks):
    tok = toks["gpt2"]
    for bad in (None, 3, b"bytes", ["a list"]):
        with pytest.raises(InvalidInputError, match="must be a str"):
            word_alignment(tok, bad)
    with pytest.raises(InvalidInputError, match="unknown method"):
        word_alignment(tok, "x", method="regex")
    with pytest.raises(InvalidInputError, match="max_length"):
        word_alignment(tok, "x", max_length=0)
    with pytest.raises(InvalidInputError, match="tokenizer"):
        word_alignment("not a tokenizer", "x")
    with pytest.raises(InvalidInputError):
        words_to_tokens("not an alignment")
    with pytest.raises(NeuronMapError):
        split_words(None)
    assert issubclass(InvalidInputError, ValueError)
    assert isinstance(word_alignment(tok, "x"), WordAlignment)


# ---------------------------------------------------------------------------------------------------------
# The measuring instrument of suites/test_alignment.py


def test_alignment_set_labels_are_consistent():
    items = alignment_suite.load_set()
    assert 60 <= len(items) <= 100
    assert len({i["id"] for i in items}) == len(items)
    for item in items:
        assert [item["text"][s:e] for s, e in item["spans"]] == item["words"] == item["text"].split()


@pytest.mark.parametrize("kind", KINDS)
def test_reference_aligns_the_whole_set(toks, kind):
    result = alignment_suite.measure(toks[kind], alignment_suite.load_set())
    assert result["reference_failures"] == []
    assert result["tokens"] > 1000
    assert result["accuracy"] > 0.98, result["failures_sample"]


def test_reference_catches_the_lone_metaspace_error(toks, monkeypatch):
    """Without the '▁' correction, T5's offsets put the word-start marker on the next word: the reference
    (built from the vocabulary, not from offsets) sees it."""
    def naive(tokenizer, text, ids, offsets, special):
        return [[] if inserted or end <= start else list(range(start, end))
                for (start, end), inserted in zip(offsets, special, strict=True)]

    monkeypatch.setattr(alignment_module, "_owned_by_offsets", naive)
    result = alignment_suite.measure(toks["t5"], alignment_suite.load_set())
    assert result["accuracy"] < 0.95 and result["failure_kinds"].get("word_for_whitespace", 0) > 50


def test_pool_by_word_on_extract_activations_output(toks, tmp_path: Path):
    """The documented use: a tiny GPT-2 with the real BPE tokenizer, a right-padded batch, word vectors that
    equal the mean of each word's token vectors, and each text's words the same as when it runs alone."""
    from transformers import AutoModelForCausalLM

    from adapters import MultiModelAnalyzer
    from adapters.zoo import save_tiny_checkpoint, tiny_config

    tok = toks["gpt2"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("gpt2", vocab_size=len(tok)))
    path = str(save_tiny_checkpoint(model, tok, tmp_path / "tiny-gpt2"))
    analyzer = MultiModelAnalyzer()
    analyzer.load_model(path)
    try:
        texts = ["Hello  wonderful world!", "naïve 🤗 don't", "x"]
        acts = analyzer.extract_activations(path, texts, [0])
        adapter_tok = analyzer.loaded_models[path].tokenizer
        alignments = [word_alignment(adapter_tok, t) for t in texts]
        pooled = pool_by_word(acts[0], alignments, "mean", input_ids=acts.input_ids,
                              attention_mask=acts.attention_mask)
        for b, (al, rows) in enumerate(zip(alignments, pooled, strict=True)):
            assert rows.shape == (len(texts[b].split()), acts[0].shape[-1])
            for w, token_indices in enumerate(al.words_to_tokens()):
                assert torch.allclose(rows[w], acts[0][b, token_indices].mean(0))
            alone = analyzer.extract_activations(path, [texts[b]], [0])
            (rows_alone,) = pool_by_word(alone[0], [al], "mean", input_ids=alone.input_ids)
            assert torch.allclose(rows, rows_alone, atol=1e-5)
    finally:
        analyzer.unload_model(path)
