"""How asynclog says that another library's internal it relies on is gone.

asynclog reads a few private names of FastAPI, Starlette, OpenTelemetry and uvicorn (listed in
docs/guarantees.md). Each read is guarded: when the name is missing or changed, asynclog falls
back to a plainer behaviour and calls `degraded()`, which says so once per internal with one
`warning` line (logger `asynclog`). The OpenTelemetry context variable every log call reads
is found here too (`current_otel_context`).

This module imports the record and the queue, and neither imports it: a guard may run while
asynclog is still being imported.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from types import FrameType
from typing import Any

from opentelemetry import context as _otel_context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

from ._queue import QUEUE
from ._record import make_record

__all__ = ["OTEL_CONTEXT_VAR", "current_otel_context", "degraded", "server_configs"]

_EMPTY: Mapping[str, Any] = {}
_said: set[str] = set()
_lock = threading.Lock()


def server_configs(frame: FrameType | None) -> Iterator[tuple[str, Any]]:
    """Up the stack from `frame` (a lifespan startup's caller): each frame's module name and
    the `self.config` its method holds, or None. uvicorn's and hypercorn's lifespans keep their
    `Config` there (not documented): the caller says when its server's frames hold none."""
    while frame is not None:
        config = getattr(frame.f_locals.get("self"), "config", None)
        yield str(frame.f_globals.get("__name__")), config
        frame = frame.f_back


def degraded(internal: str, fallback: str) -> None:
    """Say once that `internal` (e.g. "fastapi: FastAPI._telemetry") was not found and what
    asynclog does instead. Never raises; a guard may run before any pipeline (the line then
    waits in the queue for the first one)."""
    with _lock:
        if internal in _said:
            return
        _said.add(internal)
    fields = {"internal": internal, "fallback": fallback, "pid": os.getpid()}
    QUEUE.put(
        make_record(
            time.time(),
            30,
            "asynclog",
            "another library changed: an internal asynclog relies on is gone",
            None,
            fields,
            _EMPTY,
            _EMPTY,
            None,
            None,
        )
    )


def _otel_context_var() -> ContextVar[Any] | None:
    """The ContextVar behind OpenTelemetry's default runtime context (private names), or None:
    reading it directly costs one C call instead of two Python calls through the public
    `context.get_current()`, which is what asynclog calls without it. Another runtime context
    (OTEL_PYTHON_CONTEXT) has no such variable: the public call is simply the way then."""
    runtime = getattr(_otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if isinstance(var, ContextVar):
        return var
    if runtime is None or isinstance(runtime, ContextVarsRuntimeContext):
        degraded(
            "opentelemetry: context._RUNTIME_CONTEXT._current_context",
            "the OpenTelemetry context is read with context.get_current() (~75 ns more a call)",
        )
    return None


OTEL_CONTEXT_VAR = _otel_context_var()
current_otel_context: Callable[[], Any] = (
    _otel_context.get_current if OTEL_CONTEXT_VAR is None else OTEL_CONTEXT_VAR.get
)
