"""Charts of the report, each returned as PNG bytes (written beside report.md and embedded in report.html).

Matplotlib is used through `Figure` objects (Agg), never pyplot: no global backend state, safe in CI.
Legends sit outside the axes, so they never cover data; long labels wrap; log axes get plain-number ticks.
Every function takes plain rows (dicts) and returns None when there is nothing to draw.
"""

from __future__ import annotations

import io
import math
import textwrap
from typing import Any

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

__all__ = [
    "bar_chart",
    "comparison_chart",
    "confusion_chart",
    "fit_exponent",
    "scaling_chart",
    "trend_chart",
]

SERIES_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974"]
FAMILY_COLORS = {
    "gpt": "#4C72B0",
    "bert": "#DD8452",
    "t5": "#55A868",
    "llama": "#8172B3",
    "domain_specific": "#937860",
}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
TARGET_COLOR = "#C44E52"
DPI = 110


def line_style(i: int) -> dict[str, str]:
    """Colour and marker of the i-th line: the marker shifts each time the colours wrap, so no two of the first
    len(SERIES_COLORS) * len(MARKERS) lines look alike."""
    return {"color": SERIES_COLORS[i % len(SERIES_COLORS)],
            "marker": MARKERS[(i + i // len(SERIES_COLORS)) % len(MARKERS)]}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    return buf.getvalue()


def wrap_model(model: str | None, width: int = 16) -> str:
    """Wrap long model names, preferring to break after '/' (readable tick labels)."""
    if not model:
        return "(all models)"
    pieces = model.split("/")
    lines: list[str] = []
    for i, p in enumerate(pieces):
        p = p + ("/" if i < len(pieces) - 1 else "")
        lines.extend(textwrap.wrap(p, width, break_on_hyphens=True) or [p])
    return "\n".join(lines)


def _plain(v: float, _pos: int = 0) -> str:
    if v <= 0:
        return ""
    if v >= 1:
        return f"{v:,.0f}" if v >= 1000 else f"{v:g}"
    return f"{v:.3g}"


def _minor_log_label(v: float, _pos: int) -> str:
    """Label the 2x and 5x minor ticks of a log axis in plain numbers (0.2, 0.5, 2, 5)."""
    if v <= 0:
        return ""
    lead = round(v / 10 ** math.floor(math.log10(v)))
    return _plain(v) if lead in (2, 5) else ""


def _log_y(ax: Any, lo: float, hi: float) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    # minor labels only when the axis spans few decades, else they collide with the major ones
    if hi / lo < 300:
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


# ---------------------------------------------------------------- per-model bars


def bar_chart(
    rows: list[dict[str, Any]],
    *,
    title: str,
    ylabel: str,
    scale: float = 1.0,
    hline: tuple[float, str] | None = None,
    per_group_targets: bool = True,
    value_fmt: str = "{:.3g}",
    allow_log: bool = False,
    threshold_text: Any = None,
) -> bytes | None:
    """Grouped bars: one group per (model, device, dtype, weights), one bar per series (workload).

    Rows: model, device, dtype, weights, series, value, median, q1, q3, target (dict or None). Medians
    with IQR error bars where stats exist; a dashed target segment over each group whose records carry a
    target. With `allow_log`, a log axis is used when values span more than 30x, so a 2-token workload
    stays visible next to a 1024-token one.
    """
    rows = [r for r in rows if r.get("value") is not None]
    if not rows:
        return None
    gkey = lambda r: tuple(r.get(k) or "" for k in ("model", "device", "dtype", "weights"))  # noqa: E731
    groups = list(dict.fromkeys(gkey(r) for r in rows))
    series = list(dict.fromkeys(r["series"] for r in rows))
    n_g, n_s = len(groups), len(series)
    width = 0.8 / n_s

    bars: list[tuple[int, int, float, float, float, float]] = []  # (group, series, x, y, err lo, err hi)
    targets: list[dict[str, Any] | None] = []
    for gi, g in enumerate(groups):
        gd = [r for r in rows if gkey(r) == g]
        targets.append(next((r["target"] for r in gd if isinstance(r.get("target"), dict) and r["target"]), None))
        for si, sname in enumerate(series):
            sd = [r for r in gd if r["series"] == sname]
            if not sd:
                continue
            r = sd[-1]
            med = float(r["median"] if r.get("median") is not None else r["value"]) * scale
            lo = hi = 0.0
            if r.get("q1") is not None and r.get("q3") is not None:
                lo = max(0.0, med - float(r["q1"]) * scale)
                hi = max(0.0, float(r["q3"]) * scale - med)
            bars.append((gi, si, gi - 0.4 + width * (si + 0.5), med, lo, hi))

    def _tval(t: dict[str, Any] | None) -> float | None:
        if per_group_targets and t and t.get("operator") != "between" and t.get("value") is not None:
            return float(t["value"]) * scale
        return None

    ys = [b[3] for b in bars if b[3] > 0]
    tvals = [v for v in map(_tval, targets) if v is not None]
    span = (max(ys + tvals) / min(ys)) if ys else 1.0
    log = allow_log and span > 30

    fig_w = min(12.0, max(8.0, 3.5 + n_g * max(1.5, 0.4 * n_s)))  # 12 in = the report page's width
    fig = Figure(figsize=(fig_w, 5.6), layout="constrained")
    ax = fig.add_subplot()
    seen_series: set[int] = set()
    for _gi, si, x, y, lo, hi in bars:
        label = series[si] if si not in seen_series and series[si] != "default workload" else None
        seen_series.add(si)
        ax.bar(
            x,
            y,
            width=width * 0.92,
            color=SERIES_COLORS[si % len(SERIES_COLORS)],
            label=label,
            yerr=[[lo], [hi]] if (lo or hi) else None,
            capsize=3,
            ecolor="#333333",
        )
    drawn = False
    for gi, t in enumerate(targets):
        v = _tval(t)
        if v is not None:
            ax.hlines(v, gi - 0.45, gi + 0.45, colors=TARGET_COLOR, linestyles="--", linewidth=2,
                      label=None if drawn else "stated target", zorder=3)
            drawn = True
    if hline is not None:
        ax.axhline(hline[0] * scale, color=TARGET_COLOR, linestyle="--", linewidth=2, label=hline[1], zorder=3)
    top = max([b[3] + b[5] for b in bars] + tvals + ([hline[0] * scale] if hline else []))
    if log:
        _log_y(ax, min(ys) / 2, top * 3)
        ax.set_ylim(min(ys) / 2, top * 3)
    else:
        ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    bottom, ceiling = ax.get_ylim()
    vertical = n_s > 2 or n_g > 8
    for _gi, si, x, y, _lo, hi in bars:
        if y <= 0 and log:
            continue
        # share of the axis height the bar covers: a short bar gets its label above it (and above its
        # error bar), in dark text, instead of a box that would overflow the bar
        frac = (math.log(y / bottom) / math.log(ceiling / bottom)) if log else y / ceiling
        inside = frac > (0.16 if vertical else 0.07)
        if inside:
            ax.text(x, (y * bottom) ** 0.5 if log else y / 2, value_fmt.format(y), ha="center", va="center",
                    fontsize=7.5, color="white", rotation=90 if vertical else 0, zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": SERIES_COLORS[si % len(SERIES_COLORS)],
                          "edgecolor": "none"})
        else:
            top_y = y + hi
            ax.text(x, top_y * 1.08 if log else top_y + (ceiling - bottom) * 0.01, value_fmt.format(y),
                    ha="center", va="bottom", fontsize=7.5, color="#222", rotation=90 if vertical else 0, zorder=4)
    labels = []
    for g, t in zip(groups, targets, strict=True):
        model, device, dtype, weights = g
        label = wrap_model(model or None)
        ctx = " · ".join(b for b in (device, dtype, weights) if b)
        if ctx:
            label += "\n" + ctx
        if per_group_targets and t and threshold_text is not None:
            label += "\ntarget " + threshold_text(t)
        labels.append(label)
    ax.set_xticks(range(n_g))
    rotate = n_g > 5
    ax.set_xticklabels(labels, rotation=30 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    ax.set_xlim(-0.6, n_g - 0.4)
    ax.set_ylabel(ylabel + (" — log scale" if log else ""))
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3, which="both" if log else "major")
    ax.set_axisbelow(True)
    handles, leg_labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, [textwrap.fill(x, 30) for x in leg_labels], loc="outside right upper", fontsize=8,
                   title="workload", title_fontsize=8)
    return _png(fig)


# ---------------------------------------------------------------- scaling


def fit_exponent(xs: list[float], ys: list[float]) -> tuple[float | None, int]:
    """Slope of log(y) on log(x), least squares, over the points with x > 0 and y > 0; (k, points used).

    None when fewer than two distinct positive x remain.
    """
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None and x > 0 and y > 0]
    if len({x for x, _ in pts}) < 2:
        return None, len(pts)
    lx = np.log([x for x, _ in pts])
    ly = np.log([y for _, y in pts])
    k, _c = np.polyfit(lx, ly, 1)
    return float(k), len(pts)


