"""The optional C extension does what the pure-Python code does: the same record from a level
method, the same bytes from the writer's batch encoder, whatever the values."""

from __future__ import annotations

import datetime
import enum
import json
import math
import os
import zoneinfo
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asynclog
from asynclog import _accel
from asynclog._encoder import Encoder
from asynclog._logger import Logger, _python_level_method
from asynclog._queue import QUEUE, read_count
from asynclog._redact import Redactor
from asynclog._snapshot import Frozen, snapshot_value

from conftest import ROOT, assert_batches_write_what_encode_writes, run_python

speedups = _accel.speedups
needs_extension = pytest.mark.skipif(
    speedups is None and not os.environ.get("ASYNCLOG_REQUIRE_EXTENSIONS"),
    reason="the C extension is not built (no C compiler at install time)",
)


def test_the_extension_is_built_where_it_is_required() -> None:
    """CI sets ASYNCLOG_REQUIRE_EXTENSIONS: there the extension must have been built."""
    if not os.environ.get("ASYNCLOG_REQUIRE_EXTENSIONS"):
        pytest.skip("ASYNCLOG_REQUIRE_EXTENSIONS is not set")
    assert speedups is not None
    assert isinstance(Logger.info, speedups.LevelMethod)


def test_asynclog_no_extensions_runs_the_pure_python_code() -> None:
    result = run_python(
        """
        from asynclog import _accel
        from asynclog._logger import Logger
        print(_accel.speedups, type(Logger.info).__name__)
        """,
        env={"ASYNCLOG_NO_EXTENSIONS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "function"]


# The level methods ---------------------------------------------------------------------------

_PYTHON_INFO = _python_level_method(20, "INFO")
_ANY_VALUE = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.tuples(st.integers()),
    st.tuples(st.integers(), st.lists(st.integers(), max_size=2)),  # not immutable: frozen
    st.sampled_from([enum.Enum("Plan", "FREE PRO").PRO, datetime.date(2026, 12, 3)]),
    st.builds(object),  # orjson refuses it: snapshot_value's own route
    st.lists(st.integers(min_value=2**64), min_size=1, max_size=2),  # refused too
)


@needs_extension
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    msg=st.one_of(st.text(max_size=8), st.integers()),
    args=st.lists(_ANY_VALUE, max_size=3),
    fields=st.dictionaries(st.text(min_size=1, max_size=6), _ANY_VALUE, max_size=4),
    context=st.dictionaries(st.sampled_from(["request_id", "user"]), st.text(max_size=4)),
    bound=st.dictionaries(st.sampled_from(["service", "zone"]), st.integers(), max_size=2),
)
def test_a_level_method_captures_the_record_the_python_one_does(
    msg: Any, args: list[Any], fields: dict[str, Any], context: dict[str, Any], bound: Any
) -> None:
    log = Logger("same", bound)
    asynclog.clear_contextvars()
    asynclog.bind_contextvars(**context)
    emitted = read_count(QUEUE.emitted)
    QUEUE.items.clear()
    try:
        log.info(msg, *args, **fields)
        _PYTHON_INFO(log, msg, *args, **fields)
        c_record, python_record = QUEUE.items
    finally:
        QUEUE.items.clear()
    assert abs(c_record[0] - python_record[0]) < 1.0
    assert type(c_record[0]) is float
    assert _comparable(c_record[1:]) == _comparable(python_record[1:])
    assert read_count(QUEUE.emitted) == emitted + 2  # both calls were counted


def _comparable(value: Any) -> Any:
    """Frozen values as their bytes, NaN as a string, plain objects by kind: what two equal
    captures have in common."""
    if isinstance(value, Frozen):
        return ("frozen", value.data)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if type(value) is object:  # `%` arguments are deep copies: equal only in kind
        return "object"
    if isinstance(value, tuple):
        return tuple(_comparable(v) for v in value)
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    return value


@needs_extension
def test_a_level_method_counts_drops_and_wakes_an_idle_writer_once() -> None:
    log = Logger("queue")
    maxsize, emitted, dropped = QUEUE.maxsize, QUEUE.emitted, QUEUE.dropped
    QUEUE.items.clear()
    try:
        QUEUE.reset_counters()
        QUEUE.maxsize = 2
        QUEUE.idle = True
        QUEUE.wake.clear()
        log.info("one")
        assert QUEUE.wake.is_set() and not QUEUE.idle
        QUEUE.wake.clear()
        log.info("two")
        log.info("three")  # the queue is full: dropped, counted
        log.debug("below the level")  # neither queued nor counted
        assert not QUEUE.wake.is_set()
        assert [r[3] for r in QUEUE.items] == ["one", "two"]
        assert (next(QUEUE.emitted), next(QUEUE.dropped)) == (3, 1)
    finally:
        QUEUE.items.clear()
        QUEUE.maxsize, QUEUE.emitted, QUEUE.dropped = maxsize, emitted, dropped
        QUEUE.idle = False


