"""Unit tests of harness.report (Markdown + self-contained HTML) and the `python -m harness report` command line.

Synthetic results files (tests/report_fixtures.py) exercise every section; one full report with charts is
built once per module, the other tests stub the charts out to stay fast.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import types
from html import escape as html_escape
from pathlib import Path

import pytest

import harness.report as report_mod
from harness.__main__ import main
from harness.collate import latest, load_runs, run_records
from harness.render import Cell, Para, Section, Table, md_document, md_text
from harness.report import build_report, write_report
from harness.results import Run
from harness.targets import load_targets
from tests.report_fixtures import EVIL, make_history, make_run, paired_latency

PNG = b"\x89PNG\r\n\x1a\n"
SECTIONS = (
    "Stated targets",
    "Errors (1)",
    "Extraction latency per model",
    "Peak memory per model",
    "Memory reclaimed after unload",
    "Scaling with sequence length and batch size",
    "Family detection",
    "Comparison with a baseline",
    "Trend over runs",
)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three runs (the last with gpt2 25% slower) and a baseline run: every section, every chart."""
    root = tmp_path_factory.mktemp("report")
    make_history(root / "hist", n=3, slow_last=1.25)
    make_run(root / "base", seed=99, run_id="20251231T000000Z-baseln")
    return write_report([root / "hist"], root / "out", baseline=[root / "base"])


@pytest.fixture
def no_charts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("bar_chart", "scaling_chart", "confusion_chart", "comparison_chart", "trend_chart"):
        monkeypatch.setattr(report_mod.plots, name, lambda *a, **k: None)


def test_every_section_and_chart(full: dict[str, Path]) -> None:
    charts = {"latency", "peak_memory", "reclamation", "scaling", "detection", "comparison", "trend"}
    assert set(full) == {"report", "html", *charts}
    for key in charts:
        data = full[key].read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, key
        assert full[key].parent == full["report"].parent
    md = full["report"].read_text()
    html = full["html"].read_text()
    for title in SECTIONS:
        assert f"\n## {title}\n" in md, title
        assert f">{title}</h2>" in html, title
    assert "### Baselines (reference methods)" in md and "+53.8 points" in md
    assert not [p for p in full["report"].parent.iterdir() if p.name.startswith(".")]  # no temp files left
    assert len(md.encode()) < 1_000_000  # CI job summaries are capped at 1 MiB


def test_every_target_listed_with_verdict(full: dict[str, Path]) -> None:
    md = full["report"].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    targets = load_runs([full["report"].parent.parent / "hist"])[-1]["targets"]["list"]  # as the runs recorded them
    assert len(targets) == len(load_targets())
    for t in targets:
        row = next((r for r in rows if r.startswith(f"| {t['id']} ")), None)
        assert row is not None, t["id"]
        assert md_text(t["quote"]) in row
    assert "⬜ not measured" in md and "❌ fail" in md and "✅ pass" in md and "⚠️ error" in md


def test_scaling_exponents_and_detection_confusions(full: dict[str, Path]) -> None:
    md = full["report"].read_text()
    scaling = md.split("## Scaling", 1)[1].split("\n## ", 1)[0]
    latency_rows = [r for r in scaling.splitlines() if "`extraction_latency`" in r]
    assert len(latency_rows) == 6  # 3 models x (sequence length, batch size)
    ks = [float(r.split("|")[7]) for r in latency_rows]  # synthetic latency grows as x^0.9 / x^0.95
    assert all(0.8 < k < 1.05 for k in ks), ks
    mem_rows = [r for r in scaling.splitlines() if "`extraction_peak_memory`" in r]
    assert all("3 of 4" in r for r in mem_rows)  # the 0-valued first point cannot enter a log fit
    assert "registered models, module tier: t5 → gpt: 1" in md
    assert "labelled set, module tier:" in md and "bert → error: 1" in md
    assert "| t5-small | t5 | t5 | t5 | gpt | ❌ fail |" in md  # the model with a wrong tier


def test_baseline_comparison_uses_the_gate(full: dict[str, Path]) -> None:
    md = full["report"].read_text()
    cmp_ = md.split("## Comparison with a baseline", 1)[1].split("\n## ", 1)[0]
    row = next(r for r in cmp_.splitlines() if r.startswith("| latency | gpt2 |") and "seed" in r)
    assert "regression" in row and "+2" in row  # +25% median, significant: the gate's verdict
    assert "% raw |" in row  # these synthetic runs carry no reference: judged on raw samples
    assert "harness.gate" in cmp_
    trend = md.split("## Trend over runs", 1)[1].split("\n## ", 1)[0]
    gpt2 = next(r for r in trend.splitlines() if r.startswith("| gpt2 | `extraction_latency` |") and "seed" in r)
    assert "| 3 |" in gpt2  # three runs in the history


