"""A tiny document model rendered twice: Markdown for a CI job summary, one self-contained HTML page.

Why one model: the two outputs must say the same thing, and every piece of text that comes from a results
file (model names, error messages, quotes) passes through exactly one escaping function per output. Text
in the model is always plain text; renderers escape it. Markdown: the characters that could start HTML, a
link, emphasis or a code span are neutralised, and `|` inside table cells. HTML: `html.escape` on text
and attribute values alike; images are embedded as base64 PNG, CSS is inline, nothing is fetched.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field

__all__ = ["Cell", "Details", "Image", "Para", "Section", "Table", "html_document", "md_document", "md_text"]


@dataclass
class Cell:
    """A table cell. `text` is plain text; "\\n" is a line break. `title` is hover text (HTML only)."""

    text: str
    title: str | None = None
    cls: str | None = None  # CSS class, e.g. "v-pass" (HTML only)
    code: bool = False  # monospace / code span
    md: str | None = None  # Markdown text when it differs (e.g. shorter, or with an emoji mark)


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell | str]]
    md_limit: int | None = None  # Markdown shows the first rows only (the HTML shows all)
    numeric: tuple[int, ...] = ()  # right-aligned columns


@dataclass
class Para:
    text: str
    cls: str | None = None  # "note" renders smaller and grey in HTML, italic in Markdown


@dataclass
class Image:
    name: str  # file name beside report.md
    alt: str
    png: bytes
    caption: str | None = None


@dataclass
class Details:
    summary: str
    blocks: list[Table | Para | Image] = field(default_factory=list)
    md: bool = True  # also in the Markdown (collapsed)


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Table | Para | Image | Details | Section] = field(default_factory=list)
    level: int = 2


Block = Table | Para | Image | Details | Section

# ---------------------------------------------------------------- Markdown

_MD_SPECIAL = re.compile(r"([\\`*\[\]])")
_MD_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_MD_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_text(s: object) -> str:
    """Plain text made inert in GitHub-flavoured Markdown (no HTML, links, emphasis or code spans).

    `<` is escaped where it could open a tag (so "<2 s" stays readable), `&` where it could form an entity.
    """
    t = str(s)
    t = _MD_ENTITY.sub("&amp;", t)
    t = _MD_TAG_START.sub("&lt;", t)
    t = _MD_SPECIAL.sub(r"\\\1", t)
    return _MD_UNDERSCORE.sub(r"\\_", t)


def _md_code(s: object) -> str:
    t = str(s).replace("`", "'").replace("\r", " ").replace("\n", " ").replace("|", "\\|").strip()
    return f"`{t}`" if t else ""


def _md_cell(c: Cell | str) -> str:
    cell = c if isinstance(c, Cell) else Cell(str(c))
    text = cell.md if cell.md is not None else cell.text
    if cell.code:
        return " ".join(_md_code(line) for line in text.split("\n") if line.strip()) or "—"
    lines = [md_text(line).replace("|", "\\|").strip() for line in text.replace("\r", "").split("\n")]
    return "<br>".join(x for x in lines if x) or "—"


def _md_table(t: Table, limit_scale: float) -> list[str]:
    rows = t.rows
    limit = None if t.md_limit is None else max(3, int(t.md_limit * limit_scale))
    if limit_scale < 1 and limit is None:
        limit = max(3, int(50 * limit_scale))
    shown = rows if limit is None else rows[:limit]
    align = ["---:" if i in t.numeric else "---" for i in range(len(t.header))]
    out = ["| " + " | ".join(md_text(h) for h in t.header) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in shown]
    if len(shown) < len(rows):
        out += ["", f"*… {len(rows) - len(shown)} more rows in report.html.*"]
    return out


def _md_blocks(blocks: list[Block], limit_scale: float) -> list[str]:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Section):
            out += _md_section(b, limit_scale)
        elif isinstance(b, Table):
            out += [*_md_table(b, limit_scale), ""]
        elif isinstance(b, Para):
            text = md_text(b.text).replace("\n", "  \n")
            if text.startswith((">", "#", "-", "+")):
                text = "\\" + text
            out += [f"*{text}*" if b.cls == "note" else text, ""]
        elif isinstance(b, Image):
            out += [f"![{md_text(b.alt)}]({b.name})", ""]
            if b.caption:
                out += [f"*{md_text(b.caption)}*", ""]
        elif isinstance(b, Details):
            if not b.md:
                continue
            out += ["<details><summary>" + html.escape(b.summary) + "</summary>", ""]
            out += _md_blocks(b.blocks, limit_scale)
            out += ["</details>", ""]
    return out


def _md_section(s: Section, limit_scale: float) -> list[str]:
    return ["#" * s.level + " " + md_text(s.title), "", *_md_blocks(s.blocks, limit_scale)]


def md_document(title: str, blocks: list[Block], max_bytes: int = 1_000_000) -> str:
    """Render; when the result exceeds `max_bytes` (a CI summary's cap), show fewer table rows, then cut."""
    text = ""
    for scale in (1.0, 0.3, 0.1, 0.0):
        text = "\n".join([f"# {md_text(title)}", "", *_md_blocks(blocks, scale)]).rstrip() + "\n"
        if len(text.encode()) <= max_bytes:
            return text
    cut = text.encode()[: max_bytes - 200].decode(errors="ignore")
    return cut.rsplit("\n", 1)[0] + "\n\n*Report cut to fit the summary size limit; see report.html.*\n"


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9;font-size:14px;line-height:1.45}
main{max-width:1320px;margin:0 auto;padding:18px 28px 60px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:20px;margin:34px 0 10px;padding-top:8px;border-top:2px solid #d9dde4}
h3{font-size:16px;margin:22px 0 8px}
nav{background:#fff;border:1px solid #d9dde4;border-radius:6px;padding:8px 12px;margin:12px 0;font-size:13px}
nav a{margin-right:14px;color:#2457a6;text-decoration:none;white-space:nowrap}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-size:13px;max-width:100%}
th,td{border:1px solid #d9dde4;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#eef1f5;font-weight:600;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,td.code{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12px}
td.code{white-space:nowrap}td.code.wrap{white-space:normal;overflow-wrap:anywhere;min-width:24em}
.v-pass{background:#e3f4e6;color:#14532d;font-weight:600}.v-fail{background:#fde2e1;color:#8b1a1a;font-weight:600}
.v-error{background:#fff0d6;color:#7a4b00;font-weight:600}.v-not_measured{background:#eceef1;color:#555}
.v-not_applicable{color:#666}.o-regression,.o-target_fail{background:#fde2e1;color:#8b1a1a;font-weight:600}
.o-improvement{background:#e3f4e6;color:#14532d;font-weight:600}.o-incomparable{background:#fff0d6;color:#7a4b00}
.o-still_failing{background:#fbeaea;color:#8b1a1a}.o-new{color:#2457a6}
.err{white-space:pre-wrap;font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12px;max-width:720px}
.note{color:#555;font-size:12.5px}
figure{margin:8px 0 16px;background:#fff;border:1px solid #d9dde4;border-radius:6px;padding:8px;display:inline-block;
max-width:calc(100% - 18px)}
figure img{max-width:100%;height:auto;display:block}figcaption{font-size:12.5px;color:#555;margin-top:4px}
details{margin:6px 0 12px}summary{cursor:pointer;color:#2457a6}
td[title]{cursor:help}td.code[title],td.num[title]{text-decoration:underline dotted #999;text-underline-offset:3px}
.summary{font-size:15px;margin:8px 0}
"""


WRAP_CODE_CHARS = 60  # longer code cells wrap anywhere instead of running off the page


def _esc(s: object) -> str:
    return html.escape(str(s), quote=True)


def _html_text(s: object) -> str:
    return _esc(s).replace("\r", "").replace("\n", "<br>")


def _html_cell(c: Cell | str, numeric: bool) -> str:
    cell = c if isinstance(c, Cell) else Cell(str(c))
    long_code = cell.code and len(cell.text or "") > WRAP_CODE_CHARS  # a command line: wrap, do not widen the page
    classes = [x for x in (cell.cls, "num" if numeric else None, "code" if cell.code else None,
                           "wrap" if long_code else None) if x]
    attrs = f' class="{_esc(" ".join(classes))}"' if classes else ""
    if cell.title:
        attrs += f' title="{_esc(cell.title)}"'
    return f"<td{attrs}>{_html_text(cell.text) if cell.text else '—'}</td>"


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in t.header)
    body = "".join(
        "<tr>" + "".join(_html_cell(c, i in t.numeric) for i, c in enumerate(row)) + "</tr>" for row in t.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_blocks(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if isinstance(b, Section):
            out.append(_html_section(b))
        elif isinstance(b, Table):
            out.append(_html_table(b))
        elif isinstance(b, Para):
            cls = f' class="{_esc(b.cls)}"' if b.cls else ""
            out.append(f"<p{cls}>{_html_text(b.text)}</p>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            cap = f"<figcaption>{_html_text(b.caption)}</figcaption>" if b.caption else ""
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(b.alt)}">{cap}</figure>')
        elif isinstance(b, Details):
            out.append(f"<details><summary>{_esc(b.summary)}</summary>{_html_blocks(b.blocks)}</details>")
    return "\n".join(out)


def _html_section(s: Section) -> str:
    level = min(max(s.level, 2), 6)
    return f'<section id="{_esc(s.id)}"><h{level}>{_esc(s.title)}</h{level}>\n{_html_blocks(s.blocks)}</section>'


def html_document(title: str, intro: list[Block], sections: list[Section]) -> str:
    """A complete page: inline CSS, a table of contents (in-page anchors only), intro blocks, sections."""
    nav = "\n".join(f'<a href="#{_esc(s.id)}">{_esc(s.title)}</a>' for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body><main>\n"
        f"<h1>{_esc(title)}</h1>\n{_html_blocks(intro)}\n<nav>{nav}</nav>\n"
        + "\n".join(_html_section(s) for s in sections)
        + "\n</main></body></html>\n"
    )
