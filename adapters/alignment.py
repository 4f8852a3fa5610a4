"""Subword → word alignment: which word of the original text each token of a model's encoding belongs to.

**What a word is.** A word is a maximal run of non-whitespace characters of the *original* text (whitespace
as ``str.isspace`` defines it: spaces, tabs, newlines, no-break and ideographic spaces ...), i.e. the units of
``text.split()``. Punctuation attached to a word belongs to it (``"world!"`` is one word, ``"(x):"`` is one
word); text written without spaces (Chinese, Japanese, ``"a+b=c"``) is one word per whitespace-delimited run,
however many tokens the tokenizer makes of it. The definition does not depend on the tokenizer: the same text
gives the same words for every model, so word-level activations can be compared across models.

**Which word a token belongs to.** The word whose characters the token carries. Tokens that carry no character
of any word map to ``None``: special tokens the tokenizer inserts (``[CLS]``, ``<s>``, ``</s>`` ...) and tokens
that stand only for whitespace (GPT-2's lone ``Ġ``/``Ċ``, SentencePiece's lone ``▁`` word-start marker,
CodeGen's space runs). A special token written *in* the text (a literal ``<|endoftext|>``) carries those
characters and maps to their word. A token carrying characters of two words maps to the first and is listed
in ``straddling``; the second word then has no token (``words_without_tokens``). Ordinary subwords never do
(pre-tokenizers split at whitespace), but an unknown piece can swallow whitespace its tokenizer does not split
on: DeBERTa-v3 makes one ``[UNK]`` of ``"ＡＢＣ\u3000１２３"`` (U+3000 is an ideographic space).

**How.** With a fast tokenizer, character offsets (``return_offsets_mapping=True``): the characters a token
covers, minus whitespace, name its word. That is robust across byte-level BPE (offsets may include the leading
space; several byte tokens share one character), WordPiece (``##`` continuations, lowercasing and accent
stripping are undone by the offsets), SentencePiece/Unigram (``▁``) and byte-fallback BPE. One correction:
SentencePiece gives a lone ``▁`` token the offsets of the character after it, so a token whose string is only
``▁`` while the text there is not ``▁`` carries whitespace only (without this, 7.8% of T5's tokens on the
suite's alignment set land on the next word). Without offsets (a Python/SentencePiece backend
tokenizer), ``method="decode"``: each token's characters come from decoding growing prefixes of the ids, and the
decoded characters are matched to the text by a sequence alignment of case-folded, compatibility-decomposed
characters without whitespace (what a normaliser deleted, such as accents, stays unmatched); unknown tokens
take the text left unmatched between them, word by word where the counts agree. The result says which method ran.

Use with ``extract_activations`` (right-padded batches, ``.input_ids`` alongside)::

    acts = analyzer.extract_activations("gpt2", texts, [6])
    tok = analyzer.loaded_models["gpt2"].tokenizer
    alignments = [word_alignment(tok, t) for t in texts]
    words = pool_by_word(acts[6], alignments, reduce="mean", input_ids=acts.input_ids)  # list of [words, hidden]
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from .errors import InvalidInputError

__all__ = [
    "METHODS",
    "REDUCTIONS",
    "WordAlignment",
    "pool_by_word",
    "split_words",
    "word_alignment",
    "words_to_tokens",
]

METHODS = ("auto", "offsets", "decode")
REDUCTIONS = ("mean", "first", "last")
METASPACE = "\u2581"  # SentencePiece's word-start marker '▁'
_WORD = re.compile(r"\S+")  # str patterns: \s is exactly str.isspace()
_WILDCARD = "\x00"  # stands for an unknown token in decoded streams; _key() never yields it


def split_words(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of the words of ``text``: maximal runs of non-whitespace characters."""
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a str, got {type(text).__name__}")
    return [m.span() for m in _WORD.finditer(text)]


