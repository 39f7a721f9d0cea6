"""The stdlib front door: a `logging.Handler` that captures records without formatting them."""

from __future__ import annotations

import logging
import logging.handlers
import re
from collections.abc import Mapping
from typing import Any

from ._accel import make_record
from ._compat import current_otel_context
from ._context import bound_fields
from ._queue import QUEUE
from ._snapshot import snapshot_args, snapshot_fields

__all__ = ["AsyncLogHandler", "StdlibRouting"]

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

    Made in a process that never configured asynclog (a `dictConfig` naming it, as a server's
    `--log-config` file does in a parent process that never imports the app), it starts
    asynclog from the environment, so what it is handed is written.
    """

    def __init__(self, level: int | str = logging.NOTSET) -> None:
        super().__init__(level)
        from ._pipeline import ensure_started  # _pipeline imports this module

        ensure_started()

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


# The logging module's documented switches for what a LogRecord collects ("Optimization" in the
# logging HOWTO), each with the record attributes it fills; `_srcfile = None` turns off
# findCaller's stack walk. asynclog writes none of these attributes; other handlers may.
_RECORD_SWITCHES: dict[str, tuple[Any, frozenset[str]]] = {
    "_srcfile": (None, frozenset({"pathname", "filename", "module", "lineno", "funcName"})),
    "logThreads": (False, frozenset({"thread", "threadName"})),
    "logProcesses": (False, frozenset({"process"})),
    "logMultiprocessing": (False, frozenset({"processName"})),
}
_ALL_SWITCHED = frozenset().union(*(fields for _, fields in _RECORD_SWITCHES.values()))
_STDLIB_MODULES = frozenset({"logging", "logging.handlers"})
# The stdlib's handlers that hand the record on whole, to be formatted out of the tree's sight
# (a QueueHandler's listener, a socket's or web server's peer).
_HANDING_ON = (
    logging.handlers.QueueHandler,
    logging.handlers.SocketHandler,
    logging.handlers.HTTPHandler,
)


def _fields_read(handler: logging.Handler) -> frozenset[str]:
    """The switched record attributes `handler` may read: those its format string names, or
    all of them when its handler or formatter class is not the stdlib's own (its code may read
    any attribute) or it hands the record on; a MemoryHandler's are its target's. asynclog's
    own handlers (a `dictConfig`'s too) read none."""
    if isinstance(handler, AsyncLogHandler):
        return frozenset()
    if type(handler).__module__ not in _STDLIB_MODULES or isinstance(handler, _HANDING_ON):
        return _ALL_SWITCHED
    if isinstance(handler, logging.handlers.MemoryHandler):  # it formats nothing itself
        return _ALL_SWITCHED if handler.target is None else _fields_read(handler.target)
    formatter = handler.formatter
    if formatter is None:
        return frozenset()  # logging's default format is "%(message)s"
    if type(formatter).__module__ not in _STDLIB_MODULES:
        return _ALL_SWITCHED
    text = getattr(getattr(formatter, "_style", None), "_fmt", None)
    if not isinstance(text, str):
        return _ALL_SWITCHED
    return frozenset(name for name in _ALL_SWITCHED if re.search(rf"\b{name}\b", text))


def _fields_read_in_tree() -> frozenset[str]:
    """The switched record attributes any handler in the logging tree may read."""
    loggers = [logging.getLogger()]
    loggers += [
        x for x in list(logging.Logger.manager.loggerDict.values()) if isinstance(x, logging.Logger)
    ]
    read: set[str] = set()
    for logger in loggers:
        for handler in list(logger.handlers):
            read |= _fields_read(handler)
    return frozenset(read)


class StdlibRouting:
    """What asynclog changed in `logging` to capture the stdlib, kept so that `restore()` gives
    back exactly that: the root's handlers and level, the record options (`logging._srcfile`
    and the like), and the handlers, filters and `propagate` of every logger it captured.

    The state of each logger is saved the first time it is changed, so capturing it again (a
    second `configure()`, gunicorn's worker resetting its loggers) never saves asynclog's own
    changes as the state to go back to. Changes others make meanwhile are kept.
    """

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        # name -> (handlers, propagate) before asynclog's first change
        self._saved: dict[str | None, tuple[list[logging.Handler], bool]] = {}
        self._root_level: int | None = None
        self._added_handlers: list[tuple[logging.Logger, logging.Handler]] = []
        self._added_filters: list[tuple[logging.Logger, Any]] = []
        self._options: dict[str, Any] | None = None

    def _save(self, name: str | None) -> logging.Logger:
        """The logger, its state before asynclog's first change saved; on a later change, the
        handlers others added since join what `restore()` gives back."""
        logger = logging.getLogger(name)
        saved = self._saved.get(name)
        if saved is None:
            self._saved[name] = (list(logger.handlers), logger.propagate)
        else:
            ours = [handler for _, handler in self._added_handlers]
            saved[0].extend(h for h in logger.handlers if h not in saved[0] and h not in ours)
        return logger

    def route_root(self, handler: logging.Handler, level: int) -> None:
        """Make `handler` the root logger's only handler, at `level`."""
        root = self._save(None)
        if self._root_level is None:
            self._root_level = root.level
        for old in list(root.handlers):
            root.removeHandler(old)
        root.addHandler(handler)
        self._added_handlers.append((root, handler))
        root.setLevel(level)

    def lean_records(self) -> None:
        """Turn off each record switch whose attributes no handler in the tree reads
        (`stdlib_caller_info=False`), and back on one that a handler added since reads. Called
        again after every capture, since a captured logger's handlers no longer count."""
        read = _fields_read_in_tree()
        if self._options is None:
            self._options = {name: getattr(logging, name) for name in _RECORD_SWITCHES}
        for name, (off, fields) in _RECORD_SWITCHES.items():
            setattr(logging, name, self._options[name] if fields & read else off)

    def full_records(self) -> None:
        """Give back the record switches `lean_records()` changed (a later `configure()` with
        the default `stdlib_caller_info=True`)."""
        if self._options is not None:
            for name, value in self._options.items():
                setattr(logging, name, value)
            self._options = None

    def capture(self, name: str, propagate: bool = True) -> None:
        """Remove a named logger's own handlers; with `propagate` it reaches the root."""
        logger = self._save(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = propagate

    def add_filter(self, name: str, filter_: Any) -> None:
        logger = self._save(name)
        if filter_ not in logger.filters:
            logger.addFilter(filter_)
            self._added_filters.append((logger, filter_))

    def restore(self) -> None:
        """Give back everything changed; a second call does nothing."""
        for logger, handler in self._added_handlers:
            logger.removeHandler(handler)
        for logger, filter_ in self._added_filters:
            logger.removeFilter(filter_)
        for name, (handlers, propagate) in self._saved.items():
            logger = logging.getLogger(name)
            added_since = [h for h in logger.handlers if h not in handlers]
            logger.handlers[:] = [*handlers, *added_since]
            logger.propagate = propagate
        if self._root_level is not None:
            logging.getLogger().setLevel(self._root_level)
        self.full_records()
        self._clear()
