"""Lines that never raise (`_fallback`): what orjson refuses is substituted and listed."""

from __future__ import annotations

import os
from typing import Any

import orjson

from asynclog._fallback import _minimal, describe_exception, encode_line, notice_line

NOTES = "asynclog.substituted"


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def _head(**fields: Any) -> dict[str, Any]:
    return {"time": "t", "level": "info", "logger": "l", "message": "m", **fields}


def test_a_line_orjson_takes_is_written_as_orjson_writes_it() -> None:
    line = _head(n=1, xs=[1, 2])
    assert encode_line(line) == orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def test_refused_values_are_substituted_and_each_is_named() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    data = encode_line(_head(big=2**70, loop=cycle, text="a\ud800b"))
    assert data.endswith(b"\n")
    line = orjson.loads(data)
    assert line["big"] == str(2**70)
    assert line["loop"] == ["<cycle>"]
    assert line["text"] == "a\\ud800b"
    assert line[NOTES] == [
        "big: int beyond 64 bits written as a string",
        "loop[0]: reference cycle cut",
        "text: lone surrogates escaped",
    ]


def test_notices_are_asynclogs_own_lines_naming_the_process() -> None:
    line = orjson.loads(notice_line("warning", "dropped", count=3))
    assert (line["level"], line["logger"], line["message"]) == ("warning", "asynclog", "dropped")
    assert (line["pid"], line["count"]) == (os.getpid(), 3)


def test_describe_exception_never_raises() -> None:
    assert describe_exception(ValueError("bad")) == "ValueError: bad"
    assert describe_exception(_Unprintable()) == "_Unprintable: <unprintable _Unprintable>"


def test_a_malformed_record_keeps_what_can_be_written_of_it() -> None:
    line = _minimal((float("nan"), "20", 7, b"m"), "building the line failed: TypeError")
    assert (line["level"], line["logger"], line["message"]) == ("error", "7", "b'm'")
    assert line[NOTES] == ["building the line failed: TypeError"]
    assert _minimal("not a tuple", "x")["logger"] == "None"
