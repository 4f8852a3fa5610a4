"""The report's "Compatibility" section: the matrix of `harness.compat_matrix` as tables.

Why apart from harness/report.py: the section reads runs across transformers releases, not the latest record
per key, and it has its own vocabulary (exact, differs, error, not built, not shipped). It only renders:
every status and number comes from `harness.compat_matrix.build_matrix`, which the plain-text summary
(`format_matrix`) reads too. Cells use the verdict cells' CSS classes (exact = pass, differs = fail,
error = error); the full message of a cell is its hover title. Text from results files goes through
`harness.render`, which escapes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.compat_matrix import ATOL, build_matrix, cell_text, duration_text, sci
from harness.render import Cell, Para, Section, Table

__all__ = ["compat_section"]

CLS = {"exact": "v-pass", "same": "v-pass", "differs": "v-fail", "error": "v-error", "not built": "v-not_measured",
       "not run": "v-not_measured", "not measured": "v-not_measured", "unreadable": "v-error",
       "not shipped": "v-not_applicable", "not installed": "v-not_applicable", "fixture differs": "v-not_applicable"}
MARK = {"exact": "✅ ", "same": "✅ ", "differs": "❌ ", "error": "⚠️ "}
CELL_CHARS = 32  # an error's text in a cell (HTML); its full message is the hover title
MD_CHARS = 28  # the same in Markdown, where a table cannot wrap


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:.1f}%"


def _status_cell(cell: dict[str, Any] | None, title: str | None = None) -> Cell:
    cell = cell or {"status": "not run"}
    st = cell.get("status")
    msg = title if title is not None else cell.get("message")
    return Cell(cell_text(cell, CELL_CHARS), cls=CLS.get(st), title=msg or None,
                md=MARK.get(st, "") + cell_text(cell, MD_CHARS))


def _count(n: int, bad: str | None = None) -> Cell:
    return Cell(str(n), cls=bad if n and bad else None)


# ---------------------------------------------------------------- per release


def _summary_table(data: dict[str, Any]) -> Table:
    rows = []
    for rel in data["releases"]:
        s = data["summary"][rel]
        c, fx, api, det = s["counts"], s["fixtures"], s["api_consistency"], s["detection"]
        start = str(s.get("start") or "?")[:16].replace("T", " ")
        run_title = f"run {s['run_id']}\n{Path(s['file']).name if s['file'] else ''}"
        if s["older_runs"]:
            run_title += f"\n{s['older_runs']} older run(s) of this release left out"
        n_fx = sum(v for k, v in fx.items() if k != "not shipped")
        fx_cls = None if not n_fx else "v-pass" if fx["exact"] == n_fx else "v-fail" if fx["differs"] else "v-error"
        cov = _pct(s["coverage_fraction"])
        if s.get("covered") is not None and s.get("built") is not None:
            cov += f"\n{s['covered']} of {s['built']} built"
        tg = s["targets"]
        tg_cls = "v-fail" if tg.get("fail") else "v-error" if tg.get("error") else "v-pass" if tg.get("pass") else None
        lock = s["lock"]
        if lock is None:
            lock_cell = Cell("—", title="no environment.lock in this run")
        else:
            differing = "\n".join(f"{k}: locked {v.get('locked')}, installed {v.get('installed')}"
                                  for k, v in lock["differing"].items() if isinstance(v, dict))
            name = Path(str(lock.get("file") or "?")).name
            lock_cell = Cell(f"{name}\n{lock['differs']} differ" if not lock.get("error") else f"{name}\nerror",
                             cls="v-error" if lock.get("error") else None, code=True,
                             md=f"{name}, " + ("error" if lock.get("error") else f"{lock['differs']} differ"),
                             title=f"{lock.get('file')} (sha256 {str(lock.get('sha256') or '?')[:16]})"
                                   + (f"\n{lock['error']}" if lock.get("error") else "")
                                   + (f"\n{differing}" if differing else ""))
        sweep, dur = s["sweep"], duration_text(s["seconds"])
        rows.append([
            Cell(rel, code=True, title=f"torch {s.get('torch') or '?'}"
                 + (f"\nadapters.compat: {s['compat']}" if s.get("compat") else "")),
            Cell(f"{start}\n{dur}", title=run_title, md=f"{start} ({dur})"),
            *([_count(c["exact"], None), _count(c["differs"], "v-fail"), _count(c["error"], "v-error"),
               _count(c["not built"], None), _count(c["not shipped"], None)] if sweep else [Cell("not run")] * 5),
            Cell(cov, md=cov.replace("\n", " (") + (")" if "\n" in cov else "")) if sweep else Cell("—"),
            Cell(f"{fx['exact']} of {n_fx}" if n_fx else "—", cls=fx_cls),
            Cell("\n".join(f"{t} {_pct(v)}" for t, v in det.items()), md=" · ".join(f"{t} {_pct(v)}"
                                                                                      for t, v in det.items())),
            Cell(f"mean {_pct(api['mean'])}\nmin {_pct(api['min'])}" if api["models"] else "—",
                 title=f"{api['models']} models, {api['errors']} in error",
                 md=f"mean {_pct(api['mean'])}, min {_pct(api['min'])}" if api["models"] else "—",
                 cls="v-error" if api["errors"] else None),
            Cell("\n".join(f"{n} {v}" for v, n in sorted(tg.items())) or "—", cls=tg_cls,
                 md=", ".join(f"{n} {v}" for v, n in sorted(tg.items())) or "—"),
            lock_cell,
        ])
    return Table(["transformers", "Run (duration)", "Exact", "Differs", "Error", "Not built", "Not shipped",
                  "Coverage", "Fixtures exact", "Detection", "API consistency", "Stated targets",
                  "Lock (installed ≠ lock)"], rows, numeric=(2, 3, 4, 5, 6, 7, 8, 9, 10, 11))


# ---------------------------------------------------------------- matrices


def _coverage_table(data: dict[str, Any]) -> Table:
    rels, cells = data["releases"], data["coverage"]["cells"]
    rows = []
    for t in data["coverage"]["types"]:
        about = next((cells[t][r].get("about") for r in reversed(rels) if cells[t][r].get("about")), None)
        row: list[Cell | str] = [Cell(t, code=True, title=about)]
        for rel in rels:
            c = cells[t][rel]
            title = c.get("message") or ""
            if c.get("status") in ("exact", "differs") and c.get("value") is not None:
                title = f"max abs diff {c['value']:.3g} vs transformers' output_hidden_states" + (
                    f"\n{title}" if title else "")
            if len(c.get("failures") or []) > 1:
                title += "\nall failures:\n" + "\n".join(c["failures"])
            row.append(_status_cell(c, title))
        rows.append(row)
    return Table(["Model type", *rels], rows, md_limit=40)


def _cross_text(cross: dict[str, Any] | None) -> tuple[str, str | None, str]:
    """(line for the cell, status for its colour, hover line) of a fixture's cross-release difference."""
    if not cross:
        return "", None, "no other release to compare with"
    if cross["status"] == "fixture differs":
        return (f"fixture differs from {cross['ref']}", "fixture differs",
                f"fixture_sha differs from {cross['ref']}'s ({cross.get('ref_sha')}): activations not compared")
    if cross["status"] == "unreadable":
        return f"vs {cross['ref']}: unreadable", "unreadable", "activations could not be decoded"
    per = ", ".join(f"block {k}: {sci(v)}" for k, v in (cross.get("layers") or {}).items())
    return (f"vs {cross['ref']}: {sci(cross['value'])}", cross["status"],
            f"activations vs {cross['ref']} (same fixture_sha; real positions where the run stored its mask): {per}")


