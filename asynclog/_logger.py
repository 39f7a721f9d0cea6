"""The native logger: the caller's side of a log call, with no LogRecord and no formatting."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from time import time
from typing import Any

from ._context import bound_fields
from ._queue import QUEUE
from ._record import current_otel_context
from ._snapshot import snapshot_fields

__all__ = ["Logger"]

_EMPTY: Mapping[str, Any] = {}
_context_get = bound_fields.get


class Logger:
    """Writes structured lines: `log.info("paid", order_id=7, amount=9.5)`.

    Each call captures the time, level, fields, bound context and current span, puts one tuple on
    the queue and returns; the writer thread renders and writes it.
    """

    __slots__ = ("_bound", "name")

    def __init__(self, name: str, bound: Mapping[str, Any] = _EMPTY) -> None:
        self.name = name
        self._bound = bound

    def __repr__(self) -> str:
        return f"<asynclog.Logger {self.name!r} bound={dict(self._bound)!r}>"

    def bind(self, /, **fields: Any) -> Logger:
        """Return a child logger whose lines all carry `fields`."""
        return Logger(self.name, {**self._bound, **snapshot_fields(fields)})

    def is_enabled_for(self, level: int) -> bool:
        """Whether a call at `level` would be written."""
        return QUEUE.level <= level

    def _log(self, level: int, msg: object, fields: dict[str, Any], exc_info: Any) -> None:
        QUEUE.put(
            (
                time(),
                level,
                self.name,
                msg,
                None,
                snapshot_fields(fields) if fields else None,
                self._bound,
                _context_get(),
                current_otel_context(),
                exc_info,
            )
        )

    def debug(self, msg: object, /, **fields: Any) -> None:
        """Log at DEBUG."""
        if QUEUE.level <= 10:
            self._log(10, msg, fields, None)

    def info(self, msg: object, /, **fields: Any) -> None:
        """Log at INFO."""
        if QUEUE.level <= 20:
            self._log(20, msg, fields, None)

    def warning(self, msg: object, /, **fields: Any) -> None:
        """Log at WARNING."""
        if QUEUE.level <= 30:
            self._log(30, msg, fields, None)

    warn = warning

    def error(self, msg: object, /, **fields: Any) -> None:
        """Log at ERROR."""
        if QUEUE.level <= 40:
            self._log(40, msg, fields, None)

    def critical(self, msg: object, /, **fields: Any) -> None:
        """Log at CRITICAL."""
        if QUEUE.level <= 50:
            self._log(50, msg, fields, None)

    def exception(self, msg: object, /, **fields: Any) -> None:
        """Log at ERROR with the exception being handled."""
        if QUEUE.level <= 40:
            exc_info = sys.exc_info()
            self._log(40, msg, fields, exc_info if exc_info[0] is not None else None)

    def log(self, level: int, msg: object, /, **fields: Any) -> None:
        """Log at a numeric level."""
        if QUEUE.level <= level:
            self._log(level, msg, fields, None)
