"""harness.peers on tiny models: skip reasons when a peer is missing, values against HF, the verdict rule, the
records and the side-by-side table (and its escaping in the report)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from harness import peers
from harness import report as report_mod
from harness.collate import load_runs
from harness.render import html_document, md_document
from harness.report import build_report
from harness.results import Run
from harness.targets import load_targets
from harness.timing import stats_from_samples
from tests.tiny import loaded_tiny

TEXTS = ["hello world", "the cat sat on the mat and the dog sat on it"]


@pytest.fixture(scope="module")
def loaded(tiny_dirs):
    with loaded_tiny(tiny_dirs, ("gpt2", "bert", "llama", "t5")) as adapters:
        yield adapters


def nothing_installed(_name: str) -> None:
    return None


def test_missing_peer_names_the_package_and_the_extra():
    assert peers.missing_peer("neuronmap", nothing_installed) is None
    assert peers.missing_peer("hf_hidden_states", nothing_installed) is None
    reason = peers.missing_peer("transformer_lens_stop_at_layer", nothing_installed)
    assert "transformer-lens is not installed" in reason and ".[peers]" in reason
    assert "nnsight is not installed" in peers.missing_peer("nnsight_stop", nothing_installed)
    assert peers.missing_peer("nnsight", lambda name: object()) is None
    with pytest.raises(ValueError, match="unknown tool"):
        peers.missing_peer("pyvene")


def test_plan_skips_missing_peers_and_encoder_decoders(loaded):
    gpt2 = loaded["gpt2"]
    tools, skipped = peers.plan(gpt2.model, gpt2.mapping, nothing_installed)
    assert tools == ["neuronmap", "hf_hidden_states"]
    assert set(skipped) == {"transformer_lens", "transformer_lens_stop_at_layer", "nnsight", "nnsight_stop"}
    t5 = loaded["t5"]
    tools, skipped = peers.plan(t5.model, t5.mapping, nothing_installed)
    assert "encoder-decoder" in skipped["neuronmap"] and not tools


def fake_timer(fake: dict[str, list[float]]) -> Any:
    def timer(fns, *, rounds, warmup):
        return {name: stats_from_samples(fake.get(name, [1.0] * rounds)) for name in fns}

    return timer


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("kind", ["gpt2", "bert", "llama"])
def test_side_by_side_values_match_hf_and_ratios_pair(loaded, kind):
    """Every runnable tool on a tiny model (peers where installed): values equal HF's, ratios from known timings."""
    adapter = loaded[kind]
    adapter.extract_activations(TEXTS, [0])  # transformers adds hooks of its own on a first call,
    with torch.no_grad():  # and on the first call that asks for hidden states
        adapter.model(**adapter.tokenize(TEXTS), output_hidden_states=True)
    hooks = hook_count(adapter.model)
    tools, _ = peers.plan(adapter.model, adapter.mapping)
    n = adapter.mapping.num_layers
    layers = sorted({0, n - 1})
    checkpoint = peers.checkpoint_of(adapter)
    loaded_peers = {g: peers.load_peer(g, checkpoint) for g in peers.PEERS
                    if any(t in tools for t in peers.GROUPS[g])}
    fake = {peers.BARE: [1.0, 2.0, 1.0], "neuronmap": [0.5, 1.0, 0.7]}
    out = peers.side_by_side(adapter, TEXTS, layers, loaded_peers, tools, rounds=3, warmup=1,
                             timer=fake_timer(fake))
    assert hook_count(adapter.model) == hooks
    assert set(out["tools"]) == set(tools)
    nm = out["tools"]["neuronmap"]
    assert nm["ratio"] == pytest.approx(0.7 / 1.0)
    assert nm["paired"]["samples"] == pytest.approx([0.5, 0.5, 0.7])
    assert nm["stopped_early"] is True
    for tool, row in out["tools"].items():
        # TransformerLens reimplements some arithmetic (rotary, attention): close, not bit-equal
        limit = 1e-4 if tool.startswith("transformer_lens") else 1e-5
        assert row["max_abs_diff"] is not None and row["max_abs_diff"] <= limit, (tool, row["max_abs_diff"])
        assert row["bytes_returned"] > 0
    hf_layers = out["tools"]["hf_hidden_states"]["compared_layers"]
    # GPT-2 and LLaMA apply a final norm to hidden_states[L]; BERT has none
    assert hf_layers == ([0] if kind in ("gpt2", "llama") else layers)
    recs = peers.timing_records("seed", out)
    assert {r["workload"]["tool"] for r in recs} == set(tools)
    assert {r["metric"] for r in recs} == {"overhead_ratio", "max_abs_diff"}


