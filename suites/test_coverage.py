"""Coverage sweep: every text model type of the installed transformers, built tiny, through NeuronMap.

One test: `harness.coverage.sweep()` over the causal-LM, masked-LM and seq2seq auto mappings (~250 types in
transformers 5.24), each built at tiny size with seeded random weights, saved, loaded back through
`MultiModelAnalyzer.load_model(folder)` and checked for detection, mapping, final norm, extraction parity,
padded batches, hook hygiene and attention. It records `coverage_fraction` (built types whose every
applicable check holds, detection aside) and `detection_agreement_fraction`, with every failure and its
reason, every not-applicable check and every type that did not build in the record's `extra`.

It runs only when asked — `--nm-models all` or `NEURONMAP_COVERAGE=1` — so the default main job stays short
(the sweep takes about a minute here, importing ~180 modeling files).
"""

from __future__ import annotations

import os

import pytest

from suites.common import check_verdict

COVERAGE_GOAL = 0.90  # issue 3, item 7: "Goal ≥ 90% of those that build" (until targets.toml states it)
SKIP_REASON = ("coverage sweep of every transformers text model type (~250 tiny builds, about a minute) runs "
               "only with --nm-models all or NEURONMAP_COVERAGE=1")


def _enabled(config: pytest.Config) -> bool:
    return os.environ.get("NEURONMAP_COVERAGE", "").strip() not in ("", "0") or \
        config.getoption("nm_models") == "all"


def test_coverage_sweep(benchmark, nm_run, request):
    if not _enabled(request.config):
        pytest.skip(SKIP_REASON)
    import transformers

    from harness.coverage import TEXTS, format_summary, summarize, sweep

    rows = benchmark.pedantic(sweep, rounds=1, iterations=1)
    summary = summarize(rows)
    workload = {"model_types": summary["types"], "built": summary["built"], "texts": TEXTS,
                "size": "tiny (hidden 32, 3 encoder / 2 decoder blocks, vocab 128)", "weights_seed": 0,
                "transformers": transformers.__version__,
                "mappings": ["causal-LM", "masked-LM", "seq2seq"]}
    common = {"suite": "coverage", "model": None, "weights": "synthetic", "device": "cpu", "dtype": "float32",
              "workload": workload}
    record = nm_run.record(
        **common, metric="coverage_fraction", value=summary["coverage_fraction"], unit="fraction",
        extra={"covered": summary["covered"], "failures": summary["failures"],
               "not_applicable": summary["not_applicable"], "did_not_build": summary["did_not_build"],
               "rows": [{k: r.get(k) for k in ("model_type", "task", "class", "built", "adapter", "family",
                                               "checks", "notes", "build_error", "seconds", "max_abs_diff")}
                        for r in rows],
               "unnamed_types": summary["unnamed_types"]},
    )
    nm_run.record(**common, metric="detection_agreement_fraction", value=summary["detection_agreement_fraction"],
                  unit="fraction", extra={"disagreements": summary["detection_disagreements"]})
    print(format_summary(summary))
    check_verdict(record)
    if record.target is None:
        assert (summary["coverage_fraction"] or 0) >= COVERAGE_GOAL, (
            f"coverage {summary['covered']}/{summary['built']} = {summary['coverage_fraction']:.1%} is below "
            f"the goal of {COVERAGE_GOAL:.0%}\n" + format_summary(summary))