def _fixtures_table(data: dict[str, Any]) -> Table:
    rels, cells = data["releases"], data["fixtures"]["cells"]
    rank = {None: 0, "same": 0, "fixture differs": 0, "unreadable": 2, "differs": 3}
    own = {"exact": 0, "differs": 3, "error": 4}
    rows = []
    for t in data["fixtures"]["types"]:
        task = next((cells[t][r].get("task") for r in rels if cells[t][r].get("task")), None)
        row: list[Cell | str] = [Cell(t, code=True, title=task)]
        for rel in rels:
            c = cells[t][rel]
            line, cst, hover = _cross_text(c.get("cross"))
            st = c.get("status")
            worst = cst if rank.get(cst, 0) > own.get(st, 0) else st
            title = "\n".join(x for x in (
                c.get("message"), hover if c.get("cross") else None,
                f"fixture_sha {c.get('sha')} (built with {c.get('built_with')})" if c.get("sha") else None,
                f"max abs diff vs transformers {c['value']:.3g}" if c.get("value") is not None else None,
                f"attention {c['attention']}" if c.get("attention") else None,
                f"forward inputs: {', '.join(c['forward_inputs'])}" if c.get("forward_inputs") else None,
                f"tokenizer outputs: {', '.join(c['tokenizer_outputs'])}" if c.get("tokenizer_outputs") else None,
            ) if x)
            text = cell_text(c, CELL_CHARS) + (f"\n{line}" if line else "")
            cross_mark = {"differs": "❌ ", "unreadable": "⚠️ "}.get(cst or "", "")
            md = MARK.get(st, "") + cell_text(c, MD_CHARS) + (f" · {cross_mark}{line}" if line else "")
            row.append(Cell(text, cls=CLS.get(worst), title=title or None, md=md))
        rows.append(row)
    return Table(["Fixture", *rels], rows, md_limit=30)


