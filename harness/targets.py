"""Stated targets: the design's claims, as thresholds a measurement can pass or fail.

Why a file and not code: the targets are claims made elsewhere, quoted verbatim; keeping them in
`targets.toml` (hashed into every run) makes it visible when a threshold moves. Validation is strict so a
typo in a metric name fails loudly instead of leaving a target silently `not_measured` forever.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "DEFAULT_TARGETS_PATH",
    "METRIC_NAME",
    "OPERATORS",
    "Target",
    "TargetFileError",
    "TargetSet",
    "load_targets",
]

DEFAULT_TARGETS_PATH = Path(__file__).resolve().parent.parent / "targets.toml"
OPERATORS = (">=", ">", "<=", "<", "==", "between")
# a metric is any snake_case name the suites record; a typo then shows up as a target nobody measures
# (reported not_measured in every run), not as a silently ignored one
METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_KEYS = {"id", "metric", "operator", "value", "unit", "quote", "models", "families"}
_REQUIRED = ("id", "metric", "operator", "value", "unit", "quote")


class TargetFileError(ValueError):
    """targets.toml is missing, unparsable or inconsistent; the message names the file and the entry."""


@dataclass(frozen=True)
class Target:
    """One stated target. `value` is a float, or (lo, hi) for "between" (inclusive)."""

    id: str
    metric: str
    operator: str
    value: float | tuple[float, float]
    unit: str
    quote: str
    models: tuple[str, ...] = ()
    families: tuple[str, ...] = ()

    def applies_to(self, model: str | None, family: str | None) -> bool:
        """True when every restriction this target carries is met by (model, family)."""
        if self.models and model not in self.models:
            return False
        return not (self.families and family not in self.families)

    def verdict(self, value: float | bool) -> str:
        """Return "pass" or "fail" for a measured value. NaN fails; None is the caller's job."""
        if value is None:
            raise ValueError(f"target {self.id}: no value to judge (report not_measured or error instead)")
        v = float(value)
        if math.isnan(v):
            return "fail"
        op = self.operator
        if op == "between":
            lo, hi = self.value  # type: ignore[misc]
            ok = lo <= v <= hi
        else:
            t = float(self.value)  # type: ignore[arg-type]
            ok = {
                ">=": v >= t,
                ">": v > t,
                "<=": v <= t,
                "<": v < t,
                "==": v == t,
            }[op]
        return "pass" if ok else "fail"

    def describe(self) -> str:
        """Human form, e.g. '< 2 s' or 'between 0.2 and 0.3 fraction'."""
        if self.operator == "between":
            lo, hi = self.value  # type: ignore[misc]
            return f"between {lo:g} and {hi:g} {self.unit}"
        return f"{self.operator} {float(self.value):g} {self.unit}"  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "metric": self.metric,
            "operator": self.operator,
            "value": list(self.value) if isinstance(self.value, tuple) else self.value,
            "unit": self.unit,
            "quote": self.quote,
            "models": list(self.models),
            "families": list(self.families),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "target") -> Target:
        """Validate one entry; raises TargetFileError naming `where` on any problem."""
        if not isinstance(d, dict):
            raise TargetFileError(f"{where}: expected a table, got {type(d).__name__}")
        unknown = set(d) - _KEYS
        if unknown:
            raise TargetFileError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise TargetFileError(f"{where}: missing key(s) {missing}")
        for k in ("id", "metric", "operator", "unit", "quote"):
            if not isinstance(d[k], str) or not d[k].strip():
                raise TargetFileError(f"{where}: {k!r} must be a non-empty string")
        where = f"{where} ({d['id']})"
        if not isinstance(d["metric"], str) or not METRIC_NAME.match(d["metric"]):
            raise TargetFileError(f"{where}: metric {d['metric']!r} is not a snake_case name")
        op = d["operator"]
        if op not in OPERATORS:
            raise TargetFileError(f"{where}: operator {op!r} not one of {OPERATORS}")
        raw = d["value"]
        value: float | tuple[float, float]
        if op == "between":
            if (
                not isinstance(raw, (list, tuple))
                or len(raw) != 2
                or not all(_is_number(x) for x in raw)
                or float(raw[0]) > float(raw[1])
            ):
                raise TargetFileError(f"{where}: 'between' needs value = [lo, hi] with lo <= hi, got {raw!r}")
            value = (float(raw[0]), float(raw[1]))
        else:
            if not _is_number(raw):
                raise TargetFileError(f"{where}: value must be a number for {op!r}, got {raw!r}")
            value = float(raw)
        models = _str_list(d.get("models", []), f"{where}: models")
        families = _str_list(d.get("families", []), f"{where}: families")
        return cls(
            id=d["id"],
            metric=d["metric"],
            operator=op,
            value=value,
            unit=d["unit"],
            quote=d["quote"],
            models=models,
            families=families,
        )


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _str_list(x: Any, where: str) -> tuple[str, ...]:
    if not isinstance(x, list) or not all(isinstance(s, str) and s for s in x):
        raise TargetFileError(f"{where} must be a list of non-empty strings, got {x!r}")
    return tuple(x)


