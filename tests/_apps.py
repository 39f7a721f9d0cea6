"""The example app plus two routes for tests that look at each gunicorn worker:

- `GET /stats` flushes the worker's pipeline and returns its counters and pid; it writes no
  access line, so counters read from it match the lines in the sink exactly.
- `GET /pid/{n}` logs one line and returns the pid; it writes an access line like any route, so
  the crash test knows which worker served (and logged) each request.
"""

from __future__ import annotations

import os
from typing import Any

import asynclog
from example.app import app, log


@app.get("/stats")
def stats() -> dict[str, Any]:
    """Flush this worker's pipeline, then return its counters and pid. A sync route: the flush
    waits in the threadpool, never on the event loop."""
    flushed = asynclog.flush(20)
    return {"pid": os.getpid(), "flushed": flushed, **asynclog.stats()}


@app.get("/pid/{n}")
async def pid(n: int) -> dict[str, int]:
    log.info("pid", n=n)
    return {"pid": os.getpid()}


# Like the example app's install(), with /stats excluded from the access lines too.
asynclog.install(app, service_name="asynclog-example", exclude_paths={"/health", "/stats"})