@dataclass(frozen=True)
class WordAlignment:
    """Token ↔ word mapping of one text; token ``i`` is position ``i`` of the model's ``input_ids``.

    ``token_to_word[i]`` is the index into ``words`` or ``None``; ``token_spans[i]`` is the ``[start, end)``
    of the non-whitespace text characters token ``i`` carries (``None``: none); ``special[i]`` marks tokens the
    tokenizer inserted; ``method`` is ``"offsets"`` or ``"decode"``.
    """

    text: str
    words: tuple[str, ...]
    word_spans: tuple[tuple[int, int], ...]
    input_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    token_to_word: tuple[int | None, ...]
    token_spans: tuple[tuple[int, int] | None, ...]
    special: tuple[bool, ...]
    method: str
    straddling: tuple[int, ...] = ()  # tokens carrying characters of more than one word

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def num_words(self) -> int:
        return len(self.words)

    def words_to_tokens(self) -> list[list[int]]:
        """For each word, the indices of its tokens in order (an empty list: the tokenizer dropped the word, or
        a straddling token took it)."""
        out: list[list[int]] = [[] for _ in self.words]
        for i, w in enumerate(self.token_to_word):
            if w is not None:
                out[w].append(i)
        return out

    @property
    def words_without_tokens(self) -> list[int]:
        """Words no token maps to (e.g. a lone zero-width character, which WordPiece deletes)."""
        return [w for w, toks in enumerate(self.words_to_tokens()) if not toks]


def words_to_tokens(alignment: WordAlignment) -> list[list[int]]:
    """Inverse of ``alignment.token_to_word``: for each word, the indices of its tokens in order."""
    if not isinstance(alignment, WordAlignment):
        raise InvalidInputError(f"expected a WordAlignment, got {type(alignment).__name__}")
    return alignment.words_to_tokens()


# ---------------------------------------------------------------------------------------------------------
# Alignment


