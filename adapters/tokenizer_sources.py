"""The raw material of the offline tokenizers: vocabularies converted, trained or read from PyPI assets.

Nothing here touches transformers, so what it returns is the same on every transformers release: GPT-2's
vocab + merges converted from whisper's tiktoken ranks, a cased WordPiece vocabulary and three SentencePiece
models trained on *Botchan*, and the pieces, scores and normalisation rules read back from a ``.model`` file.
Expensive results are cached once under ``assets.cache_root()``.
"""

from __future__ import annotations

import base64
import io
import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import assets
from .errors import ModelSourceError

__all__ = [
    "BERT_SPECIALS", "ENDOFTEXT", "GPT2_ENDOFTEXT_ID", "SPM_LAYOUTS", "SpmContents", "SpmLayout", "bytes_to_unicode",
    "gpt2_bpe_files", "gpt2_vocab_merges", "read_spm", "read_wordpiece_vocab", "spm_bpe_merges", "spm_model",
    "wordpiece_cased_vocab",
]

# Version of the cached intermediates below. Separate from the builder's version on purpose: WordPiece training
# is not reproducible, so re-keying its cache when only the written tokenizer files change would change ids.
CACHE_VERSION = 1
ENDOFTEXT = "<|endoftext|>"
GPT2_ENDOFTEXT_ID = 50256


# ---------------------------------------------------------------------------------------------------------
# GPT-2 byte-level BPE from tiktoken ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (the alphabet of vocab.json and merges.txt)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _split_by_lower_ranks(token: bytes, ranks: dict[bytes, int], max_rank: int) -> list[bytes]:
    """Run BPE on ``token`` with only merges ranked below ``max_rank``; the two parts left are its merge.

    Splitting a token at the pair of smallest ranks instead gives the wrong merge on ~40% of GPT-2's lines,
    because BPE order, not piece rank, decides how a token was assembled.
    """
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def _convert_tiktoken(tiktoken_file: Path, out: Path) -> None:
    """Write vocab.json + merges.txt equivalent to a tiktoken rank file (ranks become ids)."""
    ranks: dict[bytes, int] = {}
    for line in tiktoken_file.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    byte_char = bytes_to_unicode()

    def printable(token: bytes) -> str:
        return "".join(byte_char[b] for b in token)

    merges: list[str] = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if rank < 256:
            if len(token) != 1:
                raise ModelSourceError(f"{tiktoken_file}: rank {rank} is not a single byte")
            continue
        parts = _split_by_lower_ranks(token, ranks, rank)
        if len(parts) != 2:
            raise ModelSourceError(f"{tiktoken_file}: token of rank {rank} cannot be built from lower ranks")
        if rank != 256 + len(merges):
            raise ModelSourceError(f"{tiktoken_file}: ranks are not contiguous at {rank}")
        merges.append(f"{printable(parts[0])} {printable(parts[1])}")
    vocab = {printable(token): rank for token, rank in ranks.items()}
    vocab[ENDOFTEXT] = len(ranks)
    if vocab[ENDOFTEXT] != GPT2_ENDOFTEXT_ID:
        raise ModelSourceError(f"{tiktoken_file}: {len(ranks)} ranks, expected GPT-2's {GPT2_ENDOFTEXT_ID}")
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def gpt2_bpe_files() -> tuple[Path, Path]:
    """GPT-2's vocab.json and merges.txt, converted once from whisper's ``gpt2.tiktoken`` and cached."""
    source = assets.ASSETS["gpt2_tiktoken"]
    folder = assets.cached_dir(
        f"tokenizers/gpt2-bpe-{source.version}-v{CACHE_VERSION}",
        lambda tmp: _convert_tiktoken(assets.gpt2_tiktoken_file(), tmp),
    )
    return folder / "vocab.json", folder / "merges.txt"


def gpt2_vocab_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2's vocabulary (token -> id) and merges (in rank order), read from the cached files."""
    vocab_file, merges_file = gpt2_bpe_files()
    vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    lines = merges_file.read_text(encoding="utf-8").splitlines()
    pairs = (line.split(" ") for line in lines if line and not line.startswith("#version"))
    return vocab, [(left, right) for left, right in pairs]


# ---------------------------------------------------------------------------------------------------------
# Trained vocabularies (cached once: WordPiece training is not reproducible across runs)


@dataclass(frozen=True)
class SpmLayout:
    """A SentencePiece model family: file name, algorithm, special ids/pieces, and trainer options."""

    file_name: str
    model_type: str
    max_vocab: int  # the real model's size; botchan supports fewer, and the trainer stops there
    ids: dict[str, int]  # unk/bos/eos/pad -> id (-1: absent)
    pieces: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


SPM_LAYOUTS: dict[str, SpmLayout] = {
    # T5: pad 0, eos 1, unk 2, no bos; sentinels are appended by T5Tokenizer (extra_id_0 = last id)
    "t5": SpmLayout("spiece.model", "unigram", 32000, {"pad": 0, "eos": 1, "unk": 2, "bos": -1}),
    # LLaMA: unk 0, <s> 1, </s> 2; BPE with byte fallback, digits split, no normalisation
    "llama": SpmLayout(
        "tokenizer.model", "bpe", 32000, {"unk": 0, "bos": 1, "eos": 2, "pad": -1},
        options={"byte_fallback": True, "split_digits": True, "normalization_rule_name": "identity",
                 "remove_extra_whitespaces": False, "allow_whitespace_only_pieces": True},
    ),
    # DeBERTa-v3: [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3; [MASK] is appended by DebertaV2Tokenizer
    "deberta-v3": SpmLayout(
        "spm.model", "unigram", 128000, {"pad": 0, "bos": 1, "eos": 2, "unk": 3},
        pieces={"pad": "[PAD]", "bos": "[CLS]", "eos": "[SEP]", "unk": "[UNK]"},
    ),
}


