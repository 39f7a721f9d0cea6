"""A line over `max_line_bytes` is written shortened and marked, never dropped; end to end
through Fluent Bit into Loki: tests/test_sidecar_long_lines.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import asynclog
from asynclog._settings import Settings, resolve_settings
from asynclog._shorten import shorten_line

from conftest import assert_accounted, read_lines

NOTES = "asynclog.substituted"


def _line(**fields: Any) -> bytes:
    head = {"time": "2026-12-05T06:00:00.000000Z", "level": "info", "logger": "t", "message": "m"}
    return orjson.dumps({**head, **fields}, option=orjson.OPT_APPEND_NEWLINE)


def test_the_largest_values_are_shortened_and_each_is_named_with_its_sizes() -> None:
    data = _line(
        big="a" * 3_000_000,
        exception={"type": "ValueError", "message": "m", "stacktrace": "frame\n" * 30_000},
        small="kept",
        n=7,
    )
    out = shorten_line(data, 131_072)
    line = json.loads(out)
    assert len(out) <= 131_072 and out.endswith(b"\n") and out.count(b"\n") == 1
    assert (line["small"], line["n"], line["exception"]["type"]) == ("kept", 7, "ValueError")
    assert line["big"] == "a" * len(line["big"]) and 1_000 < len(line["big"]) < 131_072
    assert line["exception"]["stacktrace"].startswith("frame\nframe\n")
    assert line[NOTES] == [
        f"big: 3000002 bytes shortened to {len(orjson.dumps(line['big']))} (max_line_bytes 131072)",
        f"exception.stacktrace: 210002 bytes shortened to "
        f"{len(orjson.dumps(line['exception']['stacktrace']))} (max_line_bytes 131072)",
    ]


def test_notes_already_on_the_line_are_kept() -> None:
    line = json.loads(shorten_line(_line(**{"blob": "é" * 10_000, NOTES: ["earlier"]}), 2_048))
    assert line[NOTES][0] == "earlier" and line[NOTES][1].startswith("blob: 20002 bytes")


def test_a_line_of_many_small_values_keeps_what_identifies_it() -> None:
    data = _line(**{f"k{i}": i for i in range(30_000)})
    line = json.loads(shorten_line(data, 4_096))
    assert (line["time"], line["level"], line["logger"], line["message"]) == (
        "2026-12-05T06:00:00.000000Z", "info", "t", "m",
    )  # fmt: skip
    assert line[NOTES] == [f"line: {len(data)} bytes over max_line_bytes 4096: fields dropped"]


def test_a_line_a_few_bytes_over_keeps_its_small_fields() -> None:
    """Room for notes is freed only for the values that can be cut: a line 5 bytes over with
    one large value among many small ones (found by Hypothesis) is shortened, not reduced to
    its time, level and logger."""
    small: dict[str, Any] = {f"k{n}": None for n in range(4)}
    small |= {f"s{n}": "s" * 20 for n in range(4)}
    line = {"time": "t", "level": "info", "logger": "x", "message": "", **small, "big": "0" * 400}
    data = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
    limit = len(data) - 5
    out = json.loads(shorten_line(data, limit))
    assert len(shorten_line(data, limit)) <= limit
    assert {k: out[k] for k in small} == small
    assert out["asynclog.substituted"] == [
        f"big: 402 bytes shortened to {len(orjson.dumps(out['big']))} (max_line_bytes {limit})"
    ]


def test_a_large_list_is_written_as_the_head_of_its_json() -> None:
    line = json.loads(shorten_line(_line(ids=list(range(100_000))), 4_096))
    assert line["ids"].startswith("[0,1,2,3,") and line[NOTES][0].startswith("ids: 588891 bytes")


# Strings of up to ~16 KB (escapes and multi-byte characters included): most lines built of
# them are over a bound of 1-4 KB, as `text(max_size=...)` alone, mostly short, never made one.
_LONG_TEXT = st.builds(
    lambda text, n: text * n, st.text(min_size=1, max_size=16), st.integers(1, 1_000)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.recursive(
        st.text(max_size=3_000)
        | _LONG_TEXT
        | st.integers(-(2**63), 2**63 - 1)
        | st.floats(allow_nan=False)
        | st.none(),
        lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=40,
    ),
    message=st.text(max_size=3_000) | _LONG_TEXT,
    limit=st.integers(1_024, 4_096),
)
def test_a_shortened_line_always_fits_and_says_why(value: Any, message: str, limit: int) -> None:
    data = _line(message=message, value=value)
    assume(len(data) > limit)
    out = shorten_line(data, limit)
    line = json.loads(out)
    assert len(out) <= limit and out.endswith(b"\n") and b"\n" not in out[:-1]
    assert line["time"] == "2026-12-05T06:00:00.000000Z" and line["logger"] == "t"
    assert any(f"max_line_bytes {limit}" in note for note in line[NOTES])


@pytest.mark.usefixtures("implementation")
def test_a_record_with_a_3_mb_field_is_written_shortened_between_its_neighbours(
    log_path: Path,
) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("long")
    for n in range(3):  # the names are known after the first: the batch encoder's fast path
        log.info("before", n=n)
        log.info("huge", n=n, blob="b" * 3_000_000, other="o" * 500)
        logging.getLogger("long.stdlib").warning("stdlib huge", extra={"blob": "s" * 3_000_000})
        log.info("after", n=n)
    assert asynclog.flush(timeout=30)
    assert_accounted(asynclog.stats(), emitted=12, written=12, dropped=0)
    data = log_path.read_bytes()
    assert max(len(line) + 1 for line in data.split(b"\n")[:-1]) <= Settings.max_line_bytes
    lines = read_lines(log_path)
    assert [line["message"] for line in lines] == ["before", "huge", "stdlib huge", "after"] * 3
    for line in lines[1::4]:
        assert line["other"] == "o" * 500 and set(line["blob"]) == {"b"}
        assert line[NOTES] == [
            f"blob: 3000002 bytes shortened to {len(line['blob']) + 2} "
            f"(max_line_bytes {Settings.max_line_bytes})"
        ]
    assert all(NOTES not in line for line in lines[0::4] + lines[3::4])


def test_max_line_bytes_comes_from_its_variable_and_fails_fast() -> None:
    assert resolve_settings({}, {"ASYNCLOG_MAX_LINE_BYTES": "65536"})[0].max_line_bytes == 65_536
    assert resolve_settings({"max_line_bytes": 4096}, {})[0].max_line_bytes == 4_096
    for bad in ("-1", "lots", "100"):
        with pytest.raises(ValueError, match="ASYNCLOG_MAX_LINE_BYTES"):
            resolve_settings({}, {"ASYNCLOG_MAX_LINE_BYTES": bad})
    with pytest.raises(ValueError, match=r"max_line_bytes=512 .*>= 1024"):
        asynclog.configure(sink="stderr", max_line_bytes=512)
