"""Hostile input never raises into the caller and never breaks the line format.

Every case goes through a public front door (`asynclog.get_logger(...).info(...)` or a stdlib
`logging` logger routed to asynclog) into a real file, and every call is checked to add exactly
one valid JSON line: N calls, N lines. What could not be written as given is listed in
`asynclog.substituted` (README, "The line schema").
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asynclog
from asynclog._encoder import Encoder
from asynclog._redact import Redactor

from conftest import FLUSH_S, assert_accounted, read_lines, run_python

# Each test runs on the C extension and on the pure-Python code (see conftest).
pytestmark = pytest.mark.usefixtures("implementation")

SUBSTITUTED = "asynclog.substituted"
SAME = object()  # the value is written as it was passed
ANY = object()  # a written value the test does not pin down


class Lines:
    """The lines a log file gained, call by call: each call must add exactly one valid line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.calls = 0
        self.substituted = 0

    def one(self, what: str) -> dict[str, Any]:
        """Flush, then return the one line written since the last call."""
        assert asynclog.flush(FLUSH_S), what
        with self.path.open("rb") as file:
            file.seek(self.offset)
            data = file.read()
        self.offset += len(data)
        self.calls += 1
        # Lines end at b"\n" only: U+2028 or NEL inside a JSON string is not a line break.
        assert data.count(b"\n") == 1 and data.endswith(b"\n"), f"{what}: {data[:300]!r}"
        line = json.loads(data)
        assert isinstance(line, dict) and {"time", "level", "logger", "message"} <= set(line)
        self.substituted += SUBSTITUTED in line
        return line

    def check_total(self) -> int:
        """The whole file: as many lines as calls, and asynclog counted each as written."""
        assert self.path.read_bytes().count(b"\n") == self.calls
        assert_accounted(asynclog.stats(), emitted=self.calls, written=self.calls, dropped=0)
        return self.calls


@pytest.fixture(name="lines")
def _lines(log_path: Path) -> Lines:
    asynclog.configure(sink=str(log_path), format="json")
    return Lines(log_path)


def only_asynclog_on_the_root_logger() -> None:
    """Take pytest's log capture handlers off the root logger for this test: they format every
    record on the caller, and some of these records fail to format on purpose."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if not isinstance(h, asynclog.AsyncLogHandler)]:
        root.removeHandler(handler)


def escaped(text: str) -> str:
    """How a str with lone surrogates is written (each one escaped, the rest kept)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# The fixed corpus ------------------------------------------------------------------------------


class BadStr:
    """Both __str__ and __repr__ raise."""

    def __str__(self) -> str:
        raise RuntimeError("no str")

    __repr__ = __str__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("BadStr()")  # how hypothesis shows a failing example


class ForgingRepr:
    def __repr__(self) -> str:
        return 'forged\n{"level":"error","message":"forged"}'


def nested_dicts(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def nested_lists(depth: int) -> list[Any]:
    value: list[Any] = ["leaf"]
    for _ in range(depth - 1):
        value = [value]
    return value


def self_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"k": 1}
    value["self"] = value
    return value


def self_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


@dataclass
class Holder:
    """A dataclass: the snapshot turns it into a dict of its fields."""

    name: str
    item: Any = None


class Opaque:
    """Known to orjson only through the default hook (as its repr)."""

    def __repr__(self) -> str:
        return "opaque"


def self_holder() -> Holder:
    value = Holder("me")
    value.item = value
    return value


