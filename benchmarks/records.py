"""The benchmark's log call and the check that every output line arrived intact.

Every library logs the same INFO call: the message ``request handled`` with five
fields of five types (str, int, float, bool, datetime). The int field is the record's
sequence number, so the checker can tell a lost line from a duplicated one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

MESSAGE = "request handled"
USER = "alice"
DURATION_MS = 12.5
CACHED = True
AT = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.timezone.utc)
_SAMPLES = 3


def fields(seq: int) -> dict[str, Any]:
    """The five fields of record number *seq*."""
    return {"user": USER, "seq": seq, "duration_ms": DURATION_MS, "cached": CACHED, "at": AT}


@dataclass
class LineCheck:
    """What a file or pipe capture held, line by line."""

    lines: int = 0
    valid: int = 0
    corrupt: int = 0
    duplicates: int = 0
    missing: int = 0
    dropped_reported: int = 0
    other: int = 0
    traced: int = 0
    # The last line is a cut-off one: a write that gave up at a shutdown deadline.
    torn_tail: bool = False
    samples: list[str] = field(default_factory=list)

    def bad(self, raw: bytes) -> None:
        """Count a corrupt line, keeping the first few (shortened) for the report."""
        self.corrupt += 1
        if len(self.samples) < _SAMPLES:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            if len(text) > 240:
                text = f"{text[:140]} ... {text[-80:]}"
            self.samples.append(text)

    @property
    def intact(self) -> bool:
        return self.corrupt == 0 and self.duplicates == 0 and self.missing == 0

    def to_dict(self) -> dict[str, int | bool | list[str]]:
        return {**asdict(self), "intact": self.intact}


def _walk(obj: Any) -> Iterator[dict[str, Any]]:
    # Libraries nest fields differently (loguru: record.extra; aiologger: flattened).
    if isinstance(obj, dict):
        yield obj
        for value in obj.values():
            if isinstance(value, dict):
                yield from _walk(value)


def _find(obj: dict[str, Any], key: str) -> Any:
    for d in _walk(obj):
        if key in d:
            return d[key]
    raise KeyError(key)


def _is_record(obj: dict[str, Any]) -> int | None:
    """Return the sequence number if *obj* is a complete benchmark record, else None."""
    try:
        ok = (
            _find(obj, "user") == USER
            and _find(obj, "duration_ms") == DURATION_MS
            and _find(obj, "cached") is CACHED
            and str(_find(obj, "at")).startswith("2026-11-25")
        )
        seq = _find(obj, "seq")
    except KeyError:
        return None
    if not ok or not isinstance(seq, int) or isinstance(seq, bool):
        return None
    has_message = any(isinstance(v, str) and MESSAGE in v for d in _walk(obj) for v in d.values())
    return seq if has_message else None


def _dropped(obj: dict[str, Any]) -> int:
    """asynclog reports lost records as a line from logger ``asynclog`` with ``dropped``."""
    if obj.get("logger") == "asynclog" and isinstance(obj.get("dropped"), int):
        return int(obj["dropped"])
    return 0


def check_records(path: Path, expected: int) -> LineCheck:
    """Check a micro-benchmark output file holding records ``0..expected-1``.

    Lines that are not JSON or lack a field are ``corrupt``; sequence numbers seen twice
    are ``duplicates``; those never seen are ``missing``.
    """
    check = LineCheck()
    seen = bytearray(expected)
    with path.open("rb") as f:
        for raw in f:
            check.lines += 1
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                check.bad(raw)
                continue
            if not isinstance(obj, dict):
                check.bad(raw)
                continue
            seq = _is_record(obj)
            if seq is None:
                dropped = _dropped(obj)
                if dropped:
                    check.dropped_reported += dropped
                    check.other += 1
                else:
                    check.bad(raw)
                continue
            if not 0 <= seq < expected:
                check.bad(raw)
            elif seen[seq]:
                check.duplicates += 1
            else:
                seen[seq] = 1
                check.valid += 1
    check.missing = expected - check.valid
    return check


def check_json_lines(path: Path) -> LineCheck:
    """Check a server's log capture: every line must be a JSON object.

    The server's lines are not numbered (requests arrive concurrently), so ``missing``
    is left to the caller, who compares ``valid`` with the requests served. ``traced``
    counts lines carrying a ``trace_id``, to confirm tracing was on or off as intended.
    """
    check = LineCheck()
    with path.open("rb") as f:
        for raw in f:
            check.lines += 1
            check.torn_tail = False
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                check.bad(raw)
                check.torn_tail = True
                continue
            if not isinstance(obj, dict):
                check.bad(raw)
                continue
            dropped = _dropped(obj)
            if dropped:
                check.dropped_reported += dropped
                check.other += 1
            else:
                check.valid += 1
                check.traced += "trace_id" in obj
    return check
