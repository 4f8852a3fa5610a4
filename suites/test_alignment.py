"""Token alignment: subword → word mapping of each registered model's tokenizer on a labelled text set.

The set (`suites/data/alignment_set.toml`) gives each text's gold words; a word is a whitespace-delimited
unit of the original text (see `adapters/alignment.py`). Accuracy = the fraction of tokens (all but those the
tokenizer inserts: [CLS], <s>, </s> ...) that `word_alignment` assigns to their gold word, over all texts.

A token's gold word must not come from the offsets under test, so it is derived here independently: each
token's surface is rebuilt from the vocabulary alone (byte-level BPE: GPT-2's byte alphabet; SentencePiece:
'▁' and <0xNN> byte pieces; WordPiece: '##' continuations; added tokens: their content; the unknown token:
a wildcard), the surfaces are decoded as UTF-8 (a character made of several byte tokens belongs to all of
them) and matched against the text with a regular expression that must match the whole text: case,
compatibility forms and whitespace are compared away, combining marks and control/format characters of the
text may be skipped (normalisers delete them), an unknown token takes at least one character. The gold word
of a token is the word holding the characters it matched; a token that matched none (whitespace only) has
none. A text where this reference cannot match the whole text is reported, not scored.

Only the tokenizer is loaded (`resolve_source` builds the zoo checkpoint if needed, at reduced depth for
models flagged large). Also recorded, not gated: the accuracy of the decode fallback (`method="decode"`),
words no token maps to (reported separately from the token accuracy, as the brief asks), and per category.
"""

from __future__ import annotations

import json
import re
import tomllib
import unicodedata
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

from adapters.tokenizer_sources import bytes_to_unicode
from harness.plugin import load_options
from suites.common import check_verdict

DATA = Path(__file__).resolve().parent / "data" / "alignment_set.toml"
FAILURE_SAMPLE = 25
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_OPTIONAL_CATEGORIES = ("Mn", "Mc", "Me", "Cc", "Cf")


class ReferenceMismatch(Exception):
    """The reference could not match a text (reported per text, never scored)."""


@cache
def load_set() -> list[dict[str, Any]]:
    """The labelled texts, each with gold word spans located left to right (only whitespace between)."""
    items = tomllib.loads(DATA.read_text(encoding="utf-8"))["text"]
    for item in items:
        text, spans, pos = item["text"], [], 0
        for word in item["words"]:
            start = text.find(word, pos)
            if start < 0 or text[pos:start].strip() or not word or any(c.isspace() for c in word):
                raise ValueError(f"{item['id']}: gold word {word!r} is not the next whitespace unit of the text")
            spans.append((start, start + len(word)))
            pos = start + len(word)
        if text[pos:].strip():
            raise ValueError(f"{item['id']}: text after the last gold word: {text[pos:]!r}")
        item["spans"] = spans
    return items


# ---------------------------------------------------------------------------------------------------------
# Reference: token surfaces from the vocabulary, matched to the text


_BYTE_CHAR = {c: b for b, c in bytes_to_unicode().items()}  # GPT-2's byte alphabet, inverted


def _has_type(node: Any, name: str) -> bool:
    if isinstance(node, dict):
        return node.get("type") == name or any(_has_type(v, name) for v in node.values())
    if isinstance(node, list):
        return any(_has_type(v, name) for v in node)
    return False