def test_lowest_verdict_strict_tie_and_loss():
    rows = {"neuronmap": {"value": 0.70, "lo": 0.68, "hi": 0.72},
            "nnsight_stop": {"value": 0.75, "lo": 0.70, "hi": 0.80}}
    v = peers.lowest_verdict(rows)
    assert v["lowest"] and v["strictly_lowest"] and v["best_other"] == "nnsight_stop"
    rows["nnsight_stop"] = {"value": 0.69, "lo": 0.66, "hi": 0.71}
    v = peers.lowest_verdict(rows)
    assert v["lowest"] and v["tie_within_noise"] and not v["strictly_lowest"]
    rows["nnsight_stop"] = {"value": 0.60, "lo": 0.58, "hi": 0.62}
    v = peers.lowest_verdict(rows)
    assert v["lowest"] is False and v["best_other_value"] == 0.60
    assert peers.lowest_verdict({"neuronmap": rows["neuronmap"]})["lowest"] is None


def test_verdict_record_is_not_measured_when_a_peer_is_missing():
    rows = {"neuronmap": {"value": 1.0, "lo": 1.0, "hi": 1.0}, "hf_hidden_states": {"value": 2.0, "lo": 2, "hi": 2}}
    rec = peers.verdict_record("neuronmap_lowest_overhead", "seed", rows, {}, "rule")
    assert rec["value"] == 1.0 and rec["workload"] == {"name": "seed", "tool": "neuronmap"}
    rec = peers.verdict_record("neuronmap_lowest_overhead", "seed", rows, {"nnsight": "not installed"}, "rule")
    assert rec["value"] is None and rec["extra"]["missing"] == {"nnsight": "not installed"}


def child(group: str = "transformer_lens") -> dict[str, Any]:
    mib = 1 << 20
    return {"group": group, "load_seconds": 1.5, "import_seconds": 3.0,
            "load_probe": {"method": "vmhwm", "delta_bytes": 400 * mib},
            "workloads": [{"name": "batch8x128", "method": "vmhwm",
                           "peaks": {peers.BARE: [100 * mib, 102 * mib], "transformer_lens": [150 * mib, 151 * mib],
                                     "transformer_lens_stop_at_layer": [90 * mib, 90 * mib]},
                           "bytes_returned": {"transformer_lens": 10 * mib, "transformer_lens_stop_at_layer": mib}}]}


def test_memory_rows_and_records():
    mib = 1 << 20
    rows = peers.memory_rows(child())["batch8x128"]
    assert rows["transformer_lens"]["value"] == pytest.approx(150.5 * mib - 101 * mib)
    assert rows["transformer_lens"]["lo"] == 48 * mib and rows["transformer_lens"]["hi"] == 51 * mib
    assert rows["transformer_lens_stop_at_layer"]["value"] == pytest.approx(-11 * mib)
    shapes = {"batch8x128": {"texts": 8, "seq_len": 128, "layers": [0, 6, 11]}}
    recs = peers.memory_records(child(), shapes)
    by = {(r["metric"], r["workload"]["tool"]): r for r in recs}
    assert by[("extra_peak_memory", "transformer_lens")]["value"] == pytest.approx(49.5 * mib / 1e9)
    assert by[("extra_peak_memory", "transformer_lens")]["extra"]["extra_per_byte_returned"] == pytest.approx(4.95)
    assert by[("load_time", "transformer_lens")]["value"] == 1.5
    assert by[("load_peak_memory", "transformer_lens")]["value"] == pytest.approx(400 * mib / 1e9)