@needs_extension
def test_a_level_method_is_a_method() -> None:
    log = Logger("m")
    info = log.info  # bound, called later
    assert (Logger.info.__name__, Logger.info.__doc__) == ("info", "Log at INFO.")
    assert Logger.warn is Logger.warning
    QUEUE.items.clear()
    try:
        info("later", n=1)
        assert QUEUE.items[0][2:4] == ("m", "later")
        with pytest.raises(TypeError, match="msg"):
            log.info()
    finally:
        QUEUE.items.clear()


# The batch encoder's direct JSON writer --------------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(
    ['"quoted"', "back\\slash", "tab\there", "nul\x00", "\x1f\x7f", "é ü 日本", "\ud800", "/"]
)
_NUMBER = st.one_of(
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(),
    st.sampled_from([0.0, -0.0, 1e16, 1e-5, 1.5e300, 0.1, 51.99, 2**63, -(2**63), 2**64 - 1]),
)
_JSON_VALUE = st.one_of(st.none(), st.booleans(), _TEXT, _NUMBER)
_NAME = st.sampled_from(["a", "request_id", "n", "é", 'q"uote', "ctl\n"])


class _Str(str):
    pass


@settings(
    max_examples=300,
    deadline=None,
    # `implementation` only patches in what to run: the same for every example.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    lines=st.lists(
        st.tuples(
            _TEXT,  # message
            _TEXT | st.just(_Str("subclass")),  # logger
            st.dictionaries(_NAME, _JSON_VALUE, max_size=3),  # context
            st.dictionaries(_NAME, _JSON_VALUE, max_size=2),  # bound
            st.dictionaries(_NAME, _JSON_VALUE | st.just(_Str("s")), max_size=4),  # fields
            st.booleans(),  # repeat a context value in the fields, as the access line does
        ),
        min_size=1,
        max_size=6,
    )
)
def test_the_direct_writer_writes_what_orjson_writes(lines: list[Any], implementation: str) -> None:
    """Strings needing escapes, non-ASCII and lone surrogates; ints past 64 bits; floats with
    exponents, NaN and infinities; str subclasses; names repeated across context, bound and
    call fields: the batch encoder writes `encode`'s bytes, line for line."""
    records = []
    for msg, logger, context, bound, fields, repeat in lines:
        if repeat and context:
            name = next(iter(context))
            fields[name] = context[name]
        records.append((1796084572.25, 20, logger, msg, None, fields, bound, context, {}, None))
    assert_batches_write_what_encode_writes(records, Redactor(frozenset({"password"})))


class _Color(enum.Enum):
    RED = "red"
    BLUE = 2


class _Opaque(enum.Enum):
    OBJECT = object()  # a value orjson cannot write: the default hook's route


def _zones() -> list[Any]:
    zones: list[Any] = [
        None,
        datetime.timezone.utc,
        datetime.timezone(datetime.timedelta(hours=5, minutes=30)),
    ]
    try:
        zones.append(zoneinfo.ZoneInfo("Europe/Paris"))
    except zoneinfo.ZoneInfoNotFoundError:  # no tz database on this machine
        pass
    return zones


