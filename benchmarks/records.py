"""The benchmark's log calls (one per record shape) and the check that every line arrived intact.

Every library logs the same INFO call, the message ``request handled`` with the fields of a
*shape*: today's five fields (str, int, float, bool, datetime), and the record mix beside
them (a datetime and a UUID; a nested dict and a list; twenty scalar fields; a nested dict,
a list, a UUID and an enum member). The int field ``seq`` is the record's sequence number,
so the checker can tell a lost line from a duplicated one.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

MESSAGE = "request handled"
USER = "alice"
DURATION_MS = 12.5
CACHED = True
AT = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=dt.timezone.utc)
REQUEST_ID = uuid.UUID("8f14e45f-ceea-467a-9575-2f7b9e8d0c1a")
_SAMPLES = 3


class Plan(enum.Enum):
    """A plain enum, as apps log a status or a plan: orjson writes its value, and
    `json.dumps(default=str)` its name (``Plan.PRO``)."""

    PRO = "pro"


# -- the record shapes -------------------------------------------------------------------------
#
# A shape gives each call style its log call, written out as application code writes it: the
# fields as keyword arguments (asynclog, structlog, loguru) or as one dict built in the call
# (stdlib `extra=`, picologging's mapping argument). Containers are fresh literals in every
# call, as when an app logs `account={"id": user.id, ...}`.


@dataclass(frozen=True)
class Shape:
    """One record shape of the micro benchmark."""

    name: str
    label: str
    # The fields of record `seq` as a dict, for `extra=` and mapping-style calls.
    fields: Callable[[int], dict[str, Any]]
    # `keywords(logger)(seq)` calls `logger.info(MESSAGE, **fields(seq))`, keywords spelled out.
    keywords: Callable[[Any], Callable[[int], None]]


def _five(seq: int) -> dict[str, Any]:
    return {"user": USER, "seq": seq, "duration_ms": DURATION_MS, "cached": CACHED, "at": AT}


def _five_keywords(logger: Any) -> Callable[[int], None]:
    def log(seq: int) -> None:
        logger.info(MESSAGE, user=USER, seq=seq, duration_ms=DURATION_MS, cached=CACHED, at=AT)

    return log


def _datetime_uuid(seq: int) -> dict[str, Any]:
    return {
        "user": USER, "seq": seq, "duration_ms": DURATION_MS, "at": AT, "request_id": REQUEST_ID,
    }  # fmt: skip


def _datetime_uuid_keywords(logger: Any) -> Callable[[int], None]:
    def log(seq: int) -> None:
        logger.info(
            MESSAGE, user=USER, seq=seq, duration_ms=DURATION_MS, at=AT, request_id=REQUEST_ID
        )

    return log


def _nested(seq: int) -> dict[str, Any]:
    return {
        "user": USER,
        "seq": seq,
        "duration_ms": DURATION_MS,
        "account": {"id": 7, "plan": "pro", "active": True},
        "item_ids": [3, 5, 8, 13],
    }


def _nested_keywords(logger: Any) -> Callable[[int], None]:
    def log(seq: int) -> None:
        logger.info(
            MESSAGE,
            user=USER,
            seq=seq,
            duration_ms=DURATION_MS,
            account={"id": 7, "plan": "pro", "active": True},
            item_ids=[3, 5, 8, 13],
        )

    return log


def _nested_uuid_enum(seq: int) -> dict[str, Any]:
    return {
        "user": USER,
        "seq": seq,
        "account": {"id": 7, "plan": "pro", "active": True},
        "item_ids": [3, 5, 8, 13],
        "request_id": REQUEST_ID,
        "plan": Plan.PRO,
    }


def _nested_uuid_enum_keywords(logger: Any) -> Callable[[int], None]:
    def log(seq: int) -> None:
        logger.info(
            MESSAGE,
            user=USER,
            seq=seq,
            account={"id": 7, "plan": "pro", "active": True},
            item_ids=[3, 5, 8, 13],
            request_id=REQUEST_ID,
            plan=Plan.PRO,
        )

    return log


def _wide(seq: int) -> dict[str, Any]:
    return {
        "user": USER, "seq": seq, "duration_ms": DURATION_MS, "cached": CACHED,
        "method": "GET", "route": "/items/{item_id}", "status": 200, "bytes_sent": 5120,
        "client_ip": "10.0.0.7", "user_agent": "curl/8.5.0", "region": "eu-west-1",
        "hostname": "web-7", "attempt": 1, "retries": 0, "ratio": 0.25, "tenant": "acme",
        "plan": "pro", "sampled": False, "shard": 3, "release": "2026.11.3",
    }  # fmt: skip


def _wide_keywords(logger: Any) -> Callable[[int], None]:
    def log(seq: int) -> None:
        logger.info(
            MESSAGE, user=USER, seq=seq, duration_ms=DURATION_MS, cached=CACHED,
            method="GET", route="/items/{item_id}", status=200, bytes_sent=5120,
            client_ip="10.0.0.7", user_agent="curl/8.5.0", region="eu-west-1",
            hostname="web-7", attempt=1, retries=0, ratio=0.25, tenant="acme",
            plan="pro", sampled=False, shard=3, release="2026.11.3",
        )  # fmt: skip

    return log


SHAPES: dict[str, Shape] = {
    s.name: s
    for s in (
        Shape("five", "5 fields: str, int, float, bool, datetime", _five, _five_keywords),
        Shape(
            "datetime-uuid",
            "5 fields: str, int, float, datetime, UUID",
            _datetime_uuid,
            _datetime_uuid_keywords,
        ),
        Shape(
            "nested",
            "5 fields: str, int, float, a dict of 3 scalars, a list of 4 ints",
            _nested,
            _nested_keywords,
        ),
        Shape("wide", "20 fields: str, int, float, bool", _wide, _wide_keywords),
        Shape(
            "nested-uuid-enum",
            "6 fields: str, int, a dict of 3 scalars, a list of 4 ints, UUID, enum member",
            _nested_uuid_enum,
            _nested_uuid_enum_keywords,
        ),
    )
}
# Today's shape: the main micro table's, the one every peer runs.
FIVE = SHAPES["five"]
fields = FIVE.fields


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


def _same_text(value: Any, want: Any) -> bool:
    """Whether a value read back from a line is the datetime, UUID or enum member logged as
    `want`: text in any ISO 8601 spelling (`T` or a space: orjson or `default=str`), the
    canonical UUID, or the member's value (orjson) or name (`default=str`)."""
    if isinstance(want, enum.Enum):
        return (value == want.value and type(value) is type(want.value)) or value == str(want)
    if type(value) is not str:
        return False
    if type(want) is uuid.UUID:
        return value == str(want)
    try:
        return bool(dt.datetime.fromisoformat(value) == want)
    except ValueError:
        return False


