"""How asynclog says that another library's internal it relies on is gone.

asynclog reads a few private names of FastAPI, Starlette, OpenTelemetry and uvicorn (listed in
docs/guarantees.md). Each read is guarded: when the name is missing or changed, asynclog falls
back to a plainer behaviour and calls `degraded()`, which says so once per internal with one
`warning` line (logger `asynclog`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any

__all__ = ["degraded", "server_configs"]

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
    # Imported here: the record module has a guard of its own and imports this one.
    from ._queue import QUEUE
    from ._record import make_record  # not _accel's: _record calls this while _accel loads

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
