"""One setup per logging library for the micro benchmark, each writing JSON lines to a file.

A peer opens a sink on a path for a record shape; the sink logs record number ``seq``
with that shape's fields (see ``records.py``, spelled out in the call as application code
would) and, on ``close``, returns only once every record is in the file. Each peer is set
up the way its documentation recommends for speed or for structured output, and nothing
more. Every peer runs today's shape; ``MIX_PEERS`` also run the record mix.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import logging.handlers
import queue
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from benchmarks.records import MESSAGE, Shape

LOGGER_NAME = "bench"


@dataclass
class Sink:
    """An open logger for one run.

    ``log(seq)`` and ``close()`` are coroutine functions for async peers. ``dropped()``
    is read after ``close()``.
    """

    log: Callable[[int], Any]
    close: Callable[[], Any]
    dropped: Callable[[], int] = lambda: 0


@dataclass(frozen=True)
class Peer:
    name: str
    label: str
    open: Callable[[Path, Shape], Sink] | Callable[[Path, Shape], Awaitable[Sink]]
    is_async: bool = False
    note: str = ""
    # The module the peer needs beyond the `bench` extra's own: without it the peer is skipped.
    needs: str = ""


def missing(peer: Peer) -> str | None:
    """Why *peer* cannot run here (its library is not installed), or None."""
    if peer.needs and importlib.util.find_spec(peer.needs) is None:
        return f"{peer.needs} is not installed"
    return None


# -- stdlib ------------------------------------------------------------------------------

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """The usual hand-rolled JSON formatter: standard keys plus every ``extra=`` field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS:
                out[key] = value
        return json.dumps(out, default=str)


def _stdlib_logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def _stdlib_call(logger: logging.Logger, shape: Shape) -> Callable[[int], None]:
    """The measured call for every stdlib-based setup: the shape's fields as `extra=`."""
    fields = shape.fields

    def log(seq: int) -> None:
        logger.info(MESSAGE, extra=fields(seq))

    return log


def _open_stdlib_sync(path: Path, shape: Shape) -> Sink:
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    logger = _stdlib_logger(handler)

    log = _stdlib_call(logger, shape)

    def close() -> None:
        logger.removeHandler(handler)
        handler.close()

    return Sink(log, close)


def _open_stdlib_queue(path: Path, shape: Shape) -> Sink:
    q: queue.Queue[logging.LogRecord] = queue.Queue(-1)
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    listener = logging.handlers.QueueListener(q, handler)
    queue_handler = logging.handlers.QueueHandler(q)
    logger = _stdlib_logger(queue_handler)
    listener.start()

    log = _stdlib_call(logger, shape)

    def close() -> None:
        logger.removeHandler(queue_handler)
        listener.stop()
        handler.close()

    return Sink(log, close)


# -- structlog -----------------------------------------------------------------------------


def _open_structlog(path: Path, shape: Shape) -> Sink:
    import structlog

    f = path.open("wb")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.BytesLoggerFactory(file=f),
        cache_logger_on_first_use=True,
    )
    logger = structlog.get_logger().bind(logger=LOGGER_NAME)

    def close() -> None:
        f.close()
        structlog.reset_defaults()

    return Sink(shape.keywords(logger), close)


# -- picologging -------------------------------------------------------------------------------


def _open_picologging(path: Path, shape: Shape) -> Sink:
    """picologging's stdlib-style API with the stdlib formatter's JSON. picologging 0.9.3 drops
    `extra=` without a word, so the fields go in as the one mapping argument (`record.args`),
    which its LogRecord keeps as the stdlib's does."""
    import picologging

    class JsonArgsFormatter(picologging.Formatter):
        def format(self, record: Any) -> str:
            out: dict[str, Any] = {
                "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
                **record.args,
            }
            return json.dumps(out, default=str)

    handler = picologging.FileHandler(str(path))
    handler.setFormatter(JsonArgsFormatter())
    logger = picologging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    logger.addHandler(handler)
    logger.setLevel(picologging.INFO)
    logger.propagate = False
    fields = shape.fields

    def log(seq: int) -> None:
        logger.info(MESSAGE, fields(seq))

    def close() -> None:
        logger.removeHandler(handler)
        handler.close()

    return Sink(log, close)


# -- loguru ----------------------------------------------------------------------------------


def _loguru(enqueue: bool) -> Callable[[Path, Shape], Sink]:
    def open_(path: Path, shape: Shape) -> Sink:
        from loguru import logger

        logger.remove()
        sink_id = logger.add(str(path), serialize=True, enqueue=enqueue, level="INFO")

        def close() -> None:
            logger.complete()
            logger.remove(sink_id)

        return Sink(shape.keywords(logger), close)

    return open_


# -- asyncio-native peers ------------------------------------------------------------------


