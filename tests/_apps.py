"""The example app plus `GET /stats`, for tests that read each gunicorn worker's counters."""

from __future__ import annotations

import os
from typing import Any

import asynclog
from example.app import app


@app.get("/stats")
def stats() -> dict[str, Any]:
    """Flush this worker's pipeline, then return its counters and pid. A sync route: the flush
    waits in the threadpool, never on the event loop."""
    flushed = asynclog.flush(10)
    return {"pid": os.getpid(), "flushed": flushed, **asynclog.stats()}


# /stats writes no access line: counters read from it then match the lines in the sink exactly.
asynclog.install(app, service_name="asynclog-example", exclude_paths={"/health", "/stats"})