def test_comparison_shows_the_change_the_gate_judged(tmp_path: Path, no_charts: None) -> None:
    """A 30 % slower machine: raw +30 %, judged against the reference ~0 %, so the gate passes it."""
    for name, machine in (("base", 1.0), ("cur", 1.3)):
        run = Run.start("test", tmp_path / name, load_targets(), environment={})
        run.add(paired_latency(machine, seed=int(machine * 10)))
        run.finish()
    md = write_report([tmp_path / "cur"], tmp_path / "out", baseline=[tmp_path / "base"])["report"].read_text()
    cmp_ = md.split("## Comparison with a baseline", 1)[1].split("\n## ", 1)[0]
    row = next(r for r in cmp_.splitlines() if r.startswith("| latency | m |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[6].startswith("+") and float(cells[6].split("%")[0]) > 20  # raw change
    judged = cells[7]
    assert judged.endswith("vs reference") and abs(float(judged.split("%")[0])) < 3
    assert cells[8] == "pass"


def test_html_self_contained_and_escaped(full: dict[str, Path]) -> None:
    html = full["html"].read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "@import" not in html and "url(" not in html
    assert "<script" not in html.lower()  # the page has no scripts; the model name's was escaped
    assert html_escape(EVIL) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" and html_escape(EVIL) in html
    assert "&amp; more" in html
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) == 7
    written = {p.read_bytes() for k, p in full.items() if k not in ("report", "html")}
    assert {base64.b64decode(i) for i in imgs} == written
    assert 'title="adapter_source: 54046e525c1be644' in html  # fingerprints on hover
    md = full["report"].read_text()
    assert "<script" not in md.lower() and "&lt;script>" in md
    assert "MemoryError \\| while<br>loading" in md  # escaped, on one table row


def test_md_escaping_and_size_cap() -> None:
    assert md_text("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)>"
    assert md_text("< 2 s, a_b, _x_, [l](u), `c`") == "< 2 s, a_b, \\_x\\_, \\[l\\](u), \\`c\\`"
    big = Table(["a"], [[Cell("x" * 200)] for _ in range(20_000)])
    text = md_document("T", [Section("s", "S", [big, Para("end")])], max_bytes=100_000)
    assert len(text.encode()) <= 100_000 and "more rows in report.html" in text


def test_gate_missing_or_returning_dicts(tmp_path: Path, no_charts: None, monkeypatch: pytest.MonkeyPatch) -> None:
    cur = make_run(tmp_path / "cur", seed=1, slowdown=1.3, scaling=False, detection=False, evil=False)
    base = make_run(tmp_path / "base", seed=2, scaling=False, detection=False, evil=False)

    def comparison_md() -> str:
        intro, sections, _ = build_report(load_runs([cur]), load_runs([base]))
        md = md_document("T", [*intro, *sections])
        return md.split("## Comparison with a baseline", 1)[1].split("\n## ", 1)[0]

    monkeypatch.setitem(sys.modules, "harness.gate", None)  # import fails
    text = comparison_md()
    assert "not available" in text and "no gate" in text
    assert re.search(r"\| latency \| gpt2 \|.*seed.*\| \+[23]\d\.\d% \|", text)  # changes still shown

    def compare(baseline: list, current: list) -> list[dict]:  # the interface as first specified: dicts
        return [{"suite": r.suite, "model": r.model, "metric": r.metric, "workload": (r.workload or {}).get("name"),
                 "outcome": "regression" if r.model == "gpt2" else "pass"} for r in current]

    monkeypatch.setitem(sys.modules, "harness.gate", types.SimpleNamespace(compare=compare))
    text = comparison_md()
    assert re.search(r"\| latency \| gpt2 \|.*seed.*\| regression \|", text)

    def broken(baseline: list, current: list) -> list:
        raise RuntimeError("boom")

    monkeypatch.setitem(sys.modules, "harness.gate", types.SimpleNamespace(compare=broken))
    assert "gate failed (RuntimeError: boom)" in comparison_md()


def test_absent_data_gets_notes(tmp_path: Path, no_charts: None) -> None:
    path = make_run(tmp_path, scaling=False, detection=False, evil=False)
    intro, sections, _images = build_report(load_runs([path]))
    md = md_document("T", [*intro, *sections])
    assert "No scaling records in these runs" in md
    assert "No baseline given" in md and "One run given" in md
    assert "No check ended in an error." in md
    assert "## Family detection" not in md  # no detection records: no section


def test_report_without_records_still_lists_targets(tmp_path: Path) -> None:
    run = Run.start("empty", tmp_path, load_targets(), environment={})
    files = write_report([run.finish()], tmp_path / "out")
    assert set(files) == {"report", "html"}
    md = files["report"].read_text()
    assert "No latency measurements" in md and md.count("⬜ not measured") == len(load_targets())


def test_latest_per_suite_and_model(tmp_path: Path, no_charts: None) -> None:
    """A later run of a suite for a model supersedes that suite's earlier figures for it, other shards stay."""
    first = make_run(tmp_path, seed=1, run_id="20260101T000000Z-aaaaaa", scaling=False, evil=False)
    second = Run.start("pytest suites/test_latency.py", tmp_path, load_targets(), environment={},
                       run_id="20260101T000001Z-bbbbbb")
    second.record(suite="latency", model="gpt2", family="gpt", metric="extraction_latency", value=0.5, unit="s",
                  workload={"name": "seed"})
    second.finish()
    assert len(load_runs([tmp_path, first])) == 2  # a file given twice is read once
    cur = latest(run_records(load_runs([tmp_path])))
    lat = [r for r in cur if r["suite"] == "latency" and r["model"] == "gpt2"]
    assert [(r["value"], r["_run"]["id"]) for r in lat] == [(0.5, "20260101T000001Z-bbbbbb")]
    assert any(r["suite"] == "latency" and r["model"] == "bert-base-uncased" for r in cur)  # other model kept
    assert any(r["suite"] == "detection" for r in cur) and first.exists()  # other suite kept


def test_cli_report_default_out_and_baseline(tmp_path: Path, no_charts: None,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = make_run(tmp_path, scaling=False, detection=False)
    assert main(["report", str(path)]) == 0
    out_dir = tmp_path / path.stem
    assert (out_dir / "report.md").exists() and (out_dir / "report.html").exists()
    assert "html:" in capsys.readouterr().out
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "c"), "--baseline", str(path)]) == 0
    assert "Baseline: " + path.name in (tmp_path / "c" / "report.md").read_text()