_SCALAR = st.one_of(st.none(), st.booleans(), _TEXT, _NUMBER)
_SECRETISH = st.sampled_from(
    ["plain", "password", "X-Api-Key", "accessToken", "token_count", "é", "ключ", "a", "n"]
)
_JSON_TREE = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_SECRETISH, inner, max_size=3),
    max_leaves=8,
)
_RICH_VALUE = st.one_of(
    _JSON_VALUE,
    st.datetimes(timezones=st.sampled_from(_zones())),
    st.dates(),
    st.times(timezones=st.sampled_from([None, datetime.timezone.utc])),
    st.uuids(),
    st.sampled_from([*_Color, *_Opaque]),
    st.decimals(allow_nan=True, places=None),
    # what the caller freezes: nested dicts and lists, secret-like names inside some
    st.builds(
        snapshot_value,
        st.lists(_JSON_TREE, max_size=3) | st.dictionaries(_SECRETISH, _JSON_TREE, max_size=3),
    ),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    fields=st.lists(st.dictionaries(_NAME, _RICH_VALUE, max_size=4), min_size=1, max_size=4),
    depth=st.sampled_from([1, 2, 256]),
)
def test_datetimes_uuids_enums_decimals_and_frozen_values_write_what_encode_writes(
    fields: list[dict[str, Any]], depth: int, implementation: str
) -> None:
    """The direct path's newer values: datetimes (naive, UTC, fixed offsets, zones), dates,
    times, UUIDs, enum members (one whose value orjson cannot write), Decimals and values
    frozen on the caller, put in as their bytes unless a secret-like name or the depth could
    be masked: the batch encoder writes `encode`'s bytes, and no secret."""
    records = [
        (1796084572.25, 20, "rich", "m", None, f, {}, {"request_id": "r"}, {}, None) for f in fields
    ]
    redactor = Redactor(frozenset({"password", "api_key", "token"}), depth)
    expected = assert_batches_write_what_encode_writes(records, redactor)
    # Putting frozen bytes in as they are changes nothing a reader sees: the same lines as
    # decoding and masking every one of them.
    looks_at_all = Redactor(redactor.keys, depth)
    looks_at_all.json_rule = None
    for line, record in zip(expected, records, strict=True):
        assert json.loads(line) == json.loads(Encoder(looks_at_all).encode(record))
        for name in ("password", "X-Api-Key", "accessToken"):
            assert f'"{name}":' not in line.decode() or _masked(json.loads(line), name)


# Around the bound: values from a few bytes to ~30 KB (escapes included), a bound of 1-3 KB.
_LONG = st.builds(lambda text, n: text * n, _TEXT.filter(bool), st.integers(0, 400))


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    lines=st.lists(
        st.tuples(
            _TEXT | _LONG,  # message
            st.dictionaries(
                _NAME,
                _JSON_VALUE | _LONG | st.builds(snapshot_value, st.lists(_LONG, max_size=3)),
                max_size=4,
            ),
        ),
        min_size=1,
        max_size=4,
    ),
    limit=st.integers(1_024, 3_000),
)
def test_lines_over_the_bound_are_shortened_alike_and_lines_under_it_are_untouched(
    lines: list[Any], limit: int, implementation: str
) -> None:
    """Over `max_line_bytes`, the batch encoder (either path) writes the line `encode` writes,
    within the bound and marked; under it, the very bytes an unbounded encoder writes."""
    records = [
        (1796084572.25, 20, "long", msg, None, fields, {}, {"request_id": "r"}, {}, None)
        for msg, fields in lines
    ]
    redactor = Redactor(frozenset({"password"}))
    bounded = assert_batches_write_what_encode_writes(records, redactor, max_line_bytes=limit)
    for line, record in zip(bounded, records, strict=True):
        whole = Encoder(redactor, max_line_bytes=10**9).encode(record)
        assert len(line) <= limit
        if len(whole) <= limit:
            assert line == whole
        else:
            notes = json.loads(line)["asynclog.substituted"]
            assert any(f"(max_line_bytes {limit})" in note for note in notes), notes


_FREEZABLE = st.recursive(
    _JSON_VALUE | st.just(_Str("subclass")) | st.just(2**64 - 1),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(_TEXT | st.integers() | st.just(_Str("k")), inner, max_size=4)
    ),
    max_leaves=12,
)


@needs_extension
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.lists(_FREEZABLE, max_size=3) | st.dictionaries(_TEXT, _FREEZABLE, max_size=4))
def test_a_level_method_freezes_a_value_into_the_bytes_orjson_makes(value: Any) -> None:
    """The C level method writes plain dicts and lists itself: escapes, non-ASCII, floats, ints
    at 64 bits and tuples come out as orjson's bytes, and whatever it leaves to orjson (lone
    surrogates, bigger ints, non-str keys, str subclasses, deep nesting) is frozen as the Python
    level method freezes it."""
    log = Logger("freeze", {})
    deep = value
    for _ in range(40):  # deeper than the C writer goes: left to orjson
        deep = [deep]
    QUEUE.items.clear()
    try:
        log.info("m", v=value, deep=deep)
        _PYTHON_INFO(log, "m", v=value, deep=deep)
        c_record, python_record = QUEUE.items
    finally:
        QUEUE.items.clear()
    assert _comparable(c_record[5]) == _comparable(python_record[5])
    try:
        want = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return
    assert c_record[5]["v"].data == want


