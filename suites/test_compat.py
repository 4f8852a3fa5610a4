"""The compatibility matrix's checks for the installed transformers release (`tox -m compat` runs one per release).

Fixtures (`harness.compat`): tiny checkpoints of 22 common architectures, one folder each, built once by the
first release that runs and reused by every other, so the matrix compares one checkpoint across releases.
Per fixture: NeuronMap's blocks against transformers' `output_hidden_states` (exact: <= 1e-5), block 0's
attention pattern (rows sum to 1 over real keys; causal for decoders), the inputs the forward got, and the
activations (so the report can compare releases). Peers: the TransformerLens and nnsight releases that
installed beside this transformers, driven on the gpt2 fixture, against HF.

An extended suite: it runs when named (`pytest suites/test_compat.py --benchmark-only`) or in the full profile.
"""

from __future__ import annotations

import pytest

from suites.common import check_verdict

pytestmark = pytest.mark.nm_extended

UNIT = "abs"  # largest absolute difference, in the activations' own units


def _record(nm_run, row: dict, metric: str, value: float | None, workload: dict, error: str | None = None,
            extra: dict | None = None):
    return nm_run.record(suite="compat", model=None, family=None, weights="synthetic", device="cpu",
                         dtype="float32", metric=metric, value=value, unit=UNIT, workload=workload, error=error,
                         extra=extra)


def test_fixtures_match_transformers(benchmark, nm_run):
    """Every fixture this release ships: exact parity with transformers and sound attention patterns."""
    import transformers

    from harness.compat import ATOL, TEXTS, check_all, exact

    rows = benchmark.pedantic(check_all, rounds=1, iterations=1)
    failed = []
    for row in rows:
        workload = {"name": "compat_fixture", "model_type": row["model_type"], "texts": list(TEXTS),
                    "size": "tiny (hidden 32, 2 blocks per stack, vocab 128)"}
        if row.get("not_shipped"):
            _record(nm_run, row, "fixture_max_abs_diff", None, workload,
                    extra={"not_shipped": True, "transformers": transformers.__version__})
            continue
        extra = {k: row.get(k) for k in ("task", "fixture_sha", "built_with", "attention", "forward_inputs",
                                         "tokenizer_outputs", "stage", "activations")}
        extra["exact"] = exact(row)
        record = _record(nm_run, row, "fixture_max_abs_diff", row.get("max_abs_diff"), workload,
                         error=row.get("error"), extra=extra)
        if not extra["exact"]:
            failed.append(f"{row['model_type']}: {record.error or f'max abs diff {record.value} (<= {ATOL})'}; "
                          f"attention {row.get('attention')}")
    assert not failed, "fixtures that differ from transformers on this release:\n" + "\n".join(failed)


def test_peers_on_this_release(benchmark, nm_run):
    """TransformerLens and nnsight, where a release of each installed beside this transformers: their block
    outputs on the gpt2 fixture against transformers' hidden states (what a user of either would get)."""
    from harness.compat_peers import PEER_TOOLS, check_peers

    rows = benchmark.pedantic(check_peers, rounds=1, iterations=1)
    for tool in PEER_TOOLS:
        row = rows[tool]
        workload = {"name": "compat_peer", "tool": tool, "model_type": row.get("model_type")}
        record = _record(nm_run, row, "peer_max_abs_diff", row.get("max_abs_diff"), workload,
                         error=row.get("error"), extra={k: v for k, v in row.items() if k != "max_abs_diff"})
        if row.get("installed"):
            check_verdict(record)
