"""Rich values are encoded natively; the writer's batch encoder writes what `encode` writes.
Hostile input (what orjson refuses, `%` mismatches,
generated values): tests/test_hostile_input.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import context as otel_context
from opentelemetry import trace

import asynclog
from asynclog._encoder import Encoder
from asynclog._logger import Logger
from asynclog._queue import QUEUE
from asynclog._redact import Redactor

from conftest import assert_batches_write_what_encode_writes, read_lines

# Each test runs on the C extension and on the pure-Python code (see conftest).
pytestmark = pytest.mark.usefixtures("implementation")


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_rich_types_are_encoded_natively(log_path: Path) -> None:
    from pydantic import BaseModel

    class User(BaseModel):
        name: str

    asynclog.configure(sink=str(log_path), format="json")
    uid = uuid.uuid4()
    asynclog.get_logger("types").info(
        "types",
        when=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        uid=uid,
        color=Color.RED,
        point=Point(1, 2),
        arr=np.arange(3),
        user=User(name="ann"),
    )
    asynclog.flush(5)
    [line] = read_lines(log_path)
    assert line["when"] == "2026-01-02T03:04:05+00:00"
    assert line["uid"] == str(uid)
    assert line["color"] == "red"
    assert line["point"] == {"x": 1, "y": 2}
    assert line["arr"] == [0, 1, 2]
    assert line["user"] == {"name": "ann"}
    assert "asynclog.substituted" not in line


# The writer's batch encoder --------------------------------------------------------------------

_NAMES = st.sampled_from(
    ["item_id", "user", "message", "time", "password", "X-Api-Key", "token_count", "n", "é"]
)
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(_NAMES, st.integers(), max_size=3),
)
_CALLS = st.lists(
    st.tuples(
        st.sampled_from([10, 20, 25, 30, 40, 50]),
        st.sampled_from(["plain", "user %s", "%d%%", "100%", "%s and %s", "%(a)s"]),
        st.lists(_VALUES, max_size=2).map(tuple),
        st.dictionaries(_NAMES, _VALUES, max_size=4),
        st.dictionaries(_NAMES, st.text(max_size=6), max_size=2),
        st.booleans(),  # inside a span
        st.booleans(),  # with an exception
    ),
    min_size=1,
    max_size=8,
)


def _captured(calls: list[Any]) -> list[tuple[Any, ...]]:
    """The records these calls put on the queue, through the real logger (no pipeline runs to
    take them)."""
    log = Logger("batch")
    span = trace.NonRecordingSpan(trace.SpanContext(0x1F, 0x2F, False, trace.TraceFlags(1)))
    for level, template, args, fields, context, traced, failing in calls:
        token = otel_context.attach(trace.set_span_in_context(span)) if traced else None
        asynclog.clear_contextvars()
        asynclog.bind_contextvars(**context)
        try:
            if failing:
                try:
                    raise ValueError("bad")
                except ValueError:
                    log.exception(template, *args, **fields)
            else:
                log.log(level, template, *args, **fields)
        finally:
            if token is not None:
                otel_context.detach(token)
    records = list(QUEUE.items)
    QUEUE.items.clear()
    return records


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=_CALLS)
def test_the_writers_batch_encoder_writes_what_encode_writes(calls: list[Any]) -> None:
    """`encode_into` (the writer's fast path) and `encode` write the same bytes for every record:
    the first batch meets new names, the second finds them known."""
    QUEUE.level = 10
    try:
        records = _captured(calls)
    finally:
        QUEUE.level = 20
    assert len(records) == len(calls)
    assert_batches_write_what_encode_writes(
        records, Redactor(frozenset({"password", "api_key"}), 8)
    )


def test_the_writers_batch_encoder_writes_one_line_for_a_malformed_record() -> None:
    """A record whose context is no mapping (no asynclog producer makes one) takes the safe
    path: one line, marked, and the lines around it intact."""
    good = (1.5, 20, "batch", "ok", None, {}, {}, {}, None, None)
    odd_context = (1.5, 20, "batch", "odd", None, {}, {}, 5, None, None)
    encoder = Encoder(Redactor(frozenset({"password"})))
    buffer = bytearray()
    ends = encoder.encode_into([good, odd_context, good], buffer)
    lines = [json.loads(line) for line in bytes(buffer).split(b"\n")[:-1]]
    assert len(ends) == len(lines) == 3
    assert [line["message"] for line in lines] == ["ok", "odd", "ok"]
    assert "asynclog.substituted" in lines[1]
