"""Noise-aware regression gate: compare a current run with a baseline, like with like.

Per record key (suite, model, metric, workload name, workload shape):
- latency (lower is better) regresses only when the median is >= `latency_threshold` worse AND the
  samples differ significantly (two-sided Mann-Whitney U, p < `alpha`) — a fixed percentage alone flags
  noise, a test alone flags trivial shifts. When both records carry a machine-speed reference timed in the
  same rounds (`stats.reference`, harness.reference) the samples judged are the per-round ratios
  extraction / reference (`latency_basis="reference"`, the default), so a machine that runs slower or faster
  than when the baseline was measured does not read as a change of the code; the raw change and the machine's
  change (the reference's) are reported beside it. Without a reference on both sides, or with
  `latency_basis="raw"`, the raw samples are judged;
- memory (lower is better) regresses beyond max(+3 %, +32 MB);
- reclamation and accuracy (higher is better) regress when they drop by more than `fraction_tolerance`;
- stated targets are hard floors whatever the baseline: a target that passed in the baseline (or has no
  baseline) and fails now is a regression; one that failed in both is reported as still failing
  (`--strict-targets` makes every failing target a regression).
Improvements beyond the same thresholds are reported. Different fingerprints (model config, weights, dtype,
device, libraries, hardware) make a pair incomparable, and so do timings taken by different methods.

Exit codes of `python -m harness gate`: 0 pass, 1 regression, 2 incomparable (nothing comparable, or a
baseline figure with no comparable current figure) or usage error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import Any

from harness.fingerprint import incomparable_reasons
from harness.results import Record

LOWER_IS_BETTER = {"s": "latency", "GB": "memory"}
HIGHER_IS_BETTER_UNITS = ("fraction",)
MB = 1e6


LATENCY_BASES = ("reference", "raw")


@dataclass
class GateConfig:
    latency_basis: str = "reference"  # one of LATENCY_BASES
    latency_threshold: float = 0.10
    alpha: float = 0.01
    memory_fraction: float = 0.03
    memory_floor_bytes: float = 32 * MB
    fraction_tolerance: float = 0.01
    strict_targets: bool = False


@dataclass
class Comparison:
    key: tuple[Any, ...]
    outcome: str  # "pass" | "regression" | "improvement" | "incomparable" | "target_fail" | "still_failing" | "new"
    baseline: float | None = None
    current: float | None = None
    change: float | None = None
    p_value: float | None = None
    reasons: list[str] = field(default_factory=list)
    basis: str | None = None  # latency only: "reference" (per-round ratio judged) or "raw"
    judged_change: float | None = None  # latency only: the median change the verdict was taken on

    def to_dict(self) -> dict[str, Any]:
        suite, model, metric, workload, _shape = self.key
        return {"suite": suite, "model": model, "metric": metric, "workload": workload, "outcome": self.outcome,
                "baseline": self.baseline, "current": self.current, "change": self.change,
                "p_value": self.p_value, "basis": self.basis, "judged_change": self.judged_change,
                "reasons": self.reasons}


def record_key(r: Record) -> tuple[Any, ...]:
    w = r.workload or {}
    shape = tuple(sorted((k, str(v)) for k, v in w.items() if k != "name"))
    return (r.suite, r.model, r.metric, w.get("name"), shape)


def _by_key(records: list[Record]) -> dict[tuple[Any, ...], Record]:
    out: dict[tuple[Any, ...], Record] = {}
    for r in records:
        if r.verdict == "not_measured" and r.value is None:
            continue
        out[record_key(r)] = r  # the last record of a key wins (shards/runs given in order)
    return out


def mann_whitney_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Mann-Whitney U p-value; None when either sample is too small to test."""
    if len(a) < 3 or len(b) < 3:
        return None
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def reference_samples(r: Record) -> tuple[str | None, list[float]]:
    """(kind, samples) of a record's machine-speed reference; (None, []) when it has none."""
    ref = (r.stats or {}).get("reference") or {}
    return ref.get("kind"), list(ref.get("samples") or [])


def relative_samples(samples: list[float], reference: list[float]) -> list[float] | None:
    """Per-round extraction / reference ratios; None when the reference is not one positive sample per round."""
    if not samples or len(reference) != len(samples) or not all(x > 0 for x in reference):
        return None
    return [s / x for s, x in zip(samples, reference, strict=True)]


