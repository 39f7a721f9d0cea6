"""The native logger: the caller's side of a log call, with no LogRecord and no formatting."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from time import time
from typing import Any

import orjson

from ._accel import make_record, speedups
from ._compat import OTEL_CONTEXT_VAR, current_otel_context
from ._context import bound_fields
from ._contract import CaptureConfig
from ._queue import QUEUE
from ._snapshot import (
    FREEZE_NUMPY_OPTIONS,
    FREEZE_OPTIONS,
    IMMUTABLE_TYPES,
    all_immutable,
    snapshot_args,
    snapshot_fields,
    snapshot_value,
)

__all__ = ["Logger"]

_EMPTY: Mapping[str, Any] = {}
_context_get = bound_fields.get


def _level_method(level: int, name: str) -> Callable[..., None]:
    """One level's method: the C one when the extension is built, else `_python_level_method`."""
    if speedups is None:
        return _python_level_method(level, name)
    config = CaptureConfig(
        QUEUE,
        bound_fields,
        OTEL_CONTEXT_VAR,
        current_otel_context,
        IMMUTABLE_TYPES,
        orjson.dumps,
        FREEZE_OPTIONS,
        FREEZE_NUMPY_OPTIONS,
        snapshot_value,
        snapshot_args,
    )
    return speedups.LevelMethod(level, name, config)  # type: ignore[no-any-return]


def _python_level_method(level: int, name: str) -> Callable[..., None]:
    """One level's method in Python, the reference the C `LevelMethod` mirrors: the level
    check, then `Logger._log`."""

    def method(self: Logger, msg: object, /, *args: Any, **fields: Any) -> None:
        if QUEUE.level <= level:
            self._log(level, msg, args, fields, None)

    method.__name__ = method.__qualname__ = name.lower()
    method.__doc__ = f"Log at {name}."
    return method


class Logger:
    """Writes structured lines: `log.info("paid", order_id=7, amount=9.5)`.

    Positional arguments after the message are `%` arguments, as in `logging`: the writer
    renders `log.info("user %s", uid)`; a mismatch keeps the template and says so in the line.
    Each call captures the time, level, fields, bound context and current span, puts one tuple on
    the queue and returns; the writer thread renders and writes it.
    """

    __slots__ = ("_bound", "name")

    def __init__(self, name: str, bound: Mapping[str, Any] = _EMPTY) -> None:
        self.name = name
        # Like call fields, bound values are immutable or frozen: the writer relies on it.
        self._bound = snapshot_fields(dict(bound)) if bound else _EMPTY

    def __repr__(self) -> str:
        return f"<asynclog.Logger {self.name!r} bound={dict(self._bound)!r}>"

    def bind(self, /, **fields: Any) -> Logger:
        """Return a child logger whose lines all carry `fields`."""
        return Logger(self.name, {**self._bound, **fields})

    def is_enabled_for(self, level: int) -> bool:
        """Whether a call at `level` would be written."""
        return QUEUE.level <= level

    def _log(
        self, level: int, msg: object, args: tuple[Any, ...], fields: dict[str, Any], exc_info: Any
    ) -> None:
        """The caller's step, written once in Python (C's `level_method_call` is its twin):
        capture the time, level, fields, bound context and current span, freezing what could
        change later, and put the record on the queue."""
        QUEUE.put(
            make_record(
                time(),
                level,
                self.name,
                msg,
                snapshot_args(args) if args else None,
                # Most calls pass only immutable values: the check without a call first.
                fields if all_immutable(map(type, fields.values())) else snapshot_fields(fields),
                self._bound,
                _context_get(),
                current_otel_context(),
                exc_info,
            )
        )

    debug = _level_method(10, "DEBUG")
    info = _level_method(20, "INFO")
    warning = _level_method(30, "WARNING")
    warn = warning
    error = _level_method(40, "ERROR")
    critical = _level_method(50, "CRITICAL")

    def exception(self, msg: object, /, *args: Any, **fields: Any) -> None:
        """Log at ERROR with the exception being handled."""
        if QUEUE.level <= 40:
            exc_info = sys.exc_info()
            exc = exc_info if exc_info[0] is not None else None
            self._log(40, msg, args, fields, exc)

    def log(self, level: int, msg: object, /, *args: Any, **fields: Any) -> None:
        """Log at a numeric level."""
        if QUEUE.level <= level:
            self._log(level, msg, args, fields, None)