def _scheme(tok: Any) -> dict[str, Any]:
    spec = json.loads(tok.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    return {
        "byte_level": _has_type(spec.get("pre_tokenizer"), "ByteLevel") or _has_type(spec.get("decoder"), "ByteLevel"),
        "byte_fallback": bool(model.get("byte_fallback")),
        "wordpiece_prefix": model.get("continuing_subword_prefix") if model.get("type") == "WordPiece" else None,
        "added": {int(i): t for t, i in tok.get_added_vocab().items()},
        "unk": tok.unk_token_id,
    }


def _surface(token: str, token_id: int, scheme: dict[str, Any]) -> bytes | None:
    """The text bytes a token stands for, from the vocabulary alone; None for the unknown token."""
    if token_id == scheme["unk"]:
        return None
    if token_id in scheme["added"]:
        return scheme["added"][token_id].encode()
    if scheme["byte_level"] and all(c in _BYTE_CHAR for c in token):
        return bytes(_BYTE_CHAR[c] for c in token)
    if scheme["byte_fallback"] and (m := _BYTE_PIECE.fullmatch(token)):
        return bytes([int(m.group(1), 16)])
    prefix = scheme["wordpiece_prefix"]
    if prefix and token.startswith(prefix) and len(token) > len(prefix):
        token = token[len(prefix):]
    return token.replace("\u2581", " ").encode()


def _utf8_chars(surfaces: list[tuple[int, bytes]]) -> list[tuple[str, frozenset[int]]]:
    """Decode concatenated token bytes; each character carries the tokens its bytes came from."""
    data = b"".join(b for _, b in surfaces)
    owner = [t for t, b in surfaces for _ in b]
    out, i = [], 0
    while i < len(data):
        lead = data[i]
        n = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4
        try:
            ch = data[i : i + n].decode("utf-8")
        except UnicodeDecodeError:
            ch, n = "\ufffd", 1
        out.append((ch, frozenset(owner[i : i + n])))
        i += n
    return out


def _key(ch: str) -> str:
    """Comparison form: compatibility-decomposed and case-folded; whitespace becomes one space."""
    return "".join(" " if c.isspace() else c for c in unicodedata.normalize("NFKD", ch.casefold()))


def reference_words(tok: Any, text: str, spans: list[tuple[int, int]], scheme: dict[str, Any]
                    ) -> tuple[list[int], list[int | None], list[bool], int]:
    """Token ids, each token's gold word, which tokens were inserted, and how many tokens straddle words."""
    ids = list(tok(text)["input_ids"])
    plain = list(tok(text, add_special_tokens=False)["input_ids"])
    offset = next((k for k in range(len(ids) - len(plain) + 1) if ids[k : k + len(plain)] == plain), None)
    if offset is None:
        raise ReferenceMismatch("the ids without special tokens are not a run of the ids with them")
    inserted = [not (offset <= i < offset + len(plain)) for i in range(len(ids))]
    tokens = tok.convert_ids_to_tokens(ids)
    # the token stream: one element per character (with the tokens it came from) or per unknown token
    elements: list[tuple[str | None, frozenset[int]]] = []
    pending: list[tuple[int, bytes]] = []

    def flush() -> None:
        elements.extend((_key(ch), owners) for ch, owners in _utf8_chars(pending))
        pending.clear()

    for i, (token, token_id) in enumerate(zip(tokens, ids, strict=True)):
        if inserted[i]:
            continue
        surface = _surface(str(token), token_id, scheme)
        if surface is None:
            flush()
            elements.append((None, frozenset({i})))
        else:
            pending.append((i, surface))
    flush()
    subject, back = [], []
    for p, ch in enumerate(text):
        for k in ch if ch.isspace() else _key(ch):
            subject.append(k)
            back.append(p)
    optional = sorted({k for k in subject if unicodedata.category(k) in _OPTIONAL_CATEGORIES})
    opt_class = f"[{''.join(re.escape(c) for c in optional)}]" if optional else ""
    opt = f"{opt_class}*?" if optional else ""
    # Text whitespace may lie only at token boundaries: required (\s+, or a deleted format character) where
    # the surfaces have whitespace after some text, optional (\s*) elsewhere (WordPiece drops it; the leading
    # '▁' of SentencePiece stands for none). One group per character or unknown token, so skipped optional
    # characters are attributed to no token. An unknown WordPiece token is one pre-token (no whitespace); an
    # unknown piece may hold whitespace its tokenizer does not split on (DeBERTa: U+3000), never ASCII's.
    wildcard = r"\S+?" if scheme["wordpiece_prefix"] else r"[^ \t\n\r\f\v]+?"
    deletable = "".join(re.escape(c) for c in optional if unicodedata.category(c) in ("Cc", "Cf"))
    space_re = rf"[\s{deletable}]+"  # T5's normaliser turns U+200B into '▁'
    parts, groups = [], []
    previous: frozenset[int] | None = None
    started = space = False
    for key, owners in elements:
        literal = "" if key is None else "".join(c for c in key if not c.isspace())
        space = space or (key is not None and literal != key)
        if key is not None and not literal:
            continue
        if owners != previous or key is None or space:
            parts.append(opt + space_re if space and started else rf"{opt}\s*")
            space = False
        previous = owners
        started = True
        if key is None:
            parts.append(f"{opt}({wildcard})")
            groups.append(owners)
            previous = None
            continue
        for c in literal:
            parts.append(f"{opt}({re.escape(c)})")
            groups.append(owners)
    parts.append(rf"{opt}\s*{opt}")
    match = re.fullmatch("".join(parts), "".join(subject), flags=re.DOTALL)
    if match is None:
        raise ReferenceMismatch("the token surfaces do not match the text")
    char_word = [None] * len(text)
    for w, (s, e) in enumerate(spans):
        char_word[s:e] = [w] * (e - s)
    owned: list[set[int]] = [set() for _ in ids]
    for g, owners in enumerate(groups, 1):
        for j in range(*match.span(g)):
            for t in owners:
                owned[t].add(back[j])
    gold: list[int | None] = []
    straddling = 0
    for chars in owned:
        words = sorted({char_word[p] for p in chars if char_word[p] is not None})
        gold.append(words[0] if words else None)
        straddling += len(words) > 1
    return ids, gold, inserted, straddling


# ---------------------------------------------------------------------------------------------------------
# Measurement


def measure(tok: Any, items: list[dict[str, Any]], method: str = "auto") -> dict[str, Any]:
    """Token accuracy of `word_alignment(tok, text, method=method)` against the reference, over all texts."""
    from adapters.alignment import word_alignment

    scheme = _scheme(tok)
    total = correct = whitespace_tokens = whitespace_ok = straddling = 0
    per_cat: dict[str, list[int]] = {}
    failures: list[dict[str, Any]] = []
    failure_kinds: Counter[str] = Counter()
    reference_failures: list[dict[str, str]] = []
    words_total = 0
    words_unmapped: list[dict[str, Any]] = []
    dropped_by_tokenizer = 0
    methods: Counter[str] = Counter()
    for item in items:
        text, spans = item["text"], item["spans"]
        words_total += len(spans)
        try:
            ids, gold, inserted, straddle = reference_words(tok, text, spans, scheme)
        except ReferenceMismatch as exc:
            reference_failures.append({"id": item["id"], "error": str(exc)})
            continue
        straddling += straddle
        al = word_alignment(tok, text, method=method)
        methods[al.method] += 1
        if list(al.input_ids) != ids:
            reference_failures.append({"id": item["id"], "error": "word_alignment encoded other ids"})
            continue
        cat = per_cat.setdefault(item["category"], [0, 0])
        for i, (pred, want) in enumerate(zip(al.token_to_word, gold, strict=True)):
            if inserted[i]:
                continue
            total += 1
            cat[1] += 1
            whitespace_tokens += want is None
            if pred == want:
                correct += 1
                whitespace_ok += want is None
                cat[0] += 1
                continue
            kind = ("word_for_whitespace" if want is None else "none_for_word" if pred is None
                    else "wrong_word")
            failure_kinds[kind] += 1
            if len(failures) < FAILURE_SAMPLE:
                failures.append({"id": item["id"], "token": al.tokens[i], "position": i, "predicted": pred,
                                 "gold": want, "kind": kind})
        reachable = {w for w in gold if w is not None}
        for w in al.words_without_tokens:
            dropped_by_tokenizer += w not in reachable
            words_unmapped.append({"id": item["id"], "word": al.words[w], "no_token_in_reference": w not in reachable})
    return {
        "accuracy": correct / total if total else None,
        "accuracy_word_tokens": ((correct - whitespace_ok) / (total - whitespace_tokens)
                                 if total > whitespace_tokens else None),
        "tokens": total,
        "correct": correct,
        "whitespace_only_tokens": whitespace_tokens,
        "straddling_tokens": straddling,
        "per_category": {c: round(ok / n, 6) if n else None for c, (ok, n) in sorted(per_cat.items())},
        "per_category_tokens": {c: n for c, (_, n) in sorted(per_cat.items())},
        "failure_kinds": dict(failure_kinds),
        "failures_sample": failures,
        "words": words_total,
        "words_without_tokens": len(words_unmapped),
        "words_without_tokens_also_in_reference": dropped_by_tokenizer,
        "words_without_tokens_sample": words_unmapped[:FAILURE_SAMPLE],
        "reference_failures": reference_failures,
        "methods": dict(methods),
    }


def test_token_alignment(benchmark, nm_model, nm_registry, nm_record):
    from transformers import AutoTokenizer

    from adapters.sources import resolve_source

    config = nm_registry.get_model_config(nm_model)
    src = resolve_source(nm_model, nm_registry, **load_options(nm_registry, nm_model))
    info = {"name": nm_model, "family": config.family.value, "weights": src.weights}
    tok = AutoTokenizer.from_pretrained(src.location)
    items = load_set()

    def run() -> tuple[dict[str, Any], dict[str, Any]]:
        return measure(tok, items, "auto"), measure(tok, items, "decode")

    main, decode = benchmark.pedantic(run, rounds=1, iterations=1)
    error = None
    if main["reference_failures"]:
        error = f"reference could not align {len(main['reference_failures'])} texts: {main['reference_failures']}"
    extra = {k: v for k, v in main.items() if k not in ("accuracy", "tokens")}
    provenance = (src.provenance or {}).get("tokenizer") or {}  # zoo checkpoints say what their tokenizer is
    extra.update(
        tokenizer_class=type(tok).__name__,
        tokenizer_source=src.origin,
        tokenizer_real_vocabulary=provenance.get("real_vocabulary") if isinstance(provenance, dict) else None,
        tokenizer_kind=config.tokenizer,
        word_errors=main["words_without_tokens"],
        decode_method={k: decode[k] for k in ("accuracy", "per_category", "failure_kinds", "failures_sample",
                                               "words_without_tokens")},
    )
    record = nm_record(
        "alignment", info, "token_alignment", main["accuracy"], "fraction", error=error,
        workload={"name": "alignment_set", "texts": len(items), "tokens": main["tokens"],
                  "words": main["words"]},
        extra=extra,
    )
    check_verdict(record)