# Names as apps spell them: words of the keys and others, in any case, joined by any separator
# or none, with non-ASCII letters whose lower case is ASCII (the Kelvin sign) among them.
_WORD = st.sampled_from(
    ["api", "key", "token", "access", "secret", "pass", "word", "id", "user", "K", "\u212a", "é"]
)
_CASED = st.tuples(_WORD, st.sampled_from([str.lower, str.upper, str.title])).map(
    lambda pair: pair[1](pair[0])
)
_SPELLED = st.lists(
    st.tuples(_CASED, st.sampled_from(["", "_", "-", ".", " "])), min_size=1, max_size=4
).map(lambda parts: "".join(word + sep for word, sep in parts))
_SPELLED_TREE = st.recursive(
    st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), _SPELLED),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_SPELLED, inner, max_size=3),
    max_leaves=10,
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    value=st.lists(_SPELLED_TREE, max_size=3) | st.dictionaries(_SPELLED, _SPELLED_TREE),
    keys=st.sampled_from(
        [frozenset({"password", "api_key", "token"}), frozenset({"access_token", "id"})]
    ),
    depth=st.sampled_from([1, 3, 256]),
)
def test_frozen_bytes_go_in_as_they_are_only_when_no_key_can_be_masked_inside(
    value: Any, keys: frozenset[str], depth: int, implementation: str
) -> None:
    """The scan that lets a frozen value's bytes into the line unread never says "nothing to
    mask" where masking changes something, whatever the case, camelCase or separators of the
    names: the batch encoder's line reads the same as one that decodes and masks every value."""
    redactor = Redactor(keys, depth)
    frozen = snapshot_value(value)
    if redactor.nested(value) != value:
        assert redactor.may_mask_json(frozen.data)
    record = (1796084572.25, 20, "rich", "m", None, {"v": frozen}, {}, {}, {}, None)
    buffer = bytearray()
    Encoder(redactor).encode_into([record], buffer)
    looks_at_all = Redactor(keys, depth)
    looks_at_all.json_rule = None
    assert json.loads(buffer) == json.loads(Encoder(looks_at_all).encode(record))


def _masked(value: Any, name: str) -> bool:
    """Whether every `name` key inside `value` holds the mask."""
    if isinstance(value, dict):
        return all((v == "[REDACTED]" if k == name else _masked(v, name)) for k, v in value.items())
    if isinstance(value, list):
        return all(_masked(v, name) for v in value)
    return True


