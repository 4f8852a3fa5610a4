"""Context length: extraction at the model's full position range (capped at 2,048 tokens).

Stated target for GPT models: "Support for 1024-2048 token sequences"; the figure is the longest sequence
extracted successfully, with its latency.
"""

from __future__ import annotations

import warnings

import pytest

from harness.timing import measure
from harness.workloads import texts_of_tokens
from suites.common import check_verdict

pytestmark = pytest.mark.nm_extended  # full profile (harness/plugin.py --nm-profile)

CAP = 2048


def longest_extraction(adapter) -> dict:
    limit = min(adapter.max_positions() or CAP, CAP)
    # a text a little longer than the limit: the adapter truncates it to exactly `limit` tokens (documented)
    texts = list(texts_of_tokens(adapter.tokenizer, 1, limit + 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        acts = adapter.extract_activations(texts, [-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        stats = measure(lambda: adapter.extract_activations(texts, [-1]), rounds=2, warmup=0)
    return {"tokens": int(acts.attention_mask.sum()), "limit": limit, "stats": stats.to_dict()}


def test_context_length(benchmark, nm_model, nm_loaded, nm_record):
    adapter = nm_loaded.get(nm_model)
    out = benchmark.pedantic(longest_extraction, args=(adapter,), rounds=1, iterations=1)
    workload = {"name": "longest-context", "texts": 1, "tokens_per_text": out["tokens"], "limit": out["limit"],
                "layers": [-1]}
    record = nm_record("context", adapter.info(), "max_context_tokens", out["tokens"], "tokens",
                       workload=workload, extra={"latency": out["stats"]})
    nm_record("context", adapter.info(), "extraction_latency", out["stats"]["median"], "s", workload=workload,
              stats=out["stats"])
    check_verdict(record)