def _run_with_peer_records(tmp_path: Path, model: str) -> Path:
    run = Run.start("pytest suites/test_peers.py", tmp_path, load_targets(), environment={})
    out = {"texts": 8, "seq_len": 128, "layers": [0, 6, 11], "rounds": 3, "warmup": 1, "order": [],
           "definitions": {"max_abs_diff": "d"},
           "timings": {peers.BARE: {"median": 1.0}, "tokenize": {"median": 0.01}},
           "tools": {t: {"ratio": r, "ratio_of_mins": r, "median_s": r, "iqr_s": 0.1, "stopped_early": True,
                         "bytes_returned": 10, "max_abs_diff": 0.0, "compared_layers": [0, 6, 11],
                         "paired": stats_from_samples([r * 0.9, r, r * 1.1]).to_dict()}
                     for t, r in (("nnsight", 1.2), ("neuronmap", 0.7), ("transformer_lens", 1.5))}}
    common = {"model": model, "family": "gpt", "weights": "synthetic", "device": "cpu", "dtype": "float32"}
    recs = [*peers.timing_records("batch8x128", out),
            *peers.memory_records(child(), {"batch8x128": {"texts": 8, "seq_len": 128, "layers": [0, 6, 11]}}),
            peers.verdict_record("neuronmap_lowest_overhead", "batch8x128", peers.overhead_verdict_rows(out), {}, "r")]
    for r in recs:
        run.record(suite="peers", metric=r["metric"], value=r["value"], unit=r["unit"], workload=r["workload"],
                   stats=r.get("stats"), extra=r.get("extra"), **common)
    run.record(suite="peers", metric="overhead_ratio", value=None, unit="ratio",
               workload={"name": "batch8x128", "tool": "nnsight_stop"}, extra={"reason": "nnsight <missing>"},
               **common)
    return run.finish()


def test_side_by_side_rows_order_and_loads(tmp_path: Path):
    path = _run_with_peer_records(tmp_path, "gpt2")
    recs = [r.to_dict() if hasattr(r, "to_dict") else r for r in load_runs([path])[0]["records"]]
    rows = peers.side_by_side_rows(recs)
    assert [r["tool"] for r in rows] == ["neuronmap", "transformer_lens", "transformer_lens_stop_at_layer",
                                         "nnsight", "nnsight_stop"]
    tl = rows[1]
    assert tl["overhead_ratio"] == 1.5 and tl["load_time"] == 1.5 and tl["extra_peak_memory"] > 0
    assert rows[2]["load_time"] == 1.5  # the stop row shares its peer's load
    assert rows[2]["overhead_ratio"] is None and rows[2]["extra_peak_memory"] < 0
    assert rows[4]["note"] == "nnsight <missing>"


def test_report_section_is_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("bar_chart", "scaling_chart", "confusion_chart", "comparison_chart", "trend_chart"):
        monkeypatch.setattr(report_mod.plots, name, lambda *a, **k: None)
    path = _run_with_peer_records(tmp_path, "<script>alert(1)</script>")
    intro, sections, _ = build_report(load_runs([path]))
    section = next(s for s in sections if s.id == "peers")
    md = md_document("T", [section])
    page = html_document("T", intro, sections)
    assert "transformer_lens_stop_at_layer" in md and "0.7" in md
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert "<script>alert" not in md
    assert "nnsight &lt;missing&gt;" in page  # the reason, as hover text
    assert not any(s.id == "other" and "overhead_ratio" in md_document("T", [s]) for s in sections)


def test_pooled_memory_band_takes_the_bare_spread_of_every_process():
    """The bare forward is the same call in every child: its spread across children widens each band."""
    mib = 1 << 20
    a = child("transformer_lens")
    b = {**child("neuronmap"), "workloads": [{"name": "batch8x128", "method": "vmhwm",
                                              "peaks": {peers.BARE: [98 * mib, 99 * mib], "neuronmap": [89 * mib] * 2},
                                              "bytes_returned": {"neuronmap": mib}}]}
    rows = peers.pooled_memory_rows([a, b])["batch8x128"]
    assert rows["neuronmap"]["value"] == pytest.approx(89 * mib - 98.5 * mib)  # the value stays per process
    assert rows["neuronmap"]["lo"] == 89 * mib - 102 * mib and rows["neuronmap"]["hi"] == 89 * mib - 98 * mib
    v = peers.lowest_verdict(rows)
    # -9.5 MiB vs the stop row's -11 MiB: lower only within the bare forward's 4 MiB spread across processes
    assert v["best_other"] == "transformer_lens_stop_at_layer" and v["tie_within_noise"] and v["lowest"]