def _cluster_ticks(xs: list[float]) -> list[float]:
    """Distinct x values, merging near-equal ones (63 and 64 tokens) so tick labels never overprint."""
    def pow2(v: float) -> bool:
        return v >= 1 and float(v).is_integer() and (int(v) & (int(v) - 1)) == 0

    out: list[float] = []
    for x in sorted(set(xs)):
        if out and x / out[-1] < 1.15:
            if pow2(x) and not pow2(out[-1]):  # keep the rounder of the two
                out[-1] = x
            continue
        out.append(x)
    return out


def scaling_chart(curves: list[dict[str, Any]]) -> bytes | None:
    """Log-log curves: rows latency / memory, columns sequence length / batch size.

    Curves: {model, family, kind ("latency"|"memory"), axis ("seq_len"|"batch"), xs, ys (s or GB),
    fixed (text of what was held constant)}. Each curve carries its fitted exponent k in the legend and a
    dashed fit line; points <= 0 cannot sit on a log axis and are left out (the legend says how many).
    """
    curves = [c for c in curves if c["xs"]]
    if not curves:
        return None
    kinds = [k for k in ("latency", "memory") if any(c["kind"] == k for c in curves)]
    axes_ = [a for a in ("seq_len", "batch") if any(c["axis"] == a for c in curves)]
    mem_all = [y for c in curves if c["kind"] == "memory" for y in c["ys"] if y is not None and y > 0]
    mem_scale, mem_unit = (1.0, "GB") if mem_all and max(mem_all) >= 1 else (1e3, "MB")
    models = list(dict.fromkeys(c["model"] for c in curves))
    marker_of = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(models)}
    fam_models: dict[str, list[str]] = {}
    for c in curves:
        fam_models.setdefault(c["family"] or "?", [])
        if c["model"] not in fam_models[c["family"] or "?"]:
            fam_models[c["family"] or "?"].append(c["model"])

    def color(c: dict[str, Any]) -> tuple[float, ...]:
        base = FAMILY_COLORS.get(c["family"] or "", "#555555")
        i = fam_models[c["family"] or "?"].index(c["model"])
        rgba = to_rgba(base)
        shade = 1.0 - 0.22 * (i % 3)  # models of one family: one hue, darker to lighter
        return (rgba[0] * shade, rgba[1] * shade, rgba[2] * shade, 1.0)

    n_leg = max(sum(1 for c in curves if c["kind"] == k and c["axis"] == a) for k in kinds for a in axes_)
    fig = Figure(figsize=(6.0 * len(axes_), (4.3 + 0.22 * n_leg) * len(kinds)), layout="constrained")
    grid = fig.subplots(len(kinds), len(axes_), squeeze=False)
    for ri, kind in enumerate(kinds):
        for ci, axis in enumerate(axes_):
            ax = grid[ri][ci]
            sel = [c for c in curves if c["kind"] == kind and c["axis"] == axis]
            scale = 1.0 if kind == "latency" else mem_scale
            allx: list[float] = []
            ally: list[float] = []
            for c in sel:
                pts = sorted((x, y * scale) for x, y in zip(c["xs"], c["ys"], strict=True) if y is not None)
                pos = [(x, y) for x, y in pts if x > 0 and y > 0]
                k, _used = fit_exponent([p[0] for p in pts], [p[1] for p in pts])
                dropped = len(pts) - len(pos)
                label = f"{c['model']} ({c['family'] or '?'}): " + (f"k = {k:.2f}" if k is not None else "k —")
                if dropped:
                    label += f"  [{dropped} pt ≤ 0 left out]"
                if c.get("fixed"):
                    label += f"  · {c['fixed']}"
                col = color(c)
                if pos:
                    ax.plot([p[0] for p in pos], [p[1] for p in pos], marker=marker_of[c["model"]], color=col,
                            linewidth=1.6, markersize=6, label=label)
                    allx += [p[0] for p in pos]
                    ally += [p[1] for p in pos]
                else:
                    ax.plot([], [], marker=marker_of[c["model"]], color=col, label=label)
                if k is not None:
                    lx = np.log([p[0] for p in pos])
                    ly = np.log([p[1] for p in pos])
                    slope, icpt = np.polyfit(lx, ly, 1)
                    fx = np.array([min(p[0] for p in pos), max(p[0] for p in pos)])
                    ax.plot(fx, np.exp(icpt) * fx**slope, linestyle="--", color=col, linewidth=0.9, alpha=0.7)
            ax.set_xscale("log", base=2)
            if allx:
                ticks = _cluster_ticks(allx)
                ax.xaxis.set_major_locator(FixedLocator(ticks))
                ax.xaxis.set_minor_locator(NullLocator())
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
                ax.set_xlim(min(ticks) / 1.3, max(ticks) * 1.3)
            if ally:
                lo, hi = min(ally) / 1.6, max(ally) * 1.6
                _log_y(ax, lo, hi)
                ax.set_ylim(lo, hi)
            else:
                ax.set_yscale("log")
                ax.text(0.5, 0.5, "no positive values to plot", transform=ax.transAxes, ha="center", color="#777")
            ax.grid(alpha=0.3, which="both")
            ax.set_xlabel("sequence length (tokens per text)" if axis == "seq_len" else "batch size (texts)")
            ax.set_ylabel("extraction latency, median (s)" if kind == "latency"
                          else f"peak RSS added by extraction ({mem_unit})")
            what = "Latency" if kind == "latency" else "Extraction memory"
            ax.set_title(f"{what} vs {'sequence length' if axis == 'seq_len' else 'batch size'} (log-log)",
                         fontsize=11)
            if sel:
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=7.5, frameon=False,
                          ncol=1, title="model (family): fitted exponent k", title_fontsize=7.5)
    return _png(fig)


