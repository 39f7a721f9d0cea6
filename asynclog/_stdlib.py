"""The stdlib front door: a `logging.Handler` that captures records without formatting them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ._context import bound_fields
from ._queue import QUEUE
from ._record import current_otel_context, make_record
from ._snapshot import snapshot_args, snapshot_fields

__all__ = ["AsyncLogHandler"]

_EMPTY: Mapping[str, Any] = {}
_context_get = bound_fields.get
_PLAIN = logging.LogRecord("", 0, "", 0, "", (), None).__dict__
# Everything a LogRecord carries by itself; anything else in its __dict__ came from `extra=`.
# uvicorn adds `color_message`, the message again with terminal colour codes: noise in a line.
_STANDARD = frozenset(_PLAIN) | {"message", "asctime", "color_message"}
_STANDARD_LEN = len(_PLAIN)


class AsyncLogHandler(logging.Handler):
    """Puts stdlib records on asynclog's queue.

    Unlike `logging.handlers.QueueHandler`, nothing is formatted on the caller: the message
    template, its arguments and `extra=` fields travel as they are and the writer renders them.
    The handler lock is skipped because the queue is thread-safe on its own.
    """

    def handle(self, record: logging.LogRecord) -> bool:
        if self.filters and not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        attrs = record.__dict__
        fields = None
        if len(attrs) > _STANDARD_LEN:
            extra = {k: v for k, v in attrs.items() if k not in _STANDARD}
            if extra:
                fields = snapshot_fields(extra)
        if record.stack_info:
            fields = {**(fields or {}), "stack_info": record.stack_info}
        args = record.args
        QUEUE.put(
            make_record(
                record.created,
                record.levelno,
                record.name,
                record.msg,
                snapshot_args(args) if args else None,
                fields,
                _EMPTY,
                _context_get(),
                current_otel_context(),
                record.exc_info if record.exc_info and record.exc_info[0] is not None else None,
            )
        )
