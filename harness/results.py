"""The versioned results format: one JSON file per run, one record per (suite, model, metric).

Why this shape: a figure must carry everything needed to judge it later (device, dtype, weights'
provenance, workload, raw samples, the target and its quote), and every stated target must appear in
every run, measured or visibly `not_measured`. Files are written atomically (temp file in the same
folder, fsync, os.replace) so a crash or a CI timeout never leaves a half-written result that a later
gate would misread. The format is documented in results/README.md; bump SCHEMA_VERSION's minor for
added fields, its major for anything a reader of the old format would misread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import SCHEMA_NAME, SCHEMA_VERSION
from harness.targets import TargetSet

__all__ = [
    "VERDICTS",
    "WEIGHTS",
    "Record",
    "Run",
    "atomic_write_json",
    "find_run_files",
    "load_records",
    "load_run",
    "make_record",
    "safe_component",
]

VERDICTS = ("pass", "fail", "not_applicable", "not_measured", "error")
WEIGHTS = ("pretrained", "synthetic", None)


@dataclass(kw_only=True)
class Record:
    """One measured (or failed, or unmeasured) figure. See results/README.md for each field."""

    suite: str
    model: str | None = None
    family: str | None = None
    weights: str | None = None
    device: str | None = None
    dtype: str | None = None
    workload: dict[str, Any] = field(default_factory=dict)
    metric: str
    value: float | None = None
    unit: str
    stats: dict[str, Any] | None = None
    target: dict[str, Any] | None = None
    verdict: str = "not_applicable"
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {self.weights!r}")
        if self.value is not None:
            self.value = float(self.value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        """Read a record; keys this version does not know (newer minor versions) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def make_record(
    *,
    suite: str,
    model: str | None,
    metric: str,
    value: float | bool | None,
    unit: str,
    targets: TargetSet,
    family: str | None = None,
    weights: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    workload: dict[str, Any] | None = None,
    stats: dict[str, Any] | None = None,
    error: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Record:
    """Build a record, attaching the applicable target and its verdict.

    Verdict: `error` when error text is given (or the value is NaN/inf, or its unit differs from the
    target's); `not_measured` when value is None; `not_applicable` when no target applies to
    (metric, model, family); else the target's pass/fail.
    """
    target = targets.find(metric, model=model, family=family)
    v: float | None = None if value is None else float(value)
    if v is not None and not math.isfinite(v):
        error = error or f"non-finite value {v!r}"
        v = None
    if error is None and target is not None and v is not None and unit != target.unit:
        error = f"unit mismatch: record in {unit!r}, target {target.id!r} in {target.unit!r}"
    if error is not None:
        verdict = "error"
    elif v is None:
        verdict = "not_measured"
    elif target is None:
        verdict = "not_applicable"
    else:
        verdict = target.verdict(v)
    return Record(
        suite=suite,
        model=model,
        family=family,
        weights=weights,
        device=device,
        dtype=dtype,
        workload=dict(workload or {}),
        metric=metric,
        value=v,
        unit=unit,
        stats=stats,
        target=target.to_dict() if target is not None else None,
        verdict=verdict,
        error=error,
        extra=dict(extra or {}),
    )


# ---------------------------------------------------------------- file names and atomic writes

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_component(name: str, max_len: int = 100) -> str:
    """A single, harmless file-name part for `name` ("EleutherAI/gpt-neo-125M" → "EleutherAI__gpt-neo-125M").

    Separators become "__", anything outside [A-Za-z0-9._-] becomes "_", ".." sequences and a leading dot
    are neutralised, so the result can never climb out of or hide in a folder. Over-long names are cut and
    given a hash suffix to stay distinct.
    """
    s = str(name).replace("/", "__").replace("\\", "__")
    s = _UNSAFE.sub("_", s)
    while ".." in s:
        s = s.replace("..", "_.")
    if s.startswith("."):
        s = "_" + s[1:]
    if not s:
        s = "_"
    if len(s) > max_len:
        digest = hashlib.sha256(str(name).encode()).hexdigest()[:10]
        s = s[: max_len - 11] + "-" + digest
    return s


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, obj: Any, exclusive: bool = False) -> Path:
    """Write JSON so readers see the old file or the complete new one, never a partial one.

    Serialises first (strict JSON: NaN/inf rejected), then temp file in the same folder, fsync, os.replace,
    fsync of the folder. On any failure the temp file is removed and the target is untouched.
    exclusive: never replace an existing file (a hard link is atomic and fails when the name is taken);
    raises FileExistsError.
    """
    p = Path(path)
    text = json.dumps(obj, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a results file is as readable as any other
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, p)
            os.unlink(tmp)
        else:
            os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable; not possible everywhere
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return p


# ---------------------------------------------------------------- runs


