"""An app that fails, watched by a real sentry-sdk, served with or without asynclog.

Set by the environment (the tests run it in a fresh interpreter or under gunicorn):
- `SENTRY_EVENTS`: a file; sentry-sdk (default integrations) appends one JSON line per event
  its `before_send` sees. A transport that keeps envelopes in memory: nothing leaves the process.
- `WITH_ASYNCLOG=1`: `asynclog.install(app)` (settings from `ASYNCLOG_*`); else the app is plain.
- `CUSTOM_500=1`: the app has its own 500 handler, which logs a line and answers "custom".
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import sentry_sdk
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport


class _NoNetwork(Transport):
    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)


def _before_send(event: Any, hint: Any) -> None:
    [exception] = event.get("exception", {}).get("values", [{}])[-1:] or [{}]
    seen = {
        "pid": os.getpid(),
        "type": exception.get("type"),
        "value": exception.get("value"),
        "mechanism": (exception.get("mechanism") or {}).get("type"),
        "logger": event.get("logger"),
    }
    with open(os.environ["SENTRY_EVENTS"], "a") as events:
        events.write(json.dumps(seen) + "\n")


sentry_sdk.init(
    dsn="http://public@127.0.0.1:9/1",
    transport=_NoNetwork,
    before_send=_before_send,
)

app = FastAPI()
library_log = logging.getLogger("app.library")


@app.get("/fail")
async def fail() -> None:
    library_log.info("about to fail")
    raise RuntimeError("boom")


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


if os.environ.get("CUSTOM_500") == "1":

    @app.exception_handler(500)
    async def server_error(request: Request, exc: Exception) -> PlainTextResponse:
        library_log.warning("custom 500 page")
        return PlainTextResponse("custom", status_code=500)


if os.environ.get("WITH_ASYNCLOG") == "1":
    import asynclog

    asynclog.install(app, watchdog=False, startup_checks=False)
