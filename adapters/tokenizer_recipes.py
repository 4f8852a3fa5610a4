"""One recipe per tokenizer kind: the complete ``tokenizers`` pipeline, the tokenizer_config.json that names
its transformers class, and the facts its provenance reports.

The pipeline is built with the ``tokenizers`` library alone, never through a transformers constructor: those
changed between 4.x (``vocab_file`` + ``merges_file``, or ``tokenizer_object``) and 5.x (``vocab`` +
``merges``; given files, they silently build an empty tokenizer), and so did what each class does to the
pipeline. Each recipe reproduces the pipeline transformers 5's class builds for itself (5.x rebuilds the
normaliser, pre-tokeniser and decoder from its class on load and keeps only the vocabulary and
post-processor of tokenizer.json), so 4.x, which loads tokenizer.json as written, runs the same one. The
config holds only keys both lines read the same way; `tokenizers` serialises the same bytes in 0.21-0.23.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import assets
from . import tokenizer_sources as src

if TYPE_CHECKING:
    from tokenizers import AddedToken, Tokenizer

__all__ = ["RECIPES", "Recipe"]


@dataclass
class Recipe:
    """What ``build_tokenizer`` writes for one kind, and what its provenance says about it."""

    backend: Tokenizer  # written as tokenizer.json
    fast_class: str  # the transformers class, by its 4.x name (5.x keeps that name as an alias of the class)
    config: dict[str, Any]  # tokenizer_config.json without tokenizer_class and model_max_length
    extra_files: list[Path]  # shipped beside, for tools that read the original vocabulary files
    sources: list[str]  # asset names
    real_vocabulary: bool
    real_ids: bool
    method: str
    notes: list[str] = field(default_factory=list)

    def tokenizer_config(self, model_max_length: int | None) -> dict[str, Any]:
        """The config both transformers lines load identically: ``tokenizer_class`` without "Fast" (4.x picks
        the fast class from it, 5.x has one class), explicit special tokens, no keys only one line knows."""
        config = {"tokenizer_class": self.fast_class.removesuffix("Fast"), "clean_up_tokenization_spaces": False,
                  **self.config}
        if model_max_length is not None:
            config["model_max_length"] = int(model_max_length)
        return config


def _special(content: str, *, lstrip: bool = False) -> AddedToken:
    from tokenizers import AddedToken

    return AddedToken(content, single_word=False, lstrip=lstrip, rstrip=False, normalized=False, special=True)


def _template(single: str, pair: str, specials: list[tuple[str, int]]) -> Any:
    from tokenizers import processors

    return processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)


# ---------------------------------------------------------------------------------------------------------
# Byte-level BPE: GPT-2, CodeGen, RoBERTa

_GPT2_SPECIALS = {"bos_token": src.ENDOFTEXT, "eos_token": src.ENDOFTEXT, "unk_token": src.ENDOFTEXT,
                  "pad_token": src.ENDOFTEXT, "add_prefix_space": False}


def _byte_level_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _gpt2(kind: str) -> Recipe:
    tok = _byte_level_bpe(*src.gpt2_vocab_merges())
    tok.post_processor = _template("$A:0", "$A:0 $B:1", [])
    tok.add_special_tokens([_special(src.ENDOFTEXT)])
    return Recipe(tok, "GPT2TokenizerFast", {**_GPT2_SPECIALS, "errors": "replace"}, list(src.gpt2_bpe_files()),
                  ["gpt2_tiktoken"], True, True,
                  "GPT-2 BPE converted from whisper's gpt2.tiktoken (merges rebuilt by BPE on lower ranks)",
                  ["pad = eos = <|endoftext|>: GPT-2 has no pad token"])


def _codegen(kind: str) -> Recipe:
    from tokenizers import AddedToken, processors

    tok = _byte_level_bpe(*src.gpt2_vocab_merges())
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    tok.add_special_tokens([_special(src.ENDOFTEXT)])
    # CodeGen = GPT-2 + runs of 31..2 spaces (50257..50286) and 9..2 tabs (50287..50294), as in its release
    runs = [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]
    tok.add_tokens([AddedToken(run, normalized=True, special=False) for run in runs])
    return Recipe(tok, "CodeGenTokenizerFast", {**_GPT2_SPECIALS, "return_token_type_ids": False},
                  list(src.gpt2_bpe_files()), ["gpt2_tiktoken"], True, True,
                  "GPT-2 BPE plus CodeGen's 38 whitespace-run tokens (50257-50294)",
                  ["pad = eos = <|endoftext|>: CodeGen has no pad token"])


def _roberta(kind: str) -> Recipe:
    from tokenizers import processors

    gpt2_vocab, merges = src.gpt2_vocab_merges()
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({token: i + 4 for token, i in sorted(gpt2_vocab.items(), key=lambda item: item[1])})
    for i in range(3):  # fairseq pads its dictionary to a multiple of 8 with these
        vocab[f"madeupword{i:04d}"] = len(vocab)
    vocab["<mask>"] = len(vocab)  # 50264, vocabulary of 50265 as in roberta-base
    tok = _byte_level_bpe(vocab, merges)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                      add_prefix_space=False)
    tok.add_special_tokens([*map(_special, ("<s>", "<pad>", "</s>", "<unk>")), _special("<mask>", lstrip=True)])
    config = {"bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
              "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>", "add_prefix_space": False,
              "trim_offsets": True, "errors": "replace"}
    return Recipe(tok, "RobertaTokenizerFast", config, [], ["gpt2_tiktoken"], True, False,
                  "GPT-2 BPE in RoBERTa's layout: <s> <pad> </s> <unk>, GPT-2 tokens in rank order, <mask> last",
                  ["ordinary token ids differ from roberta-base's: fairseq's frequency-ordered dictionary "
                   "is not shipped by any package, so GPT-2 rank + 4 stands in for it"])


# ---------------------------------------------------------------------------------------------------------
# WordPiece: BERT

_BERT_TOKENS = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]",
                "mask_token": "[MASK]"}


def _wordpiece(vocab_file: Path, lowercase: bool) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab = src.read_wordpiece_vocab(vocab_file)
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = _template("[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
                                   [("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.add_special_tokens([_special(t) for t in sorted(_BERT_TOKENS.values(), key=vocab.__getitem__)])
    return tok


def _bert_config(lowercase: bool) -> dict[str, Any]:
    return {**_BERT_TOKENS, "do_lower_case": lowercase, "strip_accents": None, "tokenize_chinese_chars": True}


def _bert_uncased(kind: str) -> Recipe:
    vocab_file = assets.minilm_dir() / "vocab.txt"
    return Recipe(_wordpiece(vocab_file, True), "BertTokenizerFast", _bert_config(True), [vocab_file],
                  ["minilm"], True, True, "bert-base-uncased WordPiece vocab.txt shipped with all-MiniLM-L6-v2")


def _bert_cased(kind: str) -> Recipe:
    vocab_file = src.wordpiece_cased_vocab()
    return Recipe(_wordpiece(vocab_file, False), "BertTokenizerFast", _bert_config(False), [vocab_file],
                  ["botchan", "minilm"], False, False,
                  "cased WordPiece trained on botchan.txt (tokenizers) with the real vocab's alphabet",
                  ["no package ships the real cased vocab (28996); special ids follow it, the rest do not",
                   "WordPiece training is not reproducible across runs: trained once and cached"])


# ---------------------------------------------------------------------------------------------------------
# SentencePiece: T5 (Unigram), LLaMA (BPE with byte fallback), DeBERTa-v3 (Unigram)


def _metaspace(prepend_scheme: str, split: bool) -> tuple[Any, Any]:
    from tokenizers import decoders, pre_tokenizers

    return (pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend_scheme, split=split),
            decoders.Metaspace(replacement="▁", prepend_scheme=prepend_scheme, split=split))


def _t5(spm: src.SpmContents) -> tuple[Tokenizer, dict[str, Any]]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    extra = [f"<extra_id_{i}>" for i in range(100)]
    tok = Tokenizer(models.Unigram([*spm.pieces, *((e, 0.0) for e in reversed(extra))], 2, False))
    tok.normalizer = normalizers.Precompiled(spm.charsmap)
    metaspace, tok.decoder = _metaspace("always", True)
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), metaspace])
    tok.post_processor = _template("$A:0 </s>:0", "$A:0 </s>:0 $B:0 </s>:0", [("</s>", 1)])
    tok.add_special_tokens([*map(_special, ("<pad>", "</s>", "<unk>", *reversed(extra)))])
    return tok, {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "extra_ids": 100,
                 "additional_special_tokens": extra}


def _llama(spm: src.SpmContents) -> tuple[Tokenizer, dict[str, Any]]:
    from tokenizers import Tokenizer, decoders, models

    vocab = spm.vocab
    tok = Tokenizer(models.BPE(vocab=vocab, merges=src.spm_bpe_merges(vocab), dropout=None, fuse_unk=True,
                               byte_fallback=True))
    tok.pre_tokenizer, _ = _metaspace("first", False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1)])
    tok.post_processor = _template("<s>:0 $A:0", "<s>:0 $A:0 <s>:1 $B:1", [("<s>", 1)])
    tok.add_special_tokens([*map(_special, ("<unk>", "<s>", "</s>"))])
    # legacy=False names the pipeline above (Metaspace "first"); add_prefix_space must stay unset: under 4.x it
    # makes the class rebuild the tokenizer from tokenizer.model
    return tok, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>",
                 "add_bos_token": True, "add_eos_token": False, "legacy": False, "use_default_system_prompt": False}


def _deberta_v3(spm: src.SpmContents) -> tuple[Tokenizer, dict[str, Any]]:
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.Unigram(spm.pieces, 3, False))
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(spm.charsmap),
                                           normalizers.Strip(left=False, right=True),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    metaspace, tok.decoder = _metaspace("always", True)
    tok.pre_tokenizer = pre_tokenizers.Sequence([metaspace])
    tok.post_processor = _template("[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
                                   [("[CLS]", 1), ("[SEP]", 2)])
    tok.add_special_tokens([*map(_special, ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"))])
    return tok, {"bos_token": "[CLS]", "cls_token": "[CLS]", "eos_token": "[SEP]", "sep_token": "[SEP]",
                 "unk_token": "[UNK]", "pad_token": "[PAD]", "mask_token": "[MASK]", "do_lower_case": False,
                 "split_by_punct": False, "add_prefix_space": True}


_SPM_CLASSES = {"t5": "T5TokenizerFast", "llama": "LlamaTokenizerFast", "deberta-v3": "DebertaV2TokenizerFast"}
_SPM_PIPELINES = {"t5": _t5, "llama": _llama, "deberta-v3": _deberta_v3}
_SPM_NOTES = {
    "t5": ["100 <extra_id_N> sentinels appended, <extra_id_0> last as in T5"],
    "llama": ["pad = eos = </s>: LLaMA has no pad token"],
    "deberta-v3": ["[MASK] appended after the pieces, as in DeBERTa-v3"],
}


def _sentencepiece(kind: str) -> Recipe:
    """T5, LLaMA and DeBERTa-v3 differ only in layout: train once, then read the pieces back from the .model."""
    model_file = src.spm_model(kind)
    tok, config = _SPM_PIPELINES[kind](src.read_spm(model_file))
    layout = src.SPM_LAYOUTS[kind]
    return Recipe(tok, _SPM_CLASSES[kind], config, [model_file], ["botchan"], False, False,
                  f"SentencePiece {layout.model_type} trained on botchan.txt with {kind}'s special ids",
                  ["trained vocabulary: special ids follow the real model, ordinary ids do not", *_SPM_NOTES[kind]])


RECIPES = {
    "gpt2": _gpt2,
    "roberta": _roberta,
    "codegen": _codegen,
    "bert-uncased": _bert_uncased,
    "bert-cased": _bert_cased,
    "t5": _sentencepiece,
    "llama": _sentencepiece,
    "deberta-v3": _sentencepiece,
}
