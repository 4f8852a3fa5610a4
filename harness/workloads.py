"""Workloads: the texts and layers a measurement runs, described in every record so figures are comparable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEXTS_FILE = Path(__file__).resolve().parent.parent / "suites" / "data" / "texts.txt"
SEED_TEXTS = ("Hello world",)
SEED_LAYERS_12 = (0, 6, 11)


@dataclass(frozen=True)
class Workload:
    """What one measurement runs: `name` is stable across runs (the gate compares like with like)."""

    name: str
    texts: tuple[str, ...]
    layers: tuple[int, ...]

    def describe(self, tokens_per_text: int | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "texts": len(self.texts),
            "tokens_per_text": tokens_per_text,
            "layers": list(self.layers),
        }


def seed_layers(num_layers: int) -> tuple[int, ...]:
    """The design's [0, 6, 11] for 12 blocks; first, middle and last block for other depths."""
    if num_layers == 12:
        return SEED_LAYERS_12
    return tuple(sorted({0, num_layers // 2, num_layers - 1}))


def corpus_words() -> list[str]:
    return TEXTS_FILE.read_text(encoding="utf-8").split()


def texts_of_tokens(tokenizer: Any, count: int, tokens: int) -> tuple[str, ...]:
    """`count` distinct texts, each as close to `tokens` tokens (specials included) as whole words allow."""
    words = corpus_words()
    out = []
    for i in range(count):
        start = (i * 37) % len(words)
        chosen: list[str] = []
        j = start
        while True:
            candidate = [*chosen, words[j % len(words)]]
            if len(tokenizer(" ".join(candidate))["input_ids"]) > tokens:
                break
            chosen = candidate
            j += 1
        out.append(" ".join(chosen))
    return tuple(out)


def standard_workloads(tokenizer: Any, num_layers: int, max_positions: int | None) -> list[Workload]:
    """The seed workload (["Hello world"], layers [0, 6, 11]) and 8 texts x 128 tokens, same layers."""
    layers = seed_layers(num_layers)
    tokens = 128 if max_positions is None else min(128, max_positions)
    return [
        Workload("seed", SEED_TEXTS, layers),
        Workload("batch8x128", texts_of_tokens(tokenizer, 8, tokens), layers),
    ]


WORKLOAD_NAMES = ("seed", "batch8x128")


def workload_by_name(name: str, tokenizer: Any, num_layers: int, max_positions: int | None) -> Workload:
    for w in standard_workloads(tokenizer, num_layers, max_positions):
        if w.name == name:
            return w
    raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOAD_NAMES)}")