def test_cli_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert main(["report", str(tmp_path)]) == 2  # folder without results files
    bad = tmp_path / "other.json"
    bad.write_text('{"benchmarks": []}')
    assert main(["report", str(bad)]) == 2
    good = Run.start("empty", tmp_path / "r", load_targets(), environment={}).finish()
    assert main(["report", str(good), "--baseline", str(tmp_path / "nope")]) == 2
    assert main(["report", str(good), "--baseline", str(tmp_path)]) == 2  # no results files there
    for argv in (["report"], ["frobnicate"], ["report", str(good), "--baseline"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert "harness report:" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    r = subprocess.run([sys.executable, "-m", "harness"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 2 and "command is required" in r.stderr


def test_trend_gives_no_column_to_a_run_without_its_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            no_charts: None) -> None:
    make_history(tmp_path / "h", n=2)
    scaling_only = make_run(tmp_path / "h", seed=7, run_id="20260101T000009Z-000009")
    data = json.loads(scaling_only.read_text())
    data["records"] = [r for r in data["records"] if r["metric"] not in ("extraction_latency", "peak_memory")]
    scaling_only.write_text(json.dumps(data))
    seen: dict = {}

    def capture(series: list, labels: list[str], **_: object) -> None:
        seen.update(labels=labels, xs={x for s in series for x, _v in s["points"]})

    monkeypatch.setattr(report_mod.plots, "trend_chart", capture)
    write_report([tmp_path / "h"], tmp_path / "out")
    assert len(seen["labels"]) == 2 and not any("000009" in label for label in seen["labels"])
    assert seen["xs"] == {0, 1}


def test_line_styles_do_not_repeat_within_the_palette() -> None:
    from harness.plots import MARKERS, SERIES_COLORS, line_style

    n = len(MARKERS) * len(SERIES_COLORS)
    assert len({tuple(sorted(line_style(i).items())) for i in range(n)}) == n


def test_long_code_cells_wrap_short_ones_do_not() -> None:
    from harness.render import WRAP_CODE_CHARS, _html_cell

    assert 'class="code wrap"' in _html_cell(Cell("pytest " + "x" * WRAP_CODE_CHARS, code=True), False)
    assert 'class="code"' in _html_cell(Cell("gpt2", code=True), False)
