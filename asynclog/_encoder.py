"""The encoder: a captured record as its line, JSON with orjson (or console text, `_console`)."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from opentelemetry import trace as _trace

from ._accel import speedups as _speedups
from ._console import console_line
from ._contract import EncodeConfig
from ._fallback import (
    _default,
    _minimal,
    _reraise_if_foreign,
    _safe_repr,
    _safe_str,
    _sanitize,
    encode_line,
)
from ._line import (
    _JSON_OPTIONS,
    _LEVEL_NAMES,
    RENAME_PREFIX,
    RESERVED_KEYS,
    SUBSTITUTED_KEY,
    format_time,
    level_name,
)
from ._record import Record
from ._redact import REDACTED, Redactor
from ._settings import Settings
from ._shorten import shorten_line
from ._snapshot import Frozen, numpy_option

__all__ = ["Encoder"]

_EMPTY: Mapping[str, Any] = {}


def render_message(msg: object, args: Any) -> tuple[str, str | None]:
    """Apply `%` args like `LogRecord.getMessage`; a mismatch keeps the template and says why."""
    try:
        text = msg if type(msg) is str else str(msg)
    except Exception as exc:
        return f"<unprintable {type(msg).__name__}>", f"str(msg) raised {type(exc).__name__}"
    if args:
        try:
            return text % args, None
        except Exception as exc:
            return text, f"message args did not match: {type(exc).__name__}: {_safe_str(exc)}"
    return text, None


def format_exception(exc_info: Any) -> tuple[dict[str, str], str | None]:
    """`{"type", "message", "stacktrace"}` for an `(type, value, traceback)` triple, and what
    could not be written as given, if anything."""
    etype, value, tb = exc_info
    problem = None
    try:
        stack = "".join(traceback.format_exception(etype, value, tb))
    except Exception as exc:
        stack = f"<traceback unavailable: {type(exc).__name__}>"
        problem = f"exception.stacktrace: formatting raised {type(exc).__name__}"
    try:
        message = str(value)
    except Exception as exc:
        message = f"<unprintable {type(value).__name__}>"
        problem = f"exception.message: str() raised {type(exc).__name__}"
    name = getattr(etype, "__qualname__", None) or _safe_str(etype)
    module = getattr(etype, "__module__", "builtins")
    exception = {
        "type": name if module in ("builtins", None) else f"{module}.{name}",
        "message": message,
        "stacktrace": stack,
    }
    return exception, problem


def span_ids(otel: Any) -> tuple[str, str] | None:
    """The `(trace_id, span_id)` of the span current in an OpenTelemetry context, if valid."""
    try:
        ctx = _trace.get_current_span(otel).get_span_context()
    except Exception:
        return None
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


class Encoder:
    """Builds the line dict of a captured record and encodes it.

    One instance lives on the writer thread; it is not thread-safe.
    """

    def __init__(
        self,
        redactor: Redactor,
        console: bool = False,
        color: bool = False,
        on_fault: Callable[[], None] | None = None,
        max_line_bytes: int = Settings.max_line_bytes,
    ) -> None:
        self.redactor = redactor
        # A JSON line longer than this is shortened (`shorten_line`); console lines are not.
        self.max_line_bytes = max_line_bytes
        self._shorten = shorten_line
        self.console = console
        self.color = color
        # Called for each record that could not be built or encoded at all (see `encode`).
        self.on_fault = on_fault
        # The C fast path of encode_into, when built (see asynclog/_c).
        self._c_encode_into = _speedups.encode_into if _speedups is not None else None
        # Records per write() and per hold of the GIL: about the same encoding time on either
        # path, as long as the event loop's p99 allows. Each write hands the GIL to the event
        # loop and waits to get it back, so fewer, longer slices cost the writer less.
        self.slice_size = 512 if self._c_encode_into is not None else 128
        # Field names seen to need neither renaming nor masking: the fast path of _merge.
        self._plain_keys: set[str] = set()
        self._all_plain = self._plain_keys.issuperset
        # The C path's `,"name":` for each of them, rendered once.
        self._key_prefixes: dict[str, bytes] = {}
        # The last context mapping whose names were all plain (contexts are shared by the
        # lines of a request and never mutated: binding makes a new one).
        self._checked_context: Any = None
        self._last_otel: Any = None
        self._last_ids: tuple[str, str] | None = None
        # What the C encode_into works with, fixed for this encoder (it shares the caches).
        self._c_config = None if self._c_encode_into is None else EncodeConfig(
            self._plain_keys, self._key_prefixes, _LEVEL_NAMES, self._span_ids, orjson.dumps,
            self._default, self.redactor.json_rule, self.encode, self.max_line_bytes,
            self._shorten,
        )  # fmt: skip

    def _span_ids(self, otel: Any) -> tuple[str, str] | None:
        # Lines of one request share its context object: resolve its ids once.
        if otel is not self._last_otel:
            self._last_ids = span_ids(otel)
            self._last_otel = otel
        return self._last_ids

    def _merge(self, line: dict[str, Any], fields: Mapping[str, Any]) -> None:
        # Fast path: field names repeat call after call, so names already known to need neither
        # renaming nor masking go in with one update(). The values need no look: whatever the
        # caller captured is immutable or frozen (see _snapshot), and the default hook puts a
        # frozen value in as its bytes, or decoded and redacted (`_frozen`), as orjson encodes.
        if self._plain_keys.issuperset(fields):
            line.update(fields)
            return
        self._merge_slowly(line, fields)

    def _merge_slowly(self, line: dict[str, Any], fields: Mapping[str, Any]) -> None:
        plain = self._plain_keys
        for key, value in fields.items():
            if type(key) is not str:
                key = _safe_str(key)
            reserved = key in RESERVED_KEYS
            name = RENAME_PREFIX + key if reserved else key
            secret = self.redactor.is_secret(key)
            # Exact str only: the C path looks names up in this set, and a str subclass could
            # run code of its own there (`__hash__`, `__eq__`).
            if not (reserved or secret) and type(key) is str and len(plain) < 10_000:
                plain.add(key)
            if secret:
                value = REDACTED
            elif type(value) is Frozen:
                value = self._frozen(value)
            # A dict or list here is a finished span's (masked when its fields were built) or one
            # orjson refused on the caller (a cycle, a huge int...): orjson refuses that here too,
            # and the fallback (_thaw) makes it safe, then masks it.
            line[name] = value

    def build(self, record: Record) -> dict[str, Any]:
        """The line as a dict, keys in schema order: the one Python way a line is built (C's
        `encode_into` is its twin). The common record (a `str` message, no exception, names
        already seen to need neither renaming nor masking) takes one update per mapping."""
        # RECORD_FIELDS order
        created, levelno, logger, msg, args, fields, bound, context, otel, exc_info = record
        if args is None and type(msg) is str:
            message, problem = msg, None
        else:
            message, problem = render_message(msg, args)
        stamp = format_time(created)
        level = _LEVEL_NAMES.get(levelno) or level_name(levelno)
        ids = self._span_ids(otel) if otel else None
        known = self._all_plain
        if (
            problem is None
            and exc_info is None
            and type(fields) is dict
            # Lines of a request share its context mapping, never mutated (binding makes a new
            # one): its names are checked once.
            and (not context or context is self._checked_context or known(context))
            and (not bound or known(bound))
            and known(fields)
        ):
            if context:
                # Kept (not just its id) so the mapping cannot be freed and its id reused.
                self._checked_context = context
            # One dict display: the writer's hot path without the extension.
            if ids is None:
                return {
                    "time": stamp, "level": level, "logger": logger, "message": message,
                    **(context or _EMPTY), **(bound or _EMPTY), **fields,
                }  # fmt: skip
            return {
                "time": stamp, "level": level, "logger": logger, "message": message,
                "trace_id": ids[0], "span_id": ids[1],
                **(context or _EMPTY), **(bound or _EMPTY), **fields,
            }  # fmt: skip
        line: dict[str, Any] = {"time": stamp, "level": level, "logger": logger, "message": message}
        if ids is not None:
            line["trace_id"], line["span_id"] = ids
        if context:
            self._merge(line, context)
        if bound:
            self._merge(line, bound)
        if fields:
            if type(fields) is dict:
                self._merge(line, fields)
            else:  # a deferred builder (a finished span): its values get the full look
                self._merge_slowly(line, self.redactor.nested(fields(self.redactor)))
        notes = None
        if exc_info is not None:
            line["exception"], exc_problem = format_exception(exc_info)
            if exc_problem is not None:
                notes = [exc_problem]
        if problem is not None:
            notes = [f"message: {problem}", *(notes or ())]
            if args:
                line["message.args"] = _safe_repr(args)
        if notes is not None:
            line[SUBSTITUTED_KEY] = notes
        return line

    def encode_into(self, records: list[Record], buffer: bytearray) -> list[int]:
        """Append the lines of `records` to `buffer`, as `encode` would write them; returns
        where each line ends in it. Never raises.

        The writer's hot loop. With the C extension built, `_speedups.encode_into` takes the
        records and writes the same bytes, handing back to `encode` what it does not handle;
        without it (or for console lines), each record goes through `encode`.
        """
        if self._c_encode_into is not None and not self.console:
            options = _JSON_OPTIONS | numpy_option()
            return self._c_encode_into(records, buffer, options, self._c_config)  # type: ignore[no-any-return]
        ends: list[int] = []
        end = ends.append
        encode = self.encode
        if self.console:
            for record in records:
                buffer += encode(record)
                end(len(buffer))
            return ends
        # `encode`'s JSON path with its per-line set-up hoisted out of the loop; a record it
        # cannot take whole goes to `encode`, which writes what can be written of it.
        build = self.build
        dumps = orjson.dumps
        default = self._default
        options = _JSON_OPTIONS | numpy_option()
        limit = self.max_line_bytes
        for record in records:
            try:
                data = dumps(build(record), default, options)
                if len(data) > limit:
                    data = self._shorten(data, limit)
            except BaseException as exc:
                _reraise_if_foreign(exc)
                data = encode(record)
            buffer += data
            end(len(buffer))
        return ends

    def encode(self, record: Record) -> bytes:
        """One complete line (with `\\n`) for a record; never raises, whatever the record's own
        code does (see `_reraise_if_foreign` for the one exception). A record that cannot be
        built or encoded at all is written as its time, level, logger and message, marked, and
        counted as a fault."""
        try:
            line = self.build(record)
        except BaseException as exc:
            _reraise_if_foreign(exc)
            line = self._fault(record, "building the line failed", exc)
        try:
            if self.console:
                return console_line(self._thaw(line), self.color)
            try:
                options = _JSON_OPTIONS | numpy_option()
                data = orjson.dumps(line, self._default, options)
            except Exception:
                data = encode_line(self._thaw(line))
        except BaseException as exc:  # a gap in the fallback, or the record's own raise
            _reraise_if_foreign(exc)
            line = self._fault(record, "encoding the line failed", exc)
            if self.console:
                return console_line(line, self.color)
            data = encode_line(line)
        limit = self.max_line_bytes
        return data if len(data) <= limit else self._shorten(data, limit)

    def _fault(self, record: Any, problem: str, exc: BaseException) -> dict[str, Any]:
        if self.on_fault is not None:
            self.on_fault()
        return _minimal(record, f"{problem}: {type(exc).__name__}")

    def _default(self, obj: Any) -> Any:
        if type(obj) is Frozen:
            return self._frozen(obj)
        return _default(obj)

    def _frozen(self, frozen: Frozen) -> Any:
        """A value frozen on the caller, for the line: its bytes as they are when redaction
        could not change them (no secret-like name, not too deep: `may_mask_json`), else
        decoded so redaction sees inside it. The C path makes the same choice."""
        if self.redactor.may_mask_json(frozen.data):
            return self._decode(frozen)
        return orjson.Fragment(frozen.data)

    def _decode(self, frozen: Frozen) -> Any:
        try:
            return self.redactor.nested(orjson.loads(frozen.data))
        except orjson.JSONDecodeError:
            return frozen.data.decode("utf-8", "replace")

    def _thaw(self, line: dict[str, Any]) -> dict[str, Any]:
        """The line with frozen values decoded and the containers orjson refused made JSON-safe
        (cycles cut, with notes) and then masked, for the paths that do not go through orjson
        with this encoder's default hook (console, the fallback)."""
        notes: list[str] = list(line.get(SUBSTITUTED_KEY, ()))
        out: dict[str, Any] = {}
        for key, value in line.items():
            kind = type(value)
            if kind is Frozen:
                value = self._decode(value)
            elif (kind is dict or kind is list or kind is tuple) and key != SUBSTITUTED_KEY:
                value = self.redactor.nested(_sanitize(value, notes, key, 0, set()))
            out[key] = value
        if notes:
            out[SUBSTITUTED_KEY] = notes
        return out
