"""Unit tests of the compatibility matrix: harness.compat_matrix (the data) and harness.report_compat (the section).

Synthetic results files for three transformers releases (4.51.3, 4.57.6, 5.25.0, written out of start order,
plus an older 5.25.0 run that the newest one supersedes): model types missing from older releases, one cell
that differs, one error whose message carries HTML, one type that does not build, fixtures on equal and
unequal checkpoint bytes, peers installed or not. No model runs.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.collate import load_runs
from harness.compat_matrix import build_matrix, cell_text, coverage_cell, format_matrix, sci
from harness.coverage import COUNTED, covered
from harness.render import html_document, md_document
from harness.report import build_report, write_report
from harness.report_compat import compat_section
from harness.results import Run, atomic_write_json
from harness.targets import load_targets

EVIL = '<script>alert("x")</script>'
RELEASES = ("4.51.3", "4.57.6", "5.25.0")
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _row(t: str, *, diff: float | None = 0.0, fail: dict[str, str] | None = None, built: bool = True,
         build_error: str | None = None, detection: str = "pass") -> dict[str, Any]:
    if not built:
        return {"model_type": t, "task": "causal", "class": None, "built": False, "checks": {},
                "build_error": build_error, "max_abs_diff": None}
    checks = {"load": {"status": "pass", "reason": None}, "detection": {"status": detection, "reason": "got bert"},
              **{k: {"status": "pass", "reason": None} for k in COUNTED}}
    for k, reason in (fail or {}).items():
        checks[k] = {"status": "fail", "reason": reason}
    return {"model_type": t, "task": "causal", "class": f"{t}ForCausalLM", "built": True, "adapter": "x",
            "family": {"config": "gpt", "module": "gpt", "expected": "gpt", "source": "table"}, "checks": checks,
            "notes": [], "build_error": None, "seconds": 0.1, "max_abs_diff": diff}


COVERAGE = {
    "4.51.3": [_row("gpt2", detection="fail"), _row("llama"), _row("bert"), _row("t5", diff=None),
               _row("opt", diff=2e-5)],
    "4.57.6": [_row("gpt2"), _row("llama", diff=3e-4, fail={"extraction": "decoder.0: max diff 0.0003"}),
               _row("bert"), _row("t5", diff=None), _row("opt"), _row("qwen3")],
    "5.25.0": [_row("gpt2"), _row("llama"), _row("bert", fail={"hooks": f"RuntimeError: {EVIL} left 2 hooks"}),
               _row("t5", diff=None), _row("opt"), _row("qwen3"),
               _row("gemma3n", built=False, build_error="not a text model: pixel_values")],
}


def _acts(scale: float = 0.0) -> dict[str, Any]:
    out = {}
    for layer in ("0", "1"):
        a = (np.arange(2 * 3 * 4, dtype="<f4").reshape(2, 3, 4) / 10).astype("<f4")
        if layer == "1":
            a[0, 0, 0] += scale
        out[layer] = {"shape": list(a.shape), "f32": base64.b64encode(a.astype("<f4").tobytes()).decode("ascii")}
    return out


def _fixture(t: str, sha: str | None, *, value: float | None = 0.0, acts: dict | None = None, error: str | None = None,
             not_shipped: bool = False) -> dict[str, Any]:
    if not_shipped:
        return {"model_type": t, "value": None, "extra": {"not_shipped": True}}
    att = {"shape": [2, 4, 3, 3], "row_sum_max_error": 1e-7, "above_diagonal_max": 0.0, "causal_required": True,
           "ok": True}
    return {"model_type": t, "value": value, "error": error,
            "extra": {"task": "causal", "fixture_sha": sha, "built_with": "4.51.3", "attention": None if error else att,
                      "forward_inputs": ["attention_mask", "input_ids"], "tokenizer_outputs": ["input_ids"],
                      "stage": "load" if error else "done", "exact": error is None,
                      "activations": {} if error else (acts or _acts())}}


FIXTURES = {
    "4.51.3": [_fixture("gpt2", "aaa"), _fixture("bert", "bbb"),
               _fixture("llama", "ccc", value=None, error=f"ValueError: {EVIL}"), _fixture("qwen3", None,
                                                                                            not_shipped=True)],
    "4.57.6": [_fixture("gpt2", "aaa", acts=_acts(1e-3)), _fixture("bert", "bbb"), _fixture("llama", "ccc"),
               _fixture("qwen3", "ddd")],
    "5.25.0": [_fixture("gpt2", "aaa"), _fixture("bert", "BBB"), _fixture("llama", "ccc"),
               _fixture("qwen3", "ddd", value=4e-3)],
}
PEERS = {  # tool: {release: extra + value}
    "transformer_lens": {"4.51.3": {"installed": True, "version": "2.16.1", "api": "HookedTransformer", "v": 1e-6},
                         "4.57.6": {"installed": False, "reason": "no release fits transformers 4.57.6"},
                         "5.25.0": {"installed": True, "version": "4.0.0", "error": "RuntimeError: boom"}},
    "nnsight": {"4.51.3": {"installed": True, "version": "0.5.0", "api": "LanguageModel", "v": 0.0},
                "4.57.6": {"installed": True, "version": "0.5.0", "api": "LanguageModel", "v": 0.0},
                "5.25.0": {"installed": True, "version": "0.6.0", "api": "LanguageModel", "v": 2e-3}},
}
START = {"5.25.0": T0, "4.51.3": T0 + timedelta(hours=1), "4.57.6": T0 + timedelta(hours=2)}  # not release order
MINUTES = {"4.51.3": 3.0, "4.57.6": 4.5, "5.25.0": 2.0}


def _write(folder: Path, release: str, start: datetime, minutes: float, *, full: bool = True,
           coverage: list[dict] | None = None) -> Path:
    env = {"git": {"commit": "0123456789abcdef", "dirty": False}, "cpu": {"model": "Test CPU", "usable_cores": 2},
           "packages": {"torch": "2.13.0", "transformers": release}, "torch": {"threads": 2}, "gpus": None,
           "lock": {"file": f"/repo/constraints/transformers-{release[:4]}.txt", "sha256": "f" * 64, "pins": 40,
                    "matches": 39, "differs": {"numpy": {"locked": "2.2.0", "installed": "2.4.6"}}},
           "compat": {"transformers": release}}
    run = Run.start("pytest suites/ suites/test_compat.py --benchmark-only", folder, load_targets(), environment=env,
                    run_id=f"{start:%Y%m%dT%H%M%SZ}-{release.replace('.', '')}")
    run.started = start
    rows = COVERAGE[release] if coverage is None else coverage
    n_cov = sum(covered(r) for r in rows)
    n_built = sum(bool(r.get("built")) for r in rows)
    common = {"suite": "coverage", "model": None, "weights": "synthetic", "device": "cpu", "dtype": "float32",
              "workload": {"model_types": len(rows), "built": n_built, "transformers": release}}
    run.record(**common, metric="coverage_fraction", value=n_cov / n_built if n_built else None, unit="fraction",
               extra={"covered": n_cov, "rows": rows, "unnamed_types": []})
    run.record(**common, metric="detection_agreement_fraction", value=0.9, unit="fraction")
    if full:
        for f in FIXTURES[release]:
            run.record(suite="compat", model=None, weights="synthetic", device="cpu", dtype="float32",
                       metric="fixture_max_abs_diff", value=f["value"], unit="abs", error=f.get("error"),
                       workload={"name": "compat_fixture", "model_type": f["model_type"], "texts": ["a", "b"],
                                 "size": "tiny"}, extra=f["extra"])
        for tool, by_rel in PEERS.items():
            p = dict(by_rel[release])
            v = p.pop("v", None)
            run.record(suite="compat", model=None, metric="peer_max_abs_diff", value=v, unit="abs",
                       error=p.get("error"), workload={"name": "compat_peer", "tool": tool, "model_type": "gpt2"},
                       extra={"tool": tool, "model_type": "gpt2", **p})
        for tier, acc in (("name", 0.98), ("config", 0.99), ("module", 0.97)):
            run.record(suite="detection", model=None, metric=f"detection_accuracy_{tier}", value=acc, unit="fraction",
                       workload={"name": "labelled_set", "entries": 483})
        for model, v in (("gpt2", 1.0), ("bert-base-uncased", 0.75)):
            run.record(suite="api_consistency", model=model, family="gpt", metric="api_consistency", value=v,
                       unit="fraction")
    path = folder / f"{run.id}.json"
    atomic_write_json(path, run.to_dict(end=start + timedelta(minutes=minutes)))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compat")
    for rel in RELEASES:
        _write(root, rel, START[rel], MINUTES[rel])
    # an older run of 5.25.0 in which everything failed to build: the newer one stands for the release
    _write(root, "5.25.0", T0 - timedelta(days=1), 9.0, full=False,
           coverage=[_row(t, built=False, build_error="old") for t in ("gpt2", "llama", "bert")])
    return root


@pytest.fixture(scope="module")
def data(folder: Path) -> dict[str, Any]:
    return build_matrix(load_runs([folder]))


def _status(data: dict[str, Any], kind: str, t: str) -> list[str]:
    return [data[kind]["cells"][t][r]["status"] for r in data["releases"]]


# ---------------------------------------------------------------- the data


def test_releases_by_version_newest_run_each(data: dict[str, Any]) -> None:
    assert data["releases"] == list(RELEASES)
    assert data["summary"]["5.25.0"]["older_runs"] == 1
    assert data["summary"]["5.25.0"]["run_id"].startswith("20261201T100000Z")


def test_coverage_statuses(data: dict[str, Any]) -> None:
    assert _status(data, "coverage", "gpt2") == ["exact"] * 3  # a detection failure alone is not a problem
    assert _status(data, "coverage", "llama") == ["exact", "differs", "exact"]
    assert _status(data, "coverage", "bert") == ["exact", "exact", "error"]
    assert _status(data, "coverage", "t5") == ["exact"] * 3  # no transformers reference: exact
    assert _status(data, "coverage", "opt") == ["differs", "exact", "exact"]  # checks passed, 2e-5 > 1e-5
    assert _status(data, "coverage", "qwen3") == ["not shipped", "exact", "exact"]
    assert _status(data, "coverage", "gemma3n") == ["not shipped", "not shipped", "not built"]
    cells = data["coverage"]["cells"]
    assert cells["llama"]["4.57.6"]["value"] == pytest.approx(3e-4)
    assert cell_text(cells["llama"]["4.57.6"]) == "differs 3e-4"
    assert cells["bert"]["5.25.0"]["message"] == f"hooks: RuntimeError: {EVIL} left 2 hooks"
    assert cell_text(cells["bert"]["5.25.0"]).startswith("error: hooks: RuntimeError: <script>")
    assert cells["gemma3n"]["5.25.0"]["message"] == "not a text model: pixel_values"
    # problems first: errors, then differences, then no build; the rest by name
    assert data["coverage"]["types"] == ["bert", "llama", "opt", "gemma3n", "qwen3", "gpt2", "t5"]


def test_coverage_cell_rules() -> None:
    assert coverage_cell(_row("a"))["status"] == "exact"
    assert covered(_row("a"))
    # a numeric failure with a recorded difference differs; without one (shapes, counts) it is an error
    assert coverage_cell(_row("a", diff=1e-3, fail={"extraction": "x"}))["status"] == "differs"
    assert coverage_cell(_row("a", diff=1e-3, fail={"extraction": "x", "final_norm": "y"}))["status"] == "differs"
    cell = coverage_cell(_row("a", diff=None, fail={"extraction": "gives 3 hidden states for 2 blocks"}))
    assert cell["status"] == "error" and cell["message"].startswith("extraction: gives 3")
    cell = coverage_cell(_row("a", diff=1e-3, fail={"extraction": "x", "hooks": "left 1"}))
    assert (cell["status"], cell["message"]) == ("error", "extraction: x")  # the first failure, in check order
    row = _row("a")
    del row["checks"]["attention"]
    assert coverage_cell(row) == {"status": "error", "value": 0.0, "message": "incomplete checks: attention"}
    row = _row("a")
    row["checks"]["timeout"] = {"status": "fail", "reason": "checks timed out after 30 s"}
    assert coverage_cell(row)["status"] == "error"
    assert sci(3e-4) == "3e-4" and sci(0.0) == "0" and sci(0.125) == "0.12" and sci(float("inf")) == "inf"


def test_fixture_parity_and_cross_release(data: dict[str, Any]) -> None:
    cells = data["fixtures"]["cells"]
    assert _status(data, "fixtures", "gpt2") == ["exact"] * 3
    assert _status(data, "fixtures", "llama") == ["error", "exact", "exact"]
    assert _status(data, "fixtures", "qwen3") == ["not shipped", "exact", "differs"]
    assert cells["llama"]["4.51.3"]["message"] == f"ValueError: {EVIL}"
    # gpt2: same bytes everywhere; 4.57.6 computes block 1 differently
    g = {r: cells["gpt2"][r]["cross"] for r in RELEASES}
    assert (g["4.51.3"]["ref"], g["4.51.3"]["value"], g["4.51.3"]["status"]) == ("5.25.0", 0.0, "same")
    assert g["4.57.6"]["ref"] == "5.25.0" and g["4.57.6"]["value"] == pytest.approx(1e-3, rel=1e-3)
    assert g["4.57.6"]["status"] == "differs" and g["4.57.6"]["layers"]["0"] == 0.0
    assert g["5.25.0"]["ref"] == "4.57.6" and g["5.25.0"]["status"] == "differs"  # the newest *other* release
    # bert: 5.25.0 loaded other bytes: not compared; the two older releases compare with each other
    b = {r: cells["bert"][r]["cross"] for r in RELEASES}
    assert b["5.25.0"]["status"] == "fixture differs" and b["5.25.0"]["ref"] == "4.57.6"
    assert (b["4.51.3"]["ref"], b["4.51.3"]["status"]) == ("4.57.6", "same")
    assert (b["4.57.6"]["ref"], b["4.57.6"]["status"]) == ("4.51.3", "same")
    # llama: no activations on 4.51.3 (error); the others compare with each other
    assert cells["llama"]["4.51.3"]["cross"] is None and cells["llama"]["5.25.0"]["cross"]["ref"] == "4.57.6"
    assert cells["qwen3"]["4.51.3"].get("cross") is None


def test_activations_decode_like_harness_compat() -> None:
    torch = pytest.importorskip("torch")
    from harness.compat import decode, encode
    from harness.compat_matrix import activation_diff

    a = torch.randn(2, 3, 4)
    b = a.clone()
    b[1, 2, 3] += 0.5
    assert torch.equal(decode(encode(a)), a)
    d, per = activation_diff({"0": encode(a), "1": encode(a)}, {"0": encode(a), "1": encode(b), "2": encode(b)})
    assert per["0"] == 0.0 and d == pytest.approx(0.5, abs=1e-6) and set(per) == {"0", "1"}
    assert activation_diff({"0": encode(a)}, {"0": encode(a[:1])})[0] == float("inf")


def test_summary(data: dict[str, Any]) -> None:
    s = {r: data["summary"][r] for r in RELEASES}
    assert s["4.51.3"]["counts"] == {"exact": 4, "differs": 1, "error": 0, "not built": 0, "not shipped": 2}
    assert s["4.57.6"]["counts"] == {"exact": 5, "differs": 1, "error": 0, "not built": 0, "not shipped": 1}
    assert s["5.25.0"]["counts"] == {"exact": 5, "differs": 0, "error": 1, "not built": 1, "not shipped": 0}
    assert s["5.25.0"]["coverage_fraction"] == pytest.approx(5 / 6)
    assert (s["5.25.0"]["covered"], s["5.25.0"]["built"]) == (5, 6)
    assert s["4.51.3"]["fixtures"] == {"exact": 2, "differs": 0, "error": 1, "not built": 0, "not shipped": 1}
    assert s["4.57.6"]["seconds"] == pytest.approx(270.0)
    assert s["4.51.3"]["detection"] == {"name": 0.98, "config": 0.99, "module": 0.97}
    assert s["4.51.3"]["api_consistency"] == {"mean": 0.875, "min": 0.75, "models": 2, "errors": 0}
    assert s["4.51.3"]["targets"]["pass"] >= 1 and sum(s["4.51.3"]["targets"].values()) >= 5
    lock = s["4.51.3"]["lock"]
    assert lock["differs"] == 1 and lock["file"].endswith("transformers-4.51.txt")
    tl = {r: s[r]["peers"]["transformer_lens"] for r in RELEASES}
    assert [tl[r]["status"] for r in RELEASES] == ["exact", "not installed", "error"]
    assert tl["4.51.3"]["version"] == "2.16.1" and tl["4.57.6"]["message"] == "no release fits transformers 4.57.6"
    assert tl["5.25.0"]["message"] == "RuntimeError: boom"
    assert [data["peers"]["cells"]["nnsight"][r]["status"] for r in RELEASES] == ["exact", "exact", "differs"]


def test_format_matrix(data: dict[str, Any]) -> None:
    text = format_matrix(data)
    lines = text.splitlines()
    assert lines[0] == "compatibility matrix: 3 transformers releases, 7 model types, 4 fixtures"
    # 4.51.3's opt differs by 2e-5, within the checks' allclose: covered (100%), yet not exact
    assert re.match(r"4\.51\.3\s+4\s+1\s+0\s+0\s+2\s+100\.0%\s+2/3 exact\s+3 min 0 s$", lines[2]), lines[2]
    assert re.match(r"5\.25\.0\s+5\s+0\s+1\s+1\s+0\s+83\.3%\s+3/4 exact\s+2 min 0 s$", lines[4]), lines[4]
    assert "  llama: 4.57.6 differs 3e-4" in lines
    assert "  fixture gpt2: 4.57.6 vs 5.25.0: 1e-3; 5.25.0 vs 4.57.6: 1e-3" in lines
    assert any(line.startswith("  transformer_lens: 4.51.3 2.16.1 exact; 4.57.6 not installed; 5.25.0 4.0.0 error")
               for line in lines)


# ---------------------------------------------------------------- the section


def test_no_section_for_one_release(folder: Path, tmp_path: Path) -> None:
    runs = load_runs([folder])
    assert compat_section([r for r in runs if r["environment"]["packages"]["transformers"] == "5.25.0"]) is None
    assert compat_section([]) is None
    one = tmp_path / "one"
    _write(one, "5.25.0", T0, 1.0)
    _intro, sections, _images = build_report(load_runs([one]))
    assert "compatibility" not in [s.id for s in sections]
    # runs without matrix records do not make releases
    plain = [{**r, "records": [x for x in r["records"] if x["suite"] not in ("coverage", "compat")]} for r in runs]
    assert compat_section(plain) is None


def test_section_renders_and_escapes(folder: Path, tmp_path: Path) -> None:
    runs = load_runs([folder])
    _intro, sections, _images = build_report(runs)
    ids = [s.id for s in sections]
    assert ids[:3] == ["targets", "errors", "compatibility"]  # right after the verdicts and the errors
    sec = sections[2]
    md = md_document("t", [sec])
    html = html_document("t", [], [sec])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<script" not in md and "&lt;script" in md
    for text in ("differs 3e-4", "not shipped", "not built", "error: hooks: RuntimeError:", "vs 5.25.0: 0",
                 "fixture differs from 4.57.6", "tox -m compat", "python -m harness report results/compat"):
        assert text in html, text
        assert text in md.replace("\\_", "_"), text
    assert re.search(r'<td class="v-fail" title="[^"]*">differs 3e-4</td>', html)
    assert re.search(r'<td class="v-error" title="hooks: RuntimeError: &lt;script&gt;[^"]*">error: ', html)
    assert re.search(r'<td class="v-pass"[^>]*>exact</td>', html)
    assert '<td class="v-not_applicable" title="transformers 4.51.3&#x27;s sweep has no such type">not shipped' in html
    # matrix rows: model type × release, problems first
    coverage_md = md.split("### Coverage sweep")[1].split("###")[0]
    rows = [line for line in coverage_md.splitlines() if line.startswith("| `")]
    assert [r.split("|")[1].strip() for r in rows][:3] == ["`bert`", "`llama`", "`opt`"]
    assert "| Model type | 4.51.3 | 4.57.6 | 5.25.0 |" in coverage_md
    # the whole report writes (the screenshot of tests is taken from such a page)
    out = write_report([folder], tmp_path / "out")
    page = out["html"].read_text()
    assert 'id="compatibility"' in page and "<script>" not in page


def test_duration_rounds_before_splitting_minutes():
    from harness.compat_matrix import duration_text

    assert duration_text(359.6) == "6 min 0 s" and duration_text(89.4) == "89 s" and duration_text(None) == "—"