class _Expected:
    """The fields a line of `shape` must hold (all but ``seq``), compiled for a fast check: the
    JSON-native values compared (with their types) in one pass, datetimes, UUIDs and enum
    members one by one. Millions of lines are read back per run."""

    def __init__(self, shape: Shape) -> None:
        wanted = {k: v for k, v in shape.fields(0).items() if k != "seq"}
        self.texts = [
            (k, v)
            for k, v in wanted.items()
            if type(v) in (dt.datetime, uuid.UUID) or isinstance(v, enum.Enum)
        ]
        native = {k: v for k, v in wanted.items() if k not in dict(self.texts)}
        self.keys = tuple(native)
        self.values = tuple(native.values())
        self.types = tuple(map(type, self.values))

    def held_by(self, holder: dict[str, Any]) -> bool:
        found = tuple(map(holder.get, self.keys))
        if found != self.values or tuple(map(type, found)) != self.types:
            return False
        return all(_same_text(holder.get(k), v) for k, v in self.texts)


def _has_message(obj: dict[str, Any]) -> bool:
    if obj.get("message") == MESSAGE or obj.get("event") == MESSAGE:
        return True
    return any(isinstance(v, str) and MESSAGE in v for d in _walk(obj) for v in d.values())


def _is_record(obj: dict[str, Any], expected: _Expected) -> int | None:
    """Return the sequence number if *obj* is a complete benchmark record, else None.

    Every field of the shape must be in the dict that holds ``seq`` (the line itself, or
    loguru's ``record.extra``), with the value logged."""
    holder = obj if "seq" in obj else next((d for d in _walk(obj) if "seq" in d), None)
    if holder is None:
        return None
    seq = holder["seq"]
    if type(seq) is not int or not expected.held_by(holder):
        return None
    return seq if _has_message(obj) else None


def _dropped(obj: dict[str, Any]) -> int:
    """asynclog reports lost records as a line from logger ``asynclog`` with ``dropped``."""
    if obj.get("logger") == "asynclog" and isinstance(obj.get("dropped"), int):
        return int(obj["dropped"])
    return 0


def check_records(path: Path, expected: int, shape: Shape = FIVE) -> LineCheck:
    """Check a micro-benchmark output file holding records ``0..expected-1`` of `shape`.

    Lines that are not JSON or lack a field (or hold another value) are ``corrupt``;
    sequence numbers seen twice are ``duplicates``; those never seen are ``missing``.
    """
    check = LineCheck()
    seen = bytearray(expected)
    wanted = _Expected(shape)
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
            seq = _is_record(obj, wanted)
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