def _peers_table(data: dict[str, Any]) -> Table:
    rels, cells = data["releases"], data["peers"]["cells"]
    rows = []
    for tool in data["peers"]["tools"]:
        row: list[Cell | str] = [Cell(tool, code=True)]
        for rel in rels:
            c = cells[tool][rel]
            head = f"{c.get('version')}" if c.get("version") else ""
            body = cell_text(c, CELL_CHARS) + (f" {sci(c['value'])}" if c["status"] == "exact"
                                                and c.get("value") is not None else "")
            title = "\n".join(x for x in (c.get("message"), f"api: {c['api']}" if c.get("api") else None,
                                          f"on the {c['model_type']} fixture" if c.get("model_type") else None) if x)
            row.append(Cell("\n".join(x for x in (head, body) if x), cls=CLS.get(c["status"]), title=title or None,
                            md=MARK.get(c["status"], "") + " ".join(x for x in (head, cell_text(c, MD_CHARS)) if x)))
        rows.append(row)
    return Table(["Tool", *rels], rows)


# ---------------------------------------------------------------- the section


def _intro(data: dict[str, Any]) -> Para:
    rels = data["releases"]
    s = data["summary"][rels[-1]]
    c = s["counts"]
    text = (f"{len(rels)} transformers releases, {rels[0]} to {rels[-1]}: the newest run of each. "
            f"On {rels[-1]}: ")
    if s["sweep"]:
        text += (f"{c['exact']} model types exact, {c['differs']} differ, {c['error']} in error, "
                 f"{c['not built']} not built (coverage {_pct(s['coverage_fraction'])})")
    else:
        text += "no coverage sweep"
    fx = s["fixtures"]
    n_fx = sum(v for k, v in fx.items() if k != "not shipped")
    if n_fx:
        text += f"; {fx['exact']} of {n_fx} fixtures exact"
    regress = [t for t in data["coverage"]["types"]
               if data["coverage"]["cells"][t][rels[-1]].get("status") in ("error", "differs")
               and any(data["coverage"]["cells"][t][r].get("status") == "exact" for r in rels[:-1])]
    if regress:
        text += f". Exact on an older release but not on {rels[-1]}: {', '.join(regress[:8])}"
        text += f" and {len(regress) - 8} more" if len(regress) > 8 else ""
    return Para(text + ".")


NOTE = (
    "Statuses (coverage sweep: every text model type a release ships, built tiny; fixtures: the same checkpoint "
    f"on every release). exact: built, every counted check passed or did not apply, and NeuronMap's blocks are "
    f"within {sci(ATOL)} of transformers' output_hidden_states (or transformers gives no hidden states). "
    "differs N: the largest difference N is above that (the extraction check failed on it, or its allclose "
    "tolerance let it pass). error: a check other than detection failed for another reason (the first failure "
    "is shown; hover for all). not built: the type could not be built tiny and offline, or is not a text model "
    "(hover for why). not shipped: the release has no such type. not run: that release's run has no sweep or no "
    "such record. Fixtures also give the largest difference of the activations from those of another release "
    "(the newest other release whose fixture_sha is the same, named in the cell; real, unpadded positions); "
    "“fixture differs” when the checkpoint bytes differ, so activations are not compared."
)
REGENERATE = (
    "Regenerate: tox -m compat (one environment per release, lower bound first: it builds the shared fixtures), "
    "then python -m harness report results/compat; python -m harness compat matrix results/compat prints the "
    "same matrix as text."
)


def compat_section(runs: list[dict[str, Any]]) -> Section | None:
    """The "Compatibility" section, or None when the runs hold matrix records of fewer than two releases."""
    data = build_matrix(runs)
    rels = data["releases"]
    if len(rels) < 2:
        return None
    blocks: list[Any] = [_intro(data), _summary_table(data)]
    if data["coverage"]["types"]:
        n_bad = sum(any(data["coverage"]["cells"][t][r].get("status") in ("error", "differs", "not built")
                        for r in rels) for t in data["coverage"]["types"])
        blocks.append(Section("compat-coverage", "Coverage sweep: model type × release", [
            Para(f"{len(data['coverage']['types'])} model types, {n_bad} with an error, a difference or no build "
                 "on some release (listed first, those failing on the newest release ahead). Hover a cell for "
                 "its full message.", cls="note"),
            _coverage_table(data)], level=3))
    if data["fixtures"]["types"]:
        blocks.append(Section("compat-fixtures", "Fixtures: the same checkpoint on every release", [
            Para("First line: the release's own parity with transformers; second: the difference of its "
                 "activations from another release's on identical checkpoint bytes.", cls="note"),
            _fixtures_table(data)], level=3))
    if data["peers"]["tools"]:
        blocks.append(Section("compat-peers", "Peers on each release", [
            Para("The peer release that installed beside each transformers release, on the gpt2 fixture: its "
                 "block outputs against transformers' hidden states.", cls="note"),
            _peers_table(data)], level=3))
    blocks += [Para(NOTE, cls="note"), Para(REGENERATE, cls="note")]
    return Section("compatibility", "Compatibility", blocks)
