"""The coverage sweep on a handful of model types that exercise the generic mapping and capture paths."""

from __future__ import annotations

import pytest
import transformers

from harness.coverage import COUNTED, _non_text_inputs, covered, model_types, summarize, sweep

# each one stands for a shape of model the universal mapping must handle without a table
TYPES = {
    "gpt2": "plain decoder, final norm",
    "t5": "encoder-decoder",
    "xlm": "blocks written as sibling ModuleLists",
    "fsmt": "time-first blocks ([seq, batch, hidden])",
    "lfm2": "final norm named for embeddings, run after the blocks",
    "olmo_hybrid": "stack of two block classes",
    "ibert": "attention weights in nested output tuples",
    "xlnet": "attention weights as [query, key, batch, heads]; a config built through attribute aliases",
    "whisper": "the decoder alone of an encoder-decoder (a causal-LM class)",
    "fnet": "a forward that takes no attention mask",
}


SHIPPED = {s.model_type: s for s in model_types()}  # what the installed transformers release has
VERSION = transformers.__version__


def _non_text_type() -> str:
    """A type of the mappings whose forward takes pixels or audio (fuyu in 5.x), whichever the release has."""
    for spec in SHIPPED.values():
        cls = getattr(transformers, spec.class_name, None)
        if cls is not None and _non_text_inputs(cls):
            return spec.model_type
    raise AssertionError(f"transformers {VERSION} maps no non-text model in the text mappings")


NON_TEXT = _non_text_type()


@pytest.fixture(scope="module")
def rows():
    return {r["model_type"]: r for r in sweep([*(t for t in TYPES if t in SHIPPED), NON_TEXT], timeout_per_type=60)}


def test_mapping_names_every_release_s_text_types():
    # 4.51 maps ~150 causal/masked/seq2seq types, 5.25 ~260
    assert len(SHIPPED) > 120 and {"gpt2", "bert", "t5", "llama", "bart"} <= set(SHIPPED)


@pytest.mark.parametrize("model_type", list(TYPES))
def test_type_is_covered(rows, model_type):
    if model_type not in SHIPPED:
        pytest.skip(f"transformers {VERSION} does not ship {model_type}")
    row = rows[model_type]
    assert row["built"], row["build_error"]
    assert covered(row), row["failures"]
    assert all(row["checks"][k]["status"] in ("pass", "not_applicable") for k in COUNTED)


def test_non_text_model_is_listed_not_counted(rows):
    row = rows[NON_TEXT]
    assert not row["built"] and "not a text model" in row["build_error"]
    summary = summarize(list(rows.values()))
    assert NON_TEXT in summary["did_not_build"]
    assert summary["built"] == len(rows) - 1 and summary["coverage_fraction"] == 1.0