# Characters every trained vocabulary covers even where botchan lacks them (digits, Latin-1 letters, quotes)
_REQUIRED_CHARS = "".join(sorted(
    {c for c in string.printable if not c.isspace()}
    | {chr(i) for i in range(0xA1, 0x100) if i != 0xAD}
    | set("‘’“”–—…€")
))


def _train_spm(layout: SpmLayout, out: Path) -> None:
    """Train a SentencePiece model on botchan with ``layout``'s special ids; deterministic (one thread).

    ``hard_vocab_limit=False`` with the real model's size as the cap gives the largest vocabulary the text
    supports (about 5k pieces for Unigram, 19k for BPE); ``_REQUIRED_CHARS`` makes digits, accented letters
    and symbols missing from the novel pieces rather than unknowns.
    """
    import sentencepiece as spm

    writer = io.BytesIO()
    kwargs: dict[str, Any] = {f"{name}_id": value for name, value in layout.ids.items()}
    kwargs.update({f"{name}_piece": value for name, value in layout.pieces.items()})
    kwargs.update(layout.options)
    spm.SentencePieceTrainer.train(
        input=str(assets.botchan_text()), model_writer=writer, model_type=layout.model_type,
        vocab_size=layout.max_vocab, hard_vocab_limit=False, character_coverage=1.0,
        required_chars=_REQUIRED_CHARS, num_threads=1,
        minloglevel=2, **kwargs,
    )
    (out / layout.file_name).write_bytes(writer.getvalue())


def spm_model(kind: str) -> Path:
    """The SentencePiece model of ``kind`` (a key of ``SPM_LAYOUTS``), trained once and cached."""
    layout = SPM_LAYOUTS[kind]
    version = assets.ASSETS["botchan"].version
    folder = assets.cached_dir(f"tokenizers/spm-{kind}-{version}-v{CACHE_VERSION}",
                               lambda tmp: _train_spm(layout, tmp))
    return folder / layout.file_name


BERT_SPECIALS = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _train_wordpiece_cased(out: Path) -> None:
    """Cased WordPiece on botchan with Google's cased-BERT special ids ([PAD] 0, [UNK] 100 ... [MASK] 103).

    The alphabet is every character of the real uncased vocab, its upper case and ``_REQUIRED_CHARS``, each
    also as a ``##`` continuation, so accented or foreign letters inside words do not turn whole words into
    [UNK] (the uncased vocab has no accented letters: BERT strips accents when it lowercases).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    real_vocab = (assets.minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    chars = {t[-1] for t in real_vocab if len(t) == 1 or (len(t) == 3 and t.startswith("##"))}
    chars |= {c.upper() for c in chars if len(c.upper()) == 1} | set(_REQUIRED_CHARS)
    alphabet = sorted(chars)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=28996, special_tokens=BERT_SPECIALS,
                                        initial_alphabet=alphabet, show_progress=False)
    tokenizer.train([str(assets.botchan_text())], trainer)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    tokens = [token for token, _ in vocab]
    present = set(tokens)
    tokens += [piece for c in alphabet for piece in (c, f"##{c}") if piece not in present]
    (out / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")


def wordpiece_cased_vocab() -> Path:
    """The cased WordPiece vocab.txt, trained once and cached (retraining would give other ids)."""
    version = assets.ASSETS["botchan"].version
    return assets.cached_dir(f"tokenizers/wordpiece-cased-{version}-v{CACHE_VERSION}",
                             _train_wordpiece_cased) / "vocab.txt"


def read_wordpiece_vocab(path: Path) -> dict[str, int]:
    """A vocab.txt as token -> id (the line number)."""
    return {token: i for i, token in enumerate(path.read_text(encoding="utf-8").splitlines())}


# ---------------------------------------------------------------------------------------------------------
# Reading a SentencePiece model back (what transformers' converters do, without depending on their release)


@dataclass(frozen=True)
class SpmContents:
    """A ``.model`` file's pieces with their scores, piece types and precompiled normalisation rules."""

    # Scores are the float32 values exactly, as transformers 5 has them. 4.x reads tokenizer.json with serde_json,
    # which misrounds 17-digit decimals by up to an ulp; rounding the scores to 9 digits would make both lines
    # read identical values but flips a near-tie on one Botchan line in 5.25 ("www"), so ids are kept instead.
    pieces: list[tuple[str, float]]
    types: list[int]  # SentencePiece piece types: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte
    charsmap: bytes  # empty for the identity normalisation

    @property
    def vocab(self) -> dict[str, int]:
        return {piece: i for i, (piece, _) in enumerate(self.pieces)}


def read_spm(path: Path) -> SpmContents:
    """Pieces, scores, types and normalisation rules of a SentencePiece model (needs protobuf)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return SpmContents([(p.piece, p.score) for p in proto.pieces], [p.type for p in proto.pieces],
                       bytes(proto.normalizer_spec.precompiled_charsmap))


def spm_bpe_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Merges of a SentencePiece BPE model, rebuilt from its pieces as transformers does (a ``.model`` stores no
    merges): every split of a piece into two pieces, ordered by the merged piece's id, then by part lengths."""
    merges: list[tuple[str, str, int]] = []
    for piece, rank in vocab.items():
        local = [(piece[:i], piece[i:], rank) for i in range(1, len(piece))
                 if piece[:i] in vocab and piece[i:] in vocab]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])))
    return [(left, right) for left, right, _ in merges]
