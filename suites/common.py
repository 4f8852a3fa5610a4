"""Small helpers the suites share: assertion messages that carry the measured number."""

from __future__ import annotations

from typing import Any


def check_verdict(record: Any) -> None:
    """Fail the test when the record's verdict is fail or error, naming the measured value and the target."""
    if record.verdict in ("pass", "not_applicable"):
        return
    target = record.target or {}
    raise AssertionError(
        f"{record.verdict.upper()}: {record.metric} of {record.model} = {record.value} {record.unit} "
        f"(target {target.get('operator')} {target.get('value')} {target.get('unit')}: "
        f"\"{target.get('quote')}\")" + (f"; error: {record.error}" if record.error else "")
    )
