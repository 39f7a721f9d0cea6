"""The example app plus one route that names the worker process answering it.

Access lines carry no pid; the crash test needs to know which worker served each request.
"""

from __future__ import annotations

import os

from example.app import app, log


@app.get("/pid/{n}")
async def pid(n: int) -> dict[str, int]:
    log.info("pid", n=n)
    return {"pid": os.getpid()}
