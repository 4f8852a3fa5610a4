"""The coverage sweep on a handful of model types that exercise the generic mapping and capture paths."""

from __future__ import annotations

import pytest

from harness.coverage import COUNTED, covered, model_types, summarize, sweep

# each one stands for a shape of model the universal mapping must handle without a table
TYPES = {
    "gpt2": "plain decoder, final norm",
    "t5": "encoder-decoder",
    "xlm": "blocks written as sibling ModuleLists",
    "fsmt": "time-first blocks ([seq, batch, hidden])",
    "lfm2": "final norm named for embeddings, run after the blocks",
    "olmo_hybrid": "stack of two block classes",
    "ibert": "attention weights in nested output tuples",
}


@pytest.fixture(scope="module")
def rows():
    return {r["model_type"]: r for r in sweep([*TYPES, "fuyu"], timeout_per_type=60)}


def test_mapping_names_about_250_types():
    types = {s.model_type for s in model_types()}
    assert len(types) > 150 and {"gpt2", "bert", "t5", "llama", "bart"} <= types


@pytest.mark.parametrize("model_type", list(TYPES))
def test_type_is_covered(rows, model_type):
    row = rows[model_type]
    assert row["built"], row["build_error"]
    assert covered(row), row["failures"]
    assert all(row["checks"][k]["status"] in ("pass", "not_applicable") for k in COUNTED)


def test_non_text_model_is_listed_not_counted(rows):
    row = rows["fuyu"]
    assert not row["built"] and "not a text model" in row["build_error"]
    summary = summarize(list(rows.values()))
    assert "fuyu" in summary["did_not_build"]
    assert summary["built"] == len(TYPES) and summary["coverage_fraction"] == 1.0
