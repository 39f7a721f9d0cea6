"""asynclog: structured logging and tracing that costs the request path (almost) nothing.

Log calls capture the record and enqueue it; one background thread encodes with orjson and writes
in batches. `asynclog.install(app)` adds access logs, request ids and OpenTelemetry tracing to a
FastAPI app.
"""

from ._context import (
    bind_contextvars,
    bound,
    clear_contextvars,
    get_contextvars,
    unbind_contextvars,
)
from ._fastapi import install
from ._logger import Logger
from ._pipeline import Pipeline, configure, flush, get_logger, reopen, shutdown, stats
from ._stdlib import AsyncLogHandler

__all__ = [
    "AsyncLogHandler",
    "Logger",
    "Pipeline",
    "bind_contextvars",
    "bound",
    "clear_contextvars",
    "configure",
    "flush",
    "get_contextvars",
    "get_logger",
    "install",
    "reopen",
    "shutdown",
    "stats",
    "unbind_contextvars",
]