_TEMPLATE = st.lists(
    st.sampled_from(["%s", "%%", "%d", "%r", "%(a)s", "%", "x", ' "q" ', "\\", "\n", "é"]),
    max_size=5,
).map("".join)
_ARG = st.one_of(
    _TEXT, st.integers(min_value=-(2**70), max_value=2**70), st.booleans(), st.floats()
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(template=_TEMPLATE, args=st.lists(_ARG, max_size=3).map(tuple))
def test_percent_messages_are_written_as_percent_renders_them(
    template: str, args: tuple[Any, ...], implementation: str
) -> None:
    """`%s` with str and int arguments is rendered straight into the line; any other template
    or argument, a count mismatch included, is rendered (or rejected, with the reason) as by
    `encode`."""
    record = (1796084572.25, 20, "fmt", template, args, {}, {}, {}, {}, None)
    expected = Encoder(Redactor(frozenset())).encode(record)
    buffer = bytearray()
    Encoder(Redactor(frozenset())).encode_into([record], buffer)
    assert bytes(buffer) == expected


# Values whose own code changes what is being encoded -------------------------------------------
# The C path reads dicts and lists it does not own; these check that it never reads one after
# a value's code changed it (`make sanitize` runs them under AddressSanitizer).


class _Mutating:
    """A `%s` argument whose `__str__` runs `action` first."""

    def __init__(self, action: Any) -> None:
        self.action = action

    def __str__(self) -> str:
        self.action()
        return "mutated"


class _HashingKey(str):
    """A field name whose `__hash__` and `__eq__`, once armed, empty and refill `owner`, the
    dict that holds it (and alone keeps it alive)."""

    armed = False

    def __init__(self, text: str) -> None:
        self.owner: dict[Any, Any] = {}

    def _fire(self) -> None:
        if _HashingKey.armed:
            _HashingKey.armed = False
            self.owner.clear()
            self.owner.update({f"k{i}": i for i in range(40)})

    def __hash__(self) -> int:
        self._fire()
        return str.__hash__(self)

    def __eq__(self, other: object) -> bool:
        self._fire()
        return str.__eq__(self, other)


def _lines(buffer: bytearray, ends: list[int]) -> list[dict[str, Any]]:
    data = bytes(buffer)
    assert ends and ends[-1] == len(data) and data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    assert len(lines) == len(ends)
    return [json.loads(line) for line in lines]


def test_a_secret_added_while_the_message_renders_is_still_masked(implementation: str) -> None:
    encoder = Encoder(Redactor(frozenset({"password"})))
    context = {"request_id": "r1"}
    bound = {"service": "shop"}
    fields: dict[str, Any] = {"n": 1}
    records: list[Any] = []

    def add_secrets() -> None:
        # The record's own mappings, grown past a resize, with a secret that was not there
        # when the names were checked; and the batch itself, cut and grown.
        for mapping in (context, bound, fields):
            mapping.update({f"k{i}": "v" * i for i in range(40)})
            mapping["password"] = "hunter2"
        del records[2:]
        records.extend(("appended",) for _ in range(2))

    for _ in range(3):  # the first pass meets the names; later ones take the fast paths
        for mapping in (context, bound, fields):
            mapping.pop("password", None)
        records[:] = [
            (1796084572.25, 20, "m", "plain", None, fields, bound, context, None, None),
            (1796084572.25, 20, "m", "%s", (_Mutating(add_secrets),), fields, bound, context,
             None, None),
            (1796084572.25, 20, "m", "dropped from the batch", None, {}, {}, {}, None, None),
        ]  # fmt: skip
        buffer = bytearray()
        lines = _lines(buffer, encoder.encode_into(records, buffer))
        assert lines[1]["message"] == "mutated"
        assert "hunter2" not in buffer.decode()
        assert all(line["password"] == "[REDACTED]" for line in lines[1:2])


def test_a_name_whose_hash_changes_its_own_dict_never_corrupts_a_line(
    implementation: str,
) -> None:
    encoder = Encoder(Redactor(frozenset({"password"})))
    for _ in range(3):
        key = _HashingKey("hk")
        fields = key.owner
        fields.update({"n": 1, key: 2})
        del key  # the dict alone holds it: emptying the dict frees it
        record = (1796084572.25, 20, "m", "hashing", None, fields, {}, {}, None, None)
        buffer = bytearray()
        _HashingKey.armed = True
        try:
            [line] = _lines(buffer, encoder.encode_into([record], buffer))
        finally:
            _HashingKey.armed = False
        assert line["message"] == "hashing"


# The record layout -------------------------------------------------------------------------------


def test_every_python_producer_builds_the_one_layout() -> None:
    from asynclog import _record

    arguments = _record.make_record.__code__.co_varnames[: len(_record.RECORD_FIELDS)]
    assert arguments == _record.RECORD_FIELDS
    record = _record.make_record(*range(len(_record.RECORD_FIELDS)))
    assert record == tuple(range(len(arguments)))  # each argument at its place in the layout


@needs_extension
def test_the_extension_refuses_another_record_layout() -> None:
    assert speedups is not None and speedups.RECORD_FIELDS == asynclog._record.RECORD_FIELDS
    result = run_python(
        """
        import importlib.util, pathlib, sys, warnings
        # asynclog._contract with a layout this build was not made for, in place before the
        # package (and so the extension) is imported.
        path = pathlib.Path("asynclog/_contract.py").resolve()
        spec = importlib.util.spec_from_file_location("asynclog._contract", path)
        contract = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(contract)
        contract.RECORD_FIELDS = contract.RECORD_FIELDS[::-1]
        sys.modules["asynclog._contract"] = contract
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from asynclog import _accel
        from asynclog._logger import Logger
        print(_accel.speedups, type(Logger.info).__name__)
        print(*[str(w.message) for w in caught], sep="\\n")
        """,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    first, warning = result.stdout.splitlines()[:2]
    assert first.split() == ["None", "function"]
    assert "built for the record layout" in warning and "pure-Python path runs" in warning


@needs_extension
def test_records_are_left_out_of_the_garbage_collectors_walks() -> None:
    import gc

    from asynclog._accel import make_record

    # Nothing a record holds can refer back to it: the collector need not walk it.
    assert not gc.is_tracked(make_record(1.0, 20, "n", "m", None, {}, {}, {}, None, None))
    QUEUE.items.clear()
    try:
        Logger("untracked").info("m", data={"a": [1]})
        [record] = QUEUE.items
    finally:
        QUEUE.items.clear()
    assert not gc.is_tracked(record)
    with pytest.raises(TypeError, match="10 arguments"):
        make_record(1.0, 20)