class BadMapping(Mapping[str, Any]):
    """A mapping whose iteration raises."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("no iteration")

    def __len__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return "BadMapping()"


@dataclass
class Case:
    name: str
    value: Any
    written: Any  # the field's value in the line, SAME or ANY
    substituted: bool | None  # whether `asynclog.substituted` must (not) be there; None: either


MB = "x" * 500_000 + "\n" + "y" * 500_000
KB_50 = "x" * 25_000 + "\n" + "y" * 25_000
CORPUS = [
    Case("CR/LF forging a line", 'a\r\n{"level":"error","message":"forged"}', SAME, False),
    Case("NUL", "a\x00b", SAME, False),
    Case("ANSI escapes", "\x1b[31mred\x1b[0m\x1b]0;title\x07\x1b[2J", SAME, False),
    Case("NEL and line separators", "a\x85b\u2028c\u2029d", SAME, False),
    Case("lone surrogates", "x\ud800y\udfff", "x\\ud800y\\udfff", True),
    Case("50 KB string", KB_50, SAME, False),  # under max_line_bytes: as it is
    Case("1 MB string", MB, SAME, True),  # over it: its head, marked
    Case("int beyond 64 bits", 2**100, str(2**100), True),
    Case("negative int beyond 64 bits", -(2**100), str(-(2**100)), True),
    Case("int beyond str()'s 4300 digits", 10**5000, "<int of 16610 bits>", True),
    Case("NaN", math.nan, None, None),
    Case("inf", math.inf, None, None),
    Case("-inf", -math.inf, None, None),
    Case("bytes", b"\xff\x00\r\n", "\\xff\x00\r\n", False),
    Case("int and None keys", {1: "a", None: "b"}, {"1": "a", "null": "b"}, None),
    Case("tuple keys", {(1, 2): "t"}, {"(1, 2)": "t"}, True),
    Case("self-referencing dict", self_dict(), {"k": 1, "self": "<cycle>"}, True),
    Case("self-referencing list", self_list(), [1, "<cycle>"], True),
    Case(
        "dataclasses each holding an unknown object",
        [Holder("a", Opaque()), Holder("b", Opaque()), Holder("c", Opaque())],
        [{"name": n, "item": "opaque"} for n in "abc"],
        False,
    ),
    Case("self-referencing dataclass", self_holder(), {"name": "me", "item": "<cycle>"}, True),
    Case("mapping whose iteration raises", {"m": BadMapping()}, ANY, None),
    Case("__str__ and __repr__ raise", BadStr(), "<unrepresentable BadStr>", True),
    Case("repr with a newline", ForgingRepr(), repr(ForgingRepr()), False),
    Case("1,000-deep dicts", nested_dicts(1000), ANY, True),
    Case("1,000-deep lists", nested_lists(1000), ANY, True),
    Case("exception value", ValueError("a\nb"), "ValueError: a\nb", False),
]
IDS = [case.name for case in CORPUS]


def assert_written(line: dict[str, Any], path: str, value: Any, expected: Any) -> None:
    """`value` is `expected`, or its head if the line says `path` was shortened to fit
    `max_line_bytes` (tests/test_shorten.py)."""
    notes = line.get(SUBSTITUTED, ())
    if any(note.startswith(f"{path}: ") and "bytes shortened to" in note for note in notes):
        assert isinstance(value, str) and len(value) > 10_000, path
        assert expected.startswith(value), path
    else:
        assert value == expected, path


def check_value(line: dict[str, Any], key: str, case: Case) -> None:
    written = case.value if case.written is SAME else case.written
    if written is not ANY:
        assert_written(line, key, line[key], written)
    if case.substituted is not None:
        assert (SUBSTITUTED in line) is case.substituted, case.name
    if case.substituted:
        assert any(key in note for note in line[SUBSTITUTED]), case.name  # names the field


def check_message(line: dict[str, Any], text: str | None, value: Any, what: str) -> None:
    """The message is `text` (surrogates escaped), or, if `str()` failed, says so."""
    if text is not None:
        assert_written(line, "message", line["message"], escaped(text))
    else:
        assert line["message"] == f"<unprintable {type(value).__name__}>", what
        assert any("message" in note for note in line[SUBSTITUTED]), what


def as_text(value: Any) -> str | None:
    try:
        return str(value)
    except Exception:
        return None


def test_corpus_as_native_fields(lines: Lines, figures: Any) -> None:
    """As a call field, a field bound on the logger, and a context field."""
    log = asynclog.get_logger("hostile")
    for case in CORPUS:
        log.info("field", value=case.value)
        line = lines.one(case.name)
        assert line["message"] == "field"
        check_value(line, "value", case)

        log.bind(value=case.value).info("bound")
        check_value(lines.one(case.name), "value", case)

        with asynclog.bound(value=case.value):
            log.info("context")
        check_value(lines.one(case.name), "value", case)
    figures(calls=lines.check_total(), lines=lines.calls, substituted=lines.substituted)


def test_corpus_as_native_messages(lines: Lines, figures: Any) -> None:
    """The native door applies no `%` formatting: the message is `str(msg)`."""
    log = asynclog.get_logger("hostile")
    for case in CORPUS:
        text = as_text(case.value)
        log.info(case.value)
        line = lines.one(case.name)
        if "deep" not in case.name:  # str() of 1,000 levels may or may not hit the recursion limit
            check_message(line, text, case.value, case.name)
    log.info('%d %s % %(x)s "%', x=1)
    assert lines.one("percent signs")["message"] == '%d %s % %(x)s "%'
    figures(calls=lines.check_total(), lines=lines.calls, substituted=lines.substituted)


def test_corpus_through_stdlib_logging(lines: Lines, figures: Any) -> None:
    """As a `%s` argument, as the message itself, and as an `extra=` field."""
    only_asynclog_on_the_root_logger()
    std = logging.getLogger("hostile.stdlib")
    for case in CORPUS:
        std.info("%s", case.value)
        line = lines.one(case.name)
        if "deep" not in case.name:
            text = as_text(case.value)
            if text is None:
                assert line["message"] == "%s" and SUBSTITUTED in line, case.name
            else:
                assert_written(line, "message", line["message"], escaped(text))

        std.warning(case.value)
        line = lines.one(case.name)
        if "deep" not in case.name:
            check_message(line, as_text(case.value), case.value, case.name)

        std.error("extra", extra={"value": case.value})
        line = lines.one(case.name)
        assert line["message"] == "extra"
        check_value(line, "value", case)
    figures(calls=lines.check_total(), lines=lines.calls, substituted=lines.substituted)


def test_mapping_args_render_as_the_stdlib_would(lines: Lines) -> None:
    """A single mapping argument (`%(name)s` style) keeps its values' types and their state at
    the call."""
    only_asynclog_on_the_root_logger()
    payload = {"inner": {"n": 1}, "items": [1, 2]}
    logging.getLogger("hostile").info("%(inner)s %(items)s", payload)
    payload["inner"]["n"] = 2
    assert lines.one("mapping")["message"] == "{'n': 1} [1, 2]"
    logging.getLogger("hostile").info("%s", payload)
    assert lines.one("one dict")["message"] == "{'inner': {'n': 2}, 'items': [1, 2]}"
    lines.check_total()


def test_non_str_extra_keys(lines: Lines) -> None:
    only_asynclog_on_the_root_logger()
    logging.getLogger("hostile").info("keys", extra={1: "one", ("t",): "tuple"})  # type: ignore[dict-item]
    line = lines.one("non-str extra keys")
    assert line["1"] == "one"
    assert line["('t',)"] == "tuple"
    lines.check_total()


MISMATCHES = [
    ("%d", ("not a number",)),
    ("%s %s", ("missing one",)),
    ("%s", ("one", "extra")),
    ("100% sure %s", ("x",)),
    ("%(name)s", ({"other": 1},)),
    ("%(name)s", ("not a mapping",)),
    ("%d", (math.nan,)),
    ("%c", (2**100,)),
    ("%s", (BadStr(),)),
    ("%d", (10**5000,)),
]


def test_percent_mismatches_keep_the_template_and_the_args(lines: Lines, figures: Any) -> None:
    only_asynclog_on_the_root_logger()
    std = logging.getLogger("hostile.format")
    for template, args in MISMATCHES:
        std.info(template, *args)
        line = lines.one(template)
        assert line["message"] == template
        assert "message.args" in line
        assert any("message args did not match" in note for note in line[SUBSTITUTED])
    std.info("%d%%")  # no args: the stdlib does not format either
    assert lines.one("no args")["message"] == "%d%%"
    std.info("%s and %d", "ok", 7)
    assert lines.one("a match")["message"] == "ok and 7"
    figures(calls=lines.check_total(), lines=lines.calls, substituted=lines.substituted)


class StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str")


class Oddly(Exception):
    pass


Oddly.__module__ = "odd\nmodule"
Oddly.__qualname__ = "Odd\x1b[31m"


def hostile_exceptions() -> list[BaseException]:
    first, second = ValueError("first"), ValueError("second")
    first.__context__, second.__context__ = second, first  # a cycle of causes
    return [
        ValueError('line\n{"level":"error","message":"forged"}\x00\x1b[2J'),
        ValueError("lone \ud800 surrogate"),
        ValueError("x" * 1_000_000),
        StrRaises(),
        Oddly("odd type"),
        first,
    ]


def check_exception(line: dict[str, Any], message: str, exc: BaseException) -> None:
    what, text = type(exc).__name__, as_text(exc)
    assert line["message"] == message
    exception = line["exception"]
    assert exception["type"].endswith(type(exc).__qualname__)
    assert isinstance(exception["stacktrace"], str)
    if text is None:
        assert exception["message"] == f"<unprintable {what}>"
        assert any("exception.message" in note for note in line[SUBSTITUTED])
    else:
        assert_written(line, "exception.message", exception["message"], escaped(text))


def test_hostile_exceptions(lines: Lines, figures: Any) -> None:
    """`log.exception`, stdlib `.exception()`, `exc_info=` an instance or a triple."""
    only_asynclog_on_the_root_logger()
    log = asynclog.get_logger("hostile")
    std = logging.getLogger("hostile.stdlib")
    for exc in hostile_exceptions():
        what = type(exc).__name__
        try:
            raise exc
        except Exception:
            log.exception("native")
            check_exception(lines.one(what), "native", exc)
            std.exception("stdlib %s", "exception")
            check_exception(lines.one(what), "stdlib exception", exc)
        std.error("instance", exc_info=exc)
        check_exception(lines.one(what), "instance", exc)
        std.error("triple", exc_info=(type(exc), exc, None))
        check_exception(lines.one(what), "triple", exc)
    std.error("junk exc_info", exc_info=(1, 2, 3))  # type: ignore[arg-type]
    assert lines.one("junk")["message"] == "junk exc_info"
    std.error("no exception", exc_info=True)
    assert "exception" not in lines.one("none")
    figures(calls=lines.check_total(), lines=lines.calls, substituted=lines.substituted)


# Generated input -------------------------------------------------------------------------------

# Any code point, lone surrogates and control characters included.
hostile_text = st.text(st.characters(exclude_categories=()), max_size=40) | st.sampled_from(
    ["\r\n", "\x00", "\x1b[2J", "\ud800", '\n{"level":"error"}', "%d %s %(x)s %"]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=12,
)
odd_values = (
    json_values
    | st.integers(min_value=2**64, max_value=2**200)
    | st.integers(max_value=-(2**63) - 1)
    | st.binary(max_size=20)
    | st.dictionaries(st.integers() | st.tuples(st.integers()), st.integers(), max_size=3)
    | st.sets(st.integers(), max_size=3)
    | st.datetimes()
    | st.builds(BadStr)
)
# `extra=` may not name a LogRecord attribute: the stdlib itself raises for those.
_RECORD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
extra_keys = hostile_text.filter(lambda key: key not in _RECORD_ATTRS)
EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_generated_native_calls(lines: Lines, figures: Any) -> None:
    log = asynclog.get_logger("generated")

    @EXAMPLES
    @given(msg=hostile_text, fields=st.dictionaries(hostile_text, odd_values, max_size=4))
    def one_call(msg: str, fields: dict[str, Any]) -> None:
        log.warning(msg, **fields)
        line = lines.one(repr(msg))
        assert line["logger"] == "generated"
        assert line["message"] == escaped(msg)

    one_call()
    figures(calls=lines.check_total(), lines=lines.calls, substituted=lines.substituted)


def test_generated_stdlib_calls(lines: Lines, figures: Any) -> None:
    only_asynclog_on_the_root_logger()
    std = logging.getLogger("generated.stdlib")

    @EXAMPLES
    @given(
        template=hostile_text,
        args=st.lists(odd_values, max_size=3).map(tuple),
        extra=st.dictionaries(extra_keys, odd_values, max_size=3),
    )
    def one_call(template: str, args: tuple[Any, ...], extra: dict[str, Any]) -> None:
        std.error(template, *args, extra=extra)
        line = lines.one(repr(template))
        assert line["logger"] == "generated.stdlib"
        assert isinstance(line["message"], str)

    one_call()
    figures(calls=lines.check_total(), lines=lines.calls, substituted=lines.substituted)


# The writer's encoder alone: many more examples than the file round trip affords.


def _record(msg: Any, args: Any = None, fields: Any = None) -> tuple[Any, ...]:
    return (1_764_000_000.123456, 20, "t", msg, args, fields, {}, {}, None, None)


ENCODER = Encoder(Redactor(frozenset({"password"})))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    msg=hostile_text | st.integers() | st.none(),
    fields=st.dictionaries(hostile_text, odd_values),
)
def test_encoder_any_fields_give_one_valid_line(msg: Any, fields: dict[str, Any]) -> None:
    data = ENCODER.encode(_record(msg, None, fields))
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    assert json.loads(data)["logger"] == "t"


@settings(max_examples=300, deadline=None)
@given(template=hostile_text, args=st.lists(odd_values, max_size=3).map(tuple))
def test_encoder_mismatched_percent_templates_give_one_valid_line(
    template: str, args: tuple[Any, ...]
) -> None:
    data = ENCODER.encode(_record(template, args or None))
    assert data.count(b"\n") == 1
    json.loads(data)


def test_a_value_another_thread_is_changing_never_crashes_the_app(
    tmp_path: Path, figures: Any
) -> None:
    """A shared dict logged while another thread changes it, with values orjson needs its
    default hook for. orjson walking a dict that changes under it crashed the process (SIGSEGV)."""
    log_path = tmp_path / "app.log"
    result = run_python(
        """
        import json, threading, time
        import asynclog

        asynclog.configure(format="json")  # the sink comes from ASYNCLOG_SINK
        log = asynclog.get_logger("race")

        class Opaque:
            def __repr__(self):
                return "opaque"

        shared = {f"k{i}": [Opaque(), i] for i in range(50)}
        done = threading.Event()

        def mutate():
            n = 0
            while not done.is_set():
                n += 1
                shared[f"x{n % 97}"] = [Opaque(), {"n": n}]
                shared.pop(f"x{(n + 50) % 97}", None)

        thread = threading.Thread(target=mutate)
        thread.start()
        calls, deadline = 0, time.monotonic() + 3
        while time.monotonic() < deadline and calls < 100_000:
            log.info("snapshot", data=shared, tags={1, 2})
            calls += 1
        done.set()
        thread.join()
        asynclog.shutdown()
        print(json.dumps({"calls": calls, "stats": asynclog.stats()}))
        """,
        timeout=60,
        env={"ASYNCLOG_SINK": str(log_path)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)
    calls = out["calls"]
    assert_accounted(out["stats"], emitted=calls, written=calls)
    lines = read_lines(log_path)
    assert len(lines) == calls
    assert all(line["tags"] == [1, 2] and "k0" in line["data"] for line in lines)
    figures(calls=calls, lines=len(lines))


def test_logging_an_unknown_object_does_not_import_numpy(tmp_path: Path) -> None:
    """orjson imports numpy at its first unknown value when asked to encode numpy types: a
    ~120 ms stall on the logging thread. asynclog asks only once the app has imported numpy."""
    result = run_python(
        f"""
        import sys
        import asynclog

        asynclog.configure(sink={str(tmp_path / "app.log")!r}, format="json")
        asynclog.get_logger("x").info("odd", value={{"o": object()}}, tags={{1}})
        asynclog.shutdown()
        print("numpy" in sys.modules)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"]
    assert b'"tags":[1]' in (tmp_path / "app.log").read_bytes()