def word_alignment(tokenizer: Any, text: str, *, method: str = "auto", add_special_tokens: bool = True,
                   max_length: int | None = None) -> WordAlignment:
    """Map every token of ``tokenizer``'s encoding of ``text`` to the index of the word it belongs to.

    The encoding is the one ``extract_activations`` feeds the model (``add_special_tokens=True``; pass the same
    ``max_length`` if the batch was truncated). ``method``: ``"auto"`` (offsets when the tokenizer is fast,
    else decode), ``"offsets"`` or ``"decode"``. See the module docstring for the word definition.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a str, got {type(text).__name__}")
    if method not in METHODS:
        raise InvalidInputError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise InvalidInputError(f"expected a transformers tokenizer, got {type(tokenizer).__name__}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                   or max_length <= 0):
        raise InvalidInputError(f"max_length must be a positive int or None, got {max_length!r}")
    kwargs: dict[str, Any] = {"add_special_tokens": add_special_tokens}
    if max_length is not None:
        kwargs.update(truncation=True, max_length=max_length)
    spans = split_words(text)
    if method == "auto":
        method = "offsets" if getattr(tokenizer, "is_fast", False) else "decode"
    if method == "offsets":
        if not getattr(tokenizer, "is_fast", False):
            raise InvalidInputError(f"{type(tokenizer).__name__} gives no character offsets; use method='decode'")
        enc = tokenizer(text, return_offsets_mapping=True, **kwargs)
        ids = list(enc["input_ids"])
        special = _inserted_offsets(tokenizer, enc, ids)
        owned = _owned_by_offsets(tokenizer, text, ids, enc["offset_mapping"], special)
    else:
        ids = list(tokenizer(text, **kwargs)["input_ids"])
        special = _inserted_decode(tokenizer, text, ids, kwargs)
        owned = _owned_by_decode(tokenizer, text, ids, special, spans)
    return _build(tokenizer, text, spans, ids, special, owned, method)


def _build(tokenizer: Any, text: str, spans: list[tuple[int, int]], ids: list[int], special: list[bool],
           owned: list[list[int]], method: str) -> WordAlignment:
    char_word: list[int | None] = [None] * len(text)
    for w, (start, end) in enumerate(spans):
        char_word[start:end] = [w] * (end - start)
    token_to_word: list[int | None] = []
    token_spans: list[tuple[int, int] | None] = []
    straddling: list[int] = []
    for i, chars in enumerate(owned):
        chars = sorted({p for p in chars if not text[p].isspace()})
        found = sorted({char_word[p] for p in chars if char_word[p] is not None})
        token_to_word.append(found[0] if found else None)
        token_spans.append((chars[0], chars[-1] + 1) if chars else None)
        if len(found) > 1:
            straddling.append(i)
    return WordAlignment(
        text=text, words=tuple(text[s:e] for s, e in spans), word_spans=tuple(spans), input_ids=tuple(ids),
        tokens=tuple(str(t) for t in tokenizer.convert_ids_to_tokens(ids)), token_to_word=tuple(token_to_word),
        token_spans=tuple(token_spans), special=tuple(special), method=method, straddling=tuple(straddling),
    )


def _inserted_offsets(tokenizer: Any, enc: Any, ids: list[int]) -> list[bool]:
    """Tokens the tokenizer inserted: the Rust encoding's special-tokens mask (template tokens only; unknown
    tokens and special tokens written in the text are 0), else special ids with an empty span."""
    encodings = getattr(enc, "encodings", None)
    if encodings:
        return [bool(m) for m in encodings[0].special_tokens_mask]
    specials = set(getattr(tokenizer, "all_special_ids", ())) - {getattr(tokenizer, "unk_token_id", None)}
    return [i in specials and s == e for i, (s, e) in zip(ids, enc["offset_mapping"], strict=True)]


def _owned_by_offsets(tokenizer: Any, text: str, ids: list[int], offsets: Sequence[Sequence[int]],
                      special: list[bool]) -> list[list[int]]:
    tokens = tokenizer.convert_ids_to_tokens(ids)
    owned: list[list[int]] = []
    for token, (start, end), inserted in zip(tokens, offsets, special, strict=True):
        start, end = max(0, int(start)), min(len(text), int(end))
        if inserted or end <= start:
            owned.append([])
            continue
        piece = str(token)
        # SentencePiece puts a lone '▁' (word-start marker) on the character after it: it carries whitespace
        if piece and set(piece) == {METASPACE} and METASPACE not in text[start:end]:
            owned.append([])
            continue
        owned.append(list(range(start, end)))
    return owned


def _inserted_decode(tokenizer: Any, text: str, ids: list[int], kwargs: dict[str, Any]) -> list[bool]:
    """Without an encoding's mask: the ids of the encoding without special tokens sit inside ``ids``; the rest
    was inserted. Falls back to special ids other than the unknown token."""
    plain = list(tokenizer(text, **{**kwargs, "add_special_tokens": False})["input_ids"])
    n, m = len(ids), len(plain)
    for offset in range(n - m + 1):
        if ids[offset : offset + m] == plain:
            return [not (offset <= i < offset + m) for i in range(n)]
    for m_cut in range(min(m, n), 0, -1):  # truncated: the head of the plain ids survives
        for offset in range(n - m_cut + 1):
            if ids[offset : offset + m_cut] == plain[:m_cut]:
                return [not (offset <= i < offset + m_cut) for i in range(n)]
    specials = set(getattr(tokenizer, "all_special_ids", ())) - {getattr(tokenizer, "unk_token_id", None)}
    return [i in specials for i in ids]


def _key(s: str) -> str:
    """Comparison form of decoded vs original characters: compatibility-decomposed, case-folded, without
    whitespace. Characters a normaliser deletes (accents, control and format characters) stay: the sequence
    alignment leaves them unmatched."""
    return "".join(c for c in unicodedata.normalize("NFKD", s.casefold()) if not c.isspace())


def _decoded_stream(tokenizer: Any, ids: list[int], special: list[bool]) -> list[tuple[str, frozenset[int]]]:
    """Decoded characters of the non-inserted tokens, each with the tokens it comes from (a character made of
    several byte tokens has all of them); an unknown token is one wildcard element of its own."""
    unk = getattr(tokenizer, "unk_token_id", None)
    stream: list[tuple[str, frozenset[int]]] = []
    run: list[int] = []  # token indices of the current run of known tokens

    def flush() -> None:
        """Decode growing prefixes; a prefix is a checkpoint when its decoding is a prefix of the whole run's
        (an incomplete byte sequence decodes to U+FFFD and is not): the characters added since the last
        checkpoint belong to every token added since."""
        if not run:
            return
        final = decode(run)
        decoded, pending = "", []
        for k in range(len(run)):
            pending.append(run[k])
            now = final if k == len(run) - 1 else decode(run[: k + 1])
            if k < len(run) - 1 and not (now.startswith(decoded) and final.startswith(now)):
                continue
            common = len(decoded)
            if not now.startswith(decoded):  # the whole run decodes differently from its prefixes
                common = 0
                while common < min(len(decoded), len(now)) and decoded[common] == now[common]:
                    common += 1
                pending.extend(t for _, owners in stream[len(stream) - len(decoded) + common :] for t in owners)
                del stream[len(stream) - len(decoded) + common :]
            stream.extend((ch, frozenset(pending)) for ch in now[common:])
            decoded, pending = now, []
        run.clear()

    def decode(indices: list[int]) -> str:
        return tokenizer.decode([ids[i] for i in indices], skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)

    for i, token_id in enumerate(ids):
        if special[i]:
            continue
        if unk is not None and token_id == unk:
            flush()
            stream.append((_WILDCARD, frozenset({i})))
        else:
            run.append(i)
    flush()
    return stream


def _owned_by_decode(tokenizer: Any, text: str, ids: list[int], special: list[bool],
                     spans: list[tuple[int, int]]) -> list[list[int]]:
    """Match decoded characters to the text by their comparison keys (difflib, no junk heuristic); text left
    unmatched between matched blocks goes, in order, to the tokens left unmatched there (unknown tokens).
    Whitespace is compared away, so a token owns no whitespace and whitespace-only tokens map to no word."""
    tok_keys: list[str] = []
    tok_owner: list[frozenset[int]] = []
    for ch, owners in _decoded_stream(tokenizer, ids, special):
        for k in (_WILDCARD if ch == _WILDCARD else _key(ch)):
            tok_keys.append(k)
            tok_owner.append(owners)
    text_keys: list[str] = []
    text_pos: list[int] = []
    for p, ch in enumerate(text):
        for k in _key(ch):
            text_keys.append(k)
            text_pos.append(p)
    char_word: list[int | None] = [None] * len(text)
    for w, (start, end) in enumerate(spans):
        char_word[start:end] = [w] * (end - start)
    owned: list[set[int]] = [set() for _ in ids]
    matcher = SequenceMatcher(None, tok_keys, text_keys, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                for t in tok_owner[i]:
                    owned[t].add(text_pos[j])
        elif op == "replace":
            # unmatched text goes to the unmatched tokens there (unknown tokens): word by word when there are
            # as many tokens as words, else in proportion to the characters
            units: list[frozenset[int]] = []
            for i in range(i1, i2):
                if not units or tok_owner[i] != units[-1]:
                    units.append(tok_owner[i])
            words = list(dict.fromkeys(char_word[text_pos[j]] for j in range(j1, j2)))
            for j in range(j1, j2):
                if len(units) == len(words):
                    unit = units[words.index(char_word[text_pos[j]])]
                else:
                    unit = tok_owner[i1 + (j - j1) * (i2 - i1) // (j2 - j1)]
                for t in unit:
                    owned[t].add(text_pos[j])
    return [sorted(s) for s in owned]


# ---------------------------------------------------------------------------------------------------------
# Word-level activations


def pool_by_word(activations: Any, alignments: Sequence[WordAlignment], reduce: str = "mean", *,
                 input_ids: Any = None, attention_mask: Any = None) -> list[Any]:
    """Word-level activations from token-level ones: one ``[num_words, hidden]`` tensor per text.

    ``activations`` is ``[batch, seq, hidden]`` (one layer of ``extract_activations``, right-padded);
    ``alignments[b]`` is ``word_alignment`` of text ``b`` with the same tokenizer. ``reduce``: ``"mean"`` of a
    word's tokens, its ``"first"`` or ``"last"`` token. A word with no token (dropped by the tokenizer) gets a
    row of NaN. Pass the result's ``input_ids`` (and/or ``attention_mask``) to have every alignment checked
    against the ids the model actually saw.
    """
    import torch

    if reduce not in REDUCTIONS:
        raise InvalidInputError(f"unknown reduce {reduce!r}; allowed: {', '.join(REDUCTIONS)}")
    if not isinstance(activations, torch.Tensor) or activations.dim() != 3:
        raise InvalidInputError("activations must be a [batch, seq, hidden] tensor, got "
                                f"{getattr(activations, 'shape', type(activations).__name__)}")
    if isinstance(alignments, WordAlignment) or not all(isinstance(a, WordAlignment) for a in alignments):
        raise InvalidInputError("alignments must be a sequence of WordAlignment, one per text of the batch")
    batch, seq, hidden = activations.shape
    if len(alignments) != batch:
        raise InvalidInputError(f"{len(alignments)} alignments for a batch of {batch}")
    for name, t in (("input_ids", input_ids), ("attention_mask", attention_mask)):
        if t is not None and (not isinstance(t, torch.Tensor) or tuple(t.shape) != (batch, seq)):
            raise InvalidInputError(f"{name} must be a [batch, seq] = [{batch}, {seq}] tensor, "
                                    f"got {getattr(t, 'shape', type(t).__name__)}")
    out = []
    for b, al in enumerate(alignments):
        n = al.num_tokens
        if n > seq:
            raise InvalidInputError(f"text {b}: the alignment has {n} tokens, the activations {seq} positions "
                                    "(truncated batch? align with the same max_length)")
        if attention_mask is not None and int(attention_mask[b].sum()) != n:
            raise InvalidInputError(f"text {b}: attention mask covers {int(attention_mask[b].sum())} tokens, "
                                    f"the alignment {n}")
        if input_ids is not None and input_ids[b, :n].tolist() != list(al.input_ids):
            raise InvalidInputError(f"text {b}: the alignment's input_ids differ from the batch's (another "
                                    "tokenizer, other special tokens or truncation?)")
        rows = activations[b, :n]
        index = [(i, w) for i, w in enumerate(al.token_to_word) if w is not None]
        pooled = torch.full((al.num_words, hidden), float("nan"), dtype=rows.dtype, device=rows.device)
        if index:
            tok_idx = torch.tensor([i for i, _ in index], device=rows.device)
            word_idx = torch.tensor([w for _, w in index], device=rows.device)
            if reduce == "mean":
                sums = torch.zeros((al.num_words, hidden), dtype=torch.float64 if rows.dtype == torch.float64
                                   else torch.float32, device=rows.device)
                sums.index_add_(0, word_idx, rows[tok_idx].to(sums.dtype))
                counts = torch.bincount(word_idx, minlength=al.num_words).to(sums.dtype)
                present = counts > 0
                pooled[present] = (sums[present] / counts[present, None]).to(rows.dtype)
            else:
                groups = al.words_to_tokens()
                words = [w for w, toks in enumerate(groups) if toks]
                picks = [groups[w][0 if reduce == "first" else -1] for w in words]
                pooled[torch.tensor(words, device=rows.device)] = rows[torch.tensor(picks, device=rows.device)]
        out.append(pooled)
    return out