class TargetSet:
    """The validated targets of one file, with its path and content hash (recorded in every run)."""

    def __init__(self, targets: Sequence[Target], *, path: Path | None = None, sha256: str | None = None):
        self._targets = tuple(targets)
        self.path = path
        self.sha256 = sha256
        _check_unambiguous(self._targets, path)

    def all(self) -> list[Target]:
        return list(self._targets)

    def __iter__(self) -> Iterator[Target]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def get(self, target_id: str) -> Target | None:
        return next((t for t in self._targets if t.id == target_id), None)

    def find(self, metric: str, model: str | None = None, family: str | None = None) -> Target | None:
        """The target judging `metric` for this model: model-specific, else family-specific, else generic."""
        best: Target | None = None
        best_rank = -1
        for t in self._targets:
            if t.metric != metric or not t.applies_to(model, family):
                continue
            rank = 2 if t.models else 1 if t.families else 0
            if rank > best_rank:
                best, best_rank = t, rank
        return best

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": str(self.path) if self.path else None,
            "sha256": self.sha256,
            "list": [t.to_dict() for t in self._targets],
        }

    @classmethod
    def from_dicts(cls, items: Iterable[dict[str, Any]]) -> TargetSet:
        """Rebuild from a results file's `targets.list` (for reports on old runs)."""
        return cls([Target.from_dict(d, where=f"target[{i}]") for i, d in enumerate(items)])


def _check_unambiguous(targets: Sequence[Target], path: Path | None) -> None:
    """Reject duplicate ids and two targets that would both be the best match for one lookup."""
    src = f"{path}: " if path else ""
    seen: set[str] = set()
    slots: dict[tuple[str, str, str], str] = {}
    for t in targets:
        if t.id in seen:
            raise TargetFileError(f"{src}duplicate target id {t.id!r}")
        seen.add(t.id)
        keys: list[tuple[str, str, str]]
        if t.models:
            keys = [(t.metric, "model", m) for m in t.models]
        elif t.families:
            keys = [(t.metric, "family", f) for f in t.families]
        else:
            keys = [(t.metric, "generic", "")]
        for k in keys:
            if k in slots:
                raise TargetFileError(
                    f"{src}targets {slots[k]!r} and {t.id!r} both apply to metric {k[0]!r}"
                    + (f" for {k[1]} {k[2]!r}" if k[2] else "")
                )
            slots[k] = t.id


def load_targets(path: str | Path | None = None) -> TargetSet:
    """Load and validate targets.toml (default: the repo root's). Raises TargetFileError on any problem."""
    p = Path(path) if path is not None else DEFAULT_TARGETS_PATH
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise TargetFileError(f"{p}: cannot read targets file: {e}") from e
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise TargetFileError(f"{p}: not valid TOML: {e}") from e
    extra = set(data) - {"version", "target"}
    if extra:
        raise TargetFileError(f"{p}: unknown top-level key(s) {sorted(extra)}; expected 'version' and [[target]]")
    if data.get("version", 1) != 1:
        raise TargetFileError(f"{p}: unsupported targets file version {data.get('version')!r} (expected 1)")
    entries = data.get("target")
    if not isinstance(entries, list) or not entries:
        raise TargetFileError(f"{p}: no [[target]] entries")
    targets = [Target.from_dict(d, where=f"{p}: target[{i}]") for i, d in enumerate(entries)]
    return TargetSet(targets, path=p.resolve(), sha256=hashlib.sha256(raw).hexdigest())