async def _open_aiologger(path: Path, shape: Shape) -> Sink:
    from aiologger.formatters.json import ExtendedJsonFormatter  # type: ignore[import-untyped]
    from aiologger.handlers.files import AsyncFileHandler  # type: ignore[import-untyped]
    from aiologger.levels import LogLevel  # type: ignore[import-untyped]
    from aiologger.loggers.json import JsonLogger  # type: ignore[import-untyped]

    logger = JsonLogger(name=LOGGER_NAME, level=LogLevel.INFO, flatten=True)
    handler = AsyncFileHandler(str(path))
    handler.formatter = ExtendedJsonFormatter()
    logger.add_handler(handler)
    fields = shape.fields

    async def log(seq: int) -> None:
        await logger.info(MESSAGE, extra=fields(seq))

    async def close() -> None:
        await logger.shutdown()

    return Sink(log, close)


async def _open_aiofiles(path: Path, shape: Shape) -> Sink:
    """The handler async apps often write first: await one ``aiofiles`` write per record.

    It encodes with orjson (as asynclog does) and does not flush per line, so the only
    difference left against asynclog is the I/O design: a thread-pool hop per record.
    """
    import aiofiles  # type: ignore[import-untyped]

    f = await aiofiles.open(path, "wb")
    fields = shape.fields

    async def log(seq: int) -> None:
        record = {
            "time": dt.datetime.now(dt.timezone.utc),
            "level": "info",
            "logger": LOGGER_NAME,
            "message": MESSAGE,
            **fields(seq),
        }
        await f.write(orjson.dumps(record) + b"\n")

    async def close() -> None:
        await f.close()

    return Sink(log, close)


# -- asynclog ------------------------------------------------------------------------------

# Micro runs use overflow="block" so every record reaches the file and records/s means
# records written; the end-to-end server runs use asynclog's defaults.
ASYNCLOG_MICRO_SETTINGS: dict[str, Any] = {"format": "json", "overflow": "block"}


def _asynclog_sink(
    path: Path, **settings: Any
) -> tuple[Any, Callable[[], None], Callable[[], int]]:
    import asynclog

    asynclog.configure(sink=str(path), level="INFO", **ASYNCLOG_MICRO_SETTINGS, **settings)
    last_stats: dict[str, int] = {}

    def close() -> None:
        asynclog.flush(timeout=120)
        last_stats.update(asynclog.stats())
        asynclog.shutdown(timeout=120)

    return asynclog, close, lambda: int(last_stats.get("dropped", 0))


def _open_asynclog_native(path: Path, shape: Shape) -> Sink:
    asynclog, close, dropped = _asynclog_sink(path)
    logger = asynclog.get_logger(LOGGER_NAME)
    return Sink(shape.keywords(logger), close, dropped)


def _asynclog_stdlib(**settings: Any) -> Callable[[Path, Shape], Sink]:
    def open_sink(path: Path, shape: Shape) -> Sink:
        _, close, dropped = _asynclog_sink(path, **settings)
        logger = logging.getLogger(LOGGER_NAME)
        logger.handlers.clear()
        logger.setLevel(logging.INFO)
        logger.propagate = True

        log = _stdlib_call(logger, shape)

        return Sink(log, close, dropped)

    return open_sink


PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("stdlib-sync", "stdlib FileHandler + json.dumps formatter", _open_stdlib_sync),
        Peer("stdlib-queue", "stdlib QueueHandler + QueueListener", _open_stdlib_queue),
        Peer(
            "structlog-fast",
            "structlog (orjson, BytesLogger, cached filtering logger)",
            _open_structlog,
        ),
        Peer(
            "picologging",
            "picologging + json.dumps formatter (fields as the mapping argument)",
            _open_picologging,
            needs="picologging",
        ),
        Peer("loguru", "loguru serialize=True", _loguru(enqueue=False)),
        Peer("loguru-enqueue", "loguru serialize=True, enqueue=True", _loguru(enqueue=True)),
        Peer("aiologger", "aiologger JSON file (awaited)", _open_aiologger, is_async=True),
        Peer(
            "aiofiles",
            "plain aiofiles handler, one awaited write per record",
            _open_aiofiles,
            is_async=True,
        ),
        Peer("asynclog", "asynclog native API", _open_asynclog_native),
        Peer("asynclog-stdlib", "stdlib logging through asynclog", _asynclog_stdlib()),
        # The default keeps logging's record switches (safe for every other handler); this is
        # the opt-in that skips the caller's file/line, thread and process names.
        Peer(
            "asynclog-stdlib-lean",
            "stdlib logging through asynclog, stdlib_caller_info=False",
            _asynclog_stdlib(stdlib_caller_info=False),
        ),
    )
}
BASELINE = "stdlib-sync"
# The peers that also run the record mix (the list; asynclog both ways).
MIX_PEERS = (
    "stdlib-sync", "structlog-fast", "picologging", "loguru", "asynclog", "asynclog-stdlib",
)  # fmt: skip