def _latency(base: Record, cur: Record, cfg: GateConfig, comp: Comparison) -> None:
    """Judge one latency pair: on per-round ratios to the reference when both have one, else on raw samples."""
    bs = (base.stats or {}).get("samples") or []
    cs = (cur.stats or {}).get("samples") or []
    bm = median(bs) if bs else base.value
    cm = median(cs) if cs else cur.value
    raw = (cm - bm) / bm if bm else 0.0
    text = f"median {bm:.4g} s -> {cm:.4g} s ({raw:+.1%})"
    (b_kind, b_ref), (c_kind, c_ref) = reference_samples(base), reference_samples(cur)
    br, cr = relative_samples(bs, b_ref), relative_samples(cs, c_ref)
    if cfg.latency_basis == "reference" and br and cr and b_kind == c_kind:
        comp.basis, judged_b, judged_c = "reference", br, cr
        rb, rc = median(b_ref), median(c_ref)
        rel = median(cr) / median(br) - 1
        text += (f"; relative to the reference ({c_kind}, same rounds) {rel:+.1%}; "
                 f"machine speed: reference {rb:.4g} s -> {rc:.4g} s ({(rc - rb) / rb:+.1%})")
    else:
        comp.basis, judged_b, judged_c, rel = "raw", bs, cs, raw
        if cfg.latency_basis == "reference" and (br or cr):
            text += "; judged raw: " + ("reference kinds differ" if br and cr else "only one run has a reference")
    comp.judged_change = rel
    comp.p_value = mann_whitney_p(judged_b, judged_c)
    significant = comp.p_value is not None and comp.p_value < cfg.alpha
    if significant and rel >= cfg.latency_threshold:
        comp.outcome = "regression"
    elif significant and rel <= -cfg.latency_threshold:
        comp.outcome = "improvement"
    comp.reasons.append(f"{text}, p={comp.p_value}")


def _compare_values(base: Record, cur: Record, cfg: GateConfig) -> Comparison:
    key = record_key(cur)
    b, c = base.value, cur.value
    comp = Comparison(key, "pass", b, c)
    if b is None or c is None:
        comp.outcome = "incomparable"
        comp.reasons.append("a value is missing" + (f": {cur.error}" if cur.error else ""))
        return comp
    comp.change = (c - b) / abs(b) if b else None
    kind = LOWER_IS_BETTER.get(cur.unit)
    if kind == "latency":
        _latency(base, cur, cfg, comp)
    elif kind == "memory":
        allowed = max(cfg.memory_fraction * abs(b), cfg.memory_floor_bytes / 1e9)
        if c - b > allowed:
            comp.outcome = "regression"
        elif b - c > allowed:
            comp.outcome = "improvement"
        comp.reasons.append(f"{b:.4g} GB -> {c:.4g} GB (allowed +{allowed:.3g} GB)")
    elif cur.unit in HIGHER_IS_BETTER_UNITS:
        if b - c > cfg.fraction_tolerance:
            comp.outcome = "regression"
        elif c - b > cfg.fraction_tolerance:
            comp.outcome = "improvement"
        comp.reasons.append(f"{b:.4g} -> {c:.4g} (tolerance {cfg.fraction_tolerance})")
    return comp


def timing_method_reasons(base: Record, cur: Record) -> list[str]:
    """Timings taken by different methods (host clock, synchronised or not, vs CUDA events) do not compare.

    A record without `stats.method` (results 1.0, or a producer that did not say) compares as before.
    """
    mb, mc = (base.stats or {}).get("method"), (cur.stats or {}).get("method")
    return [f"timing method: {mb!r} != {mc!r}"] if mb and mc and mb != mc else []


def compare(baseline: list[Record], current: list[Record], cfg: GateConfig | None = None) -> list[Comparison]:
    """One Comparison per key present in either run."""
    cfg = cfg or GateConfig()
    if cfg.latency_basis not in LATENCY_BASES:
        raise ValueError(f"latency_basis must be one of {', '.join(LATENCY_BASES)}, got {cfg.latency_basis!r}")
    base, cur = _by_key(baseline), _by_key(current)
    out: list[Comparison] = []
    for key, c in cur.items():
        b = base.get(key)
        if b is None:
            comp = Comparison(key, "new", None, c.value)
        else:
            why = incomparable_reasons((b.extra or {}).get("fingerprint"), (c.extra or {}).get("fingerprint"))
            why += timing_method_reasons(b, c)
            comp = Comparison(key, "incomparable", b.value, c.value, reasons=why) if why else \
                _compare_values(b, c, cfg)
        if c.verdict in ("fail", "error") and c.target:
            failed_before = b is not None and b.verdict in ("fail", "error")
            if cfg.strict_targets or not failed_before:
                comp.outcome = "target_fail"
                comp.reasons.append(f"stated target {c.target.get('id')} not met: {c.value} {c.unit}")
            elif comp.outcome == "pass":
                comp.outcome = "still_failing"
        out.append(comp)
    for key, b in base.items():
        if key not in cur:
            out.append(Comparison(key, "incomparable", b.value, None, reasons=["missing from the current run"]))
    return out


def exit_code(comparisons: list[Comparison]) -> int:
    outcomes = {c.outcome for c in comparisons}
    if outcomes & {"regression", "target_fail"}:
        return 1
    if not comparisons or "incomparable" in outcomes:
        return 2
    return 0


def summarize(comparisons: list[Comparison]) -> str:
    """Human-readable lines, regressions first."""
    order = {"regression": 0, "target_fail": 1, "incomparable": 2, "improvement": 3, "still_failing": 4,
             "new": 5, "pass": 6}
    lines = []
    for c in sorted(comparisons, key=lambda c: order.get(c.outcome, 9)):
        suite, model, metric, workload, _ = c.key
        lines.append(f"{c.outcome.upper():13} {suite}/{model}/{metric}/{workload}: " + "; ".join(c.reasons))
    counts: dict[str, int] = {}
    for c in comparisons:
        counts[c.outcome] = counts.get(c.outcome, 0) + 1
    lines.append("gate: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "\n".join(lines)