# ---------------------------------------------------------------- detection


def confusion_chart(panels: list[dict[str, Any]], rows: list[str], cols: list[str]) -> bytes | None:
    """One matrix per (source, tier): rows expected family, columns detected family (or "error").

    Panels: {source, tier, counts {(expected, got): n}, diagonal_known (bool), title}. Where the results
    record misclassifications only (labelled set), the diagonal is shown as '·' and the title gives the
    number correct.
    """
    if not panels or not rows or not cols:
        return None
    sources = list(dict.fromkeys(p["source"] for p in panels))
    tiers = list(dict.fromkeys(p["tier"] for p in panels))
    nr, nc = len(rows), len(cols)
    cell = min(0.5, 2.7 / max(nc, 1))  # three tiers side by side fit the page's 12 in
    fig = Figure(figsize=(max(3.6, 1.3 + nc * cell) * len(tiers), (1.9 + nr * cell) * len(sources)),
                 layout="constrained")
    grid = fig.subplots(len(sources), len(tiers), squeeze=False)

    def short(labels: list[str]) -> list[str]:
        return [lab.replace("domain_specific", "domain_\nspecific") for lab in labels]

    for ri, src in enumerate(sources):
        for ci, tier in enumerate(tiers):
            ax = grid[ri][ci]
            p = next((p for p in panels if p["source"] == src and p["tier"] == tier), None)
            if p is None:
                ax.set_axis_off()
                continue
            img = np.ones((nr, nc, 4))
            off_max = max([v for (e, g), v in p["counts"].items() if e != g] + [1])
            diag_max = max([v for (e, g), v in p["counts"].items() if e == g] + [1])
            for i, e in enumerate(rows):
                for j, g in enumerate(cols):
                    v = p["counts"].get((e, g), 0)
                    if e == g and not p["diagonal_known"]:
                        img[i, j] = to_rgba("#eceef1")
                    elif v and e == g:
                        a = 0.25 + 0.6 * v / diag_max
                        img[i, j] = (0.33 * a + (1 - a), 0.66 * a + (1 - a), 0.41 * a + (1 - a), 1)
                    elif v:
                        a = 0.3 + 0.6 * math.log1p(v) / math.log1p(off_max)
                        img[i, j] = (0.77 * a + (1 - a), 0.31 * a + (1 - a), 0.32 * a + (1 - a), 1)
            ax.imshow(img, interpolation="nearest")
            for i, e in enumerate(rows):
                for j, g in enumerate(cols):
                    v = p["counts"].get((e, g), 0)
                    if e == g and not p["diagonal_known"]:
                        ax.text(j, i, "✓", ha="center", va="center", color="#8a8f98", fontsize=11)
                    elif v:
                        ax.text(j, i, str(v), ha="center", va="center", fontsize=10,
                                color="#14532d" if e == g else "#5c0f0f", fontweight="bold")
            ax.set_xticks(range(nc))
            ax.set_yticks(range(nr))
            ax.set_xticklabels(short(cols), fontsize=9, rotation=45, ha="right", rotation_mode="anchor")
            ax.set_yticklabels(short(rows), fontsize=9)
            ax.set_xticks(np.arange(-0.5, nc, 1), minor=True)
            ax.set_yticks(np.arange(-0.5, nr, 1), minor=True)
            ax.grid(which="minor", color="#d0d4da", linewidth=0.8)
            ax.tick_params(which="minor", length=0)
            ax.set_xlabel("detected family", fontsize=9)
            ax.set_ylabel("expected family", fontsize=9)
            ax.set_title(p["title"], fontsize=10)
    return _png(fig)