def _utc_now() -> datetime:
    return datetime.now(UTC)  # datetime.UTC is 3.11+; we support 3.10


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Run:
    """Collects records during a run and writes `results/<run_id>.json` once, at `finish()`."""

    def __init__(
        self,
        *,
        run_id: str,
        command: str,
        results_dir: Path,
        targets: TargetSet,
        environment: dict[str, Any],
        started: datetime,
    ) -> None:
        self.id = run_id
        self.command = command
        self.results_dir = Path(results_dir)
        self.targets = targets
        self.environment = environment
        self.started = started
        self.records: list[Record] = []
        self.path: Path | None = None
        self._lock = threading.Lock()

    @classmethod
    def start(
        cls,
        command: str,
        results_dir: Path,
        targets: TargetSet,
        *,
        environment: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> Run:
        """Open a run; captures the environment now (pass `environment` to reuse one)."""
        started = _utc_now()
        if environment is None:
            from harness.env import capture_environment

            environment = capture_environment()
        rid = run_id or f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        if safe_component(rid) != rid:
            raise ValueError(f"run id {rid!r} is not a safe file name")
        return cls(
            run_id=rid,
            command=command,
            results_dir=Path(results_dir),
            targets=targets,
            environment=environment,
            started=started,
        )

    def add(self, record: Record) -> Record:
        if not isinstance(record, Record):
            raise TypeError(f"Run.add expects a Record, got {type(record).__name__}")
        with self._lock:
            if self.path is not None:
                raise RuntimeError(f"run {self.id} is already finished ({self.path})")
            self.records.append(record)
        return record

    def record(self, **kwargs: Any) -> Record:
        """`make_record(**kwargs, targets=self.targets)` and add it."""
        return self.add(make_record(targets=self.targets, **kwargs))

    def _fill_not_measured(self) -> None:
        covered = {r.target.get("id") for r in self.records if r.target}
        for t in self.targets.all():
            if t.id in covered:
                continue
            self.records.append(
                Record(
                    suite="harness",
                    model=t.models[0] if len(t.models) == 1 else None,
                    family=t.families[0] if len(t.families) == 1 else None,
                    metric=t.metric,
                    value=None,
                    unit=t.unit,
                    target=t.to_dict(),
                    verdict="not_measured",
                    extra={"reason": "no check in this run measured this target"},
                )
            )

    def to_dict(self, end: datetime | None = None) -> dict[str, Any]:
        git = self.environment.get("git") or {}
        return {
            "schema": {"name": SCHEMA_NAME, "version": SCHEMA_VERSION},
            "run": {
                "id": self.id,
                "start": _iso(self.started),
                "end": _iso(end) if end else None,
                "command": self.command,
                "git_commit": git.get("commit"),
                "dirty": git.get("dirty"),
            },
            "environment": self.environment,
            "targets": self.targets.to_dict(),
            "records": [r.to_dict() for r in self.records],
        }

    def finish(self) -> Path:
        """Add `not_measured` records for unmeasured targets and write the file atomically. Once only."""
        with self._lock:
            if self.path is not None:
                raise RuntimeError(f"run {self.id} is already finished ({self.path})")
            self._fill_not_measured()
            for attempt in range(100):  # another run that drew the same id keeps its file
                if attempt:
                    self.id = f"{self.id.rsplit('~', 1)[0]}~{attempt}"
                path = self.results_dir / f"{self.id}.json"
                try:
                    atomic_write_json(path, self.to_dict(end=_utc_now()), exclusive=True)
                except FileExistsError:
                    continue
                self.path = path
                return path
            raise FileExistsError(f"no free results file name for run {self.id} in {self.results_dir}")


# ---------------------------------------------------------------- reading


def _is_ours(data: Any) -> bool:
    return (
        isinstance(data, dict) and isinstance(data.get("schema"), dict) and (data["schema"].get("name") == SCHEMA_NAME)
    )


def _check_version(data: dict[str, Any], path: Path) -> None:
    version = str(data["schema"].get("version", ""))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ValueError(f"{path}: results schema version {version!r} not readable (this reader: {SCHEMA_VERSION})")


def load_run(path: str | Path) -> dict[str, Any]:
    """Read one results file; ValueError when it is not a NeuronMap Bench results file of a known version."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{p}: cannot read results file: {e}") from e
    if not _is_ours(data):
        raise ValueError(f"{p}: not a {SCHEMA_NAME} file (pytest-benchmark's JSON, perhaps?)")
    _check_version(data, p)
    return data


def find_run_files(paths_or_dirs: Iterable[str | Path]) -> list[Path]:
    """Results files named directly, plus the results files directly inside any folder given.

    In folders, JSON that is not ours (pytest-benchmark's output, baselines of another kind) is skipped;
    a file named directly must be ours.
    """
    out: list[Path] = []
    for item in paths_or_dirs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.glob("*.json")):
                try:
                    data = json.loads(f.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if _is_ours(data):
                    out.append(f)
        elif p.is_file():
            load_run(p)  # raises with a clear message if it is not a results file
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def load_records(paths_or_dirs: Iterable[str | Path]) -> list[Record]:
    """All records of the given results files / folders, in file order."""
    records: list[Record] = []
    for f in find_run_files(paths_or_dirs):
        data = load_run(f)
        records.extend(Record.from_dict(r) for r in data.get("records", []))
    return records
