"""Lines that never raise: a record or a line dict that orjson refuses, or whose own code
raises while it is encoded, is still written, with what was substituted listed in
`asynclog.substituted`; asynclog's own notices are written the same way."""

from __future__ import annotations

import dataclasses
import enum
import os
import threading
import time
from typing import Any

import orjson

from ._contract import LAST_TIME
from ._line import _JSON_OPTIONS, _MAX_DEPTH, SUBSTITUTED_KEY, format_time, level_name
from ._snapshot import Frozen, json_default, numpy_option

__all__ = ["describe_exception", "encode_line", "notice_line"]


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except BaseException as exc:
        _reraise_if_foreign(exc)
        return f"<unprintable {type(value).__name__}>"


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except BaseException as exc:
        _reraise_if_foreign(exc)
        return f"<unrepresentable {type(value).__name__}>"


def _reraise_if_foreign(exc: BaseException) -> None:
    """Re-raise what did not come from the record being encoded.

    Anything a record's own code raises while it is encoded (a `__str__` raising
    KeyboardInterrupt, say) is the record's: the value or the line is substituted and the
    encoding goes on. The one exception is the main thread, where KeyboardInterrupt and what a
    signal handler raises arrive from outside: a record written through there re-raises them
    to the caller. The writer thread is never the main thread."""
    if not isinstance(exc, Exception) and threading.current_thread() is threading.main_thread():
        raise exc


def describe_exception(exc: BaseException) -> str:
    """`Type: message` for asynclog's own notices; never raises."""
    return f"{type(exc).__name__}: {_safe_str(exc)}"


def _default(obj: Any) -> Any:
    """orjson's hook for the writer's own lines: a frozen value goes in as the JSON it is."""
    if isinstance(obj, Frozen):
        return orjson.Fragment(obj.data)
    return json_default(obj)


def notice_line(level: str, message: str, **fields: Any) -> bytes:
    """One of asynclog's own lines (logger `asynclog`): drop counts, write errors, losses.

    `pid` is read when the line is built (a forked child names itself): gunicorn's workers share
    stderr, and it says which one reported."""
    line = {
        "time": format_time(time.time()),
        "level": level,
        "logger": "asynclog",
        "message": message,
        "pid": os.getpid(),
        **fields,
    }
    return encode_line(line)


def encode_line(line: dict[str, Any]) -> bytes:
    """JSON-encode a line dict; values orjson refuses are substituted and listed, never raised."""
    try:
        return orjson.dumps(line, default=_default, option=_JSON_OPTIONS | numpy_option())
    except Exception:
        pass
    notes: list[str] = list(line.get(SUBSTITUTED_KEY, ()))
    safe = _sanitize(line, notes, "", 0, set())
    # A note names its field, and a field name may hold lone surrogates too.
    notes = [note.encode("utf-8", "backslashreplace").decode("utf-8") for note in notes]
    safe[SUBSTITUTED_KEY] = notes or ["value refused by orjson"]
    try:
        return orjson.dumps(safe, default=_default, option=_JSON_OPTIONS | numpy_option())
    except Exception as exc:  # only if _sanitize itself has a gap
        return orjson.dumps(
            _minimal_from_line(line, f"encoding failed: {type(exc).__name__}"),
            option=_JSON_OPTIONS | numpy_option(),
        )


def _sanitize(value: Any, notes: list[str], path: str, depth: int, seen: set[int]) -> Any:
    """A JSON-safe copy of `value`; every replacement is noted with its path."""
    kind = type(value)
    if value is None or kind is bool or kind is float:
        return value
    if kind is str or isinstance(value, str):
        try:
            value.encode("utf-8")
            return str(value)
        except UnicodeEncodeError:
            notes.append(f"{path or 'line'}: lone surrogates escaped")
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if kind is int or (isinstance(value, int) and not isinstance(value, enum.Enum)):
        if -(2**63) <= value < 2**64:
            return int(value)
        try:
            text = str(value)
        except ValueError:  # beyond sys.get_int_max_str_digits()
            text = f"<int of {value.bit_length()} bits>"
        notes.append(f"{path}: int beyond 64 bits written as a string")
        return text
    if kind is Frozen:
        return _sanitize(orjson.loads(value.data), notes, path, depth, seen)
    if depth >= _MAX_DEPTH:
        notes.append(f"{path}: nested deeper than {_MAX_DEPTH}")
        return "<too deep>"
    if isinstance(value, (dict, list, tuple, set, frozenset)) or (
        dataclasses.is_dataclass(value) and not isinstance(value, type)
    ):
        if id(value) in seen:
            notes.append(f"{path}: reference cycle cut")
            return "<cycle>"
        seen.add(id(value))
        try:
            if isinstance(value, dict):
                out: dict[str, Any] = {}
                for k, v in value.items():
                    if type(k) is str:
                        key = _sanitize(k, notes, path, depth + 1, seen)
                    else:
                        key = _safe_str(k)
                        notes.append(f"{path}: non-str key {key!r} written as a string")
                    out[key] = _sanitize(
                        v, notes, f"{path}.{key}" if path else key, depth + 1, seen
                    )
                return out
            if dataclasses.is_dataclass(value):
                items = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
                return _sanitize(items, notes, path, depth + 1, seen)
            return [
                _sanitize(v, notes, f"{path}[{i}]", depth + 1, seen) for i, v in enumerate(value)
            ]
        finally:
            seen.discard(id(value))
    try:
        orjson.dumps(value, default=_default)
        return value
    except Exception:
        pass
    try:
        text = repr(value)
    except Exception as exc:
        notes.append(f"{path}: repr() raised {type(exc).__name__}")
        return f"<unrepresentable {kind.__name__}>"
    notes.append(f"{path}: {kind.__name__} written as its repr")
    return _sanitize(text, notes, path, depth, seen)


def _minimal(record: Any, problem: str) -> dict[str, Any]:
    """What can be written of a record without running any of its own code but `str(msg)`."""
    head = tuple(record[:4]) if type(record) is tuple else ()
    created, levelno, logger, msg = (*head, None, None, None, None)[:4]
    if not (type(created) is float and 0.0 <= created < LAST_TIME):
        created = time.time()
    return {
        "time": format_time(created),
        "level": level_name(levelno) if type(levelno) is int else "error",
        "logger": logger if type(logger) is str else _safe_str(logger),
        "message": _sanitize(_safe_str(msg), [], "message", 0, set()),
        SUBSTITUTED_KEY: [problem],
    }


def _minimal_from_line(line: dict[str, Any], problem: str) -> dict[str, Any]:
    keep = {k: line.get(k) for k in ("time", "level", "logger")}
    message = line.get("message")
    keep["message"] = message if isinstance(message, str) else _safe_repr(message)
    safe = _sanitize(keep, [], "", 0, set())
    safe[SUBSTITUTED_KEY] = [problem]
    return safe  # type: ignore[no-any-return]