# ---------------------------------------------------------------- baseline comparison and trend

OUTCOME_COLORS = {
    "regression": "#C44E52",
    "target_fail": "#8B1A1A",
    "improvement": "#55A868",
    "pass": "#8C8C8C",
    "still_failing": "#DA8BC3",
    "incomparable": "#CCB974",
    "new": "#4C72B0",
    "no gate": "#8C8C8C",
}


def comparison_chart(rows: list[dict[str, Any]], limit: int = 25) -> bytes | None:
    """Horizontal bars of the relative change (current vs baseline, %) per figure, coloured by gate outcome.

    Rows: label, change (fraction), outcome. The `limit` largest changes are drawn.
    """
    rows = [r for r in rows if r.get("change") is not None and math.isfinite(r["change"])]
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: -abs(r["change"]))[:limit]
    rows.reverse()
    fig = Figure(figsize=(11.5, 1.5 + 0.3 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    ys = range(len(rows))
    vals = [r["change"] * 100 for r in rows]
    colors = [OUTCOME_COLORS.get(r["outcome"], "#8C8C8C") for r in rows]
    span = min(max(abs(v) for v in vals) or 1.0, 100.0)  # one huge change must not flatten the others
    ax.barh(list(ys), [max(-span, min(span, v)) for v in vals], color=colors, height=0.7)
    ax.set_yticks(list(ys))
    ax.set_yticklabels([textwrap.shorten(r["label"], 70, placeholder="…") for r in rows], fontsize=8.5)
    ax.axvline(0, color="#333", linewidth=0.8)
    ax.set_xlim(-span * 1.3, span * 1.3)
    for y, v in zip(ys, vals, strict=True):
        shown = max(-span, min(span, v))
        ax.text(shown + (span * 0.02 if v >= 0 else -span * 0.02), y, f"{v:+.1f}%" + (" ▸" if v != shown else ""),
                va="center", ha="left" if v >= 0 else "right", fontsize=7.5)
    ax.set_xlabel("change of current vs baseline (%) — for latency and memory, negative is better")
    ax.set_title(f"Current run vs baseline: the {len(rows)} largest changes" if len(rows) == limit
                 else "Current run vs baseline, largest changes first")
    ax.grid(axis="x", alpha=0.3)
    used = list(dict.fromkeys(r["outcome"] for r in reversed(rows)))
    from matplotlib.patches import Patch

    fig.legend([Patch(color=OUTCOME_COLORS.get(o, "#8C8C8C")) for o in used], used, loc="outside right upper",
               fontsize=8, title="gate outcome", title_fontsize=8)
    return _png(fig)


def _moved(s: dict[str, Any]) -> float:
    vals = [v for _, v in sorted(s["points"]) if v]
    return abs(vals[-1] / vals[0] - 1) if len(vals) >= 2 else 0.0


def trend_chart(series: list[dict[str, Any]], run_labels: list[str], per_panel: int = 12) -> bytes | None:
    """Lines over runs (x = run, in start order): one panel for latency medians, one for peak memory.

    Series: {kind ("latency"|"memory"), label, points [(run index, value)]}. At most `per_panel` lines per
    panel — those that moved most between the first and the last run — so the panel stays legible.
    """
    series = [s for s in series if len(s["points"]) >= 2]
    totals = {k: sum(1 for s in series if s["kind"] == k) for k in ("latency", "memory")}
    kept = []
    for kind in ("latency", "memory"):
        sel = [s for s in series if s["kind"] == kind]
        top = set(map(id, sorted(sel, key=_moved, reverse=True)[:per_panel]))
        kept += [s for s in sel if id(s) in top]
    series = kept
    if not series:
        return None
    kinds = [k for k in ("latency", "memory") if any(s["kind"] == k for s in series)]
    n = len(run_labels)
    fig = Figure(figsize=(min(18.0, max(10.0, 6 + 0.45 * n)), 3.9 * len(kinds) + 0.8), layout="constrained")
    axs = fig.subplots(len(kinds), 1, squeeze=False, sharex=True)
    for ri, kind in enumerate(kinds):
        ax = axs[ri][0]
        sel = [s for s in series if s["kind"] == kind]
        vals = [v for s in sel for _, v in s["points"] if v is not None and v > 0]
        for i, s in enumerate(sel):
            pts = sorted(s["points"])
            ax.plot([p[0] for p in pts], [p[1] for p in pts], **line_style(i), linewidth=1.4, markersize=5,
                    label=textwrap.fill(s["label"], 48))
        if vals and kind == "latency" and max(vals) / min(vals) > 30:
            _log_y(ax, min(vals), max(vals))
            ax.set_ylabel("median latency (s) — log scale")
        elif kind == "latency":
            ax.set_ylim(0, max(vals) * 1.15 if vals else 1)
            ax.set_ylabel("median latency (s)")
        else:
            ax.set_ylim(0, max(vals) * 1.15 if vals else 1)
            ax.set_ylabel("peak memory (GB = 1e9 B)")
        total = totals[kind]
        title = "Extraction latency over runs" if kind == "latency" else "Peak memory over runs"
        if len(sel) < total:
            title += f" ({len(sel)} of {total} figures: those that moved most)"
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, frameon=False)
    ax = axs[-1][0]
    step = max(1, math.ceil(n / 24))
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([run_labels[i] for i in ticks], rotation=35, ha="right", fontsize=8)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xlabel("run (ordered by start time, UTC)")
    return _png(fig)
