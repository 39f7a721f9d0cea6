"""Hooks around an app's own ASGI lifespan: the writer starts before the app's startup code and
drains after its shutdown code, under any server and any lifespan style the app uses."""

from __future__ import annotations

import traceback
from typing import Protocol

from ._asgi import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LifespanHooks", "run_lifespan"]


class LifespanHooks(Protocol):
    """What runs around the app's own lifespan."""

    def starting(self) -> None:
        """The server asked the app to start; the app's own startup code has not run yet."""

    def started(self) -> None:
        """The app's own startup code has run."""

    def stopped(self) -> None:
        """The app's own shutdown code has run, or its startup failed: the server is ending."""


async def run_lifespan(
    app: ASGIApp, hooks: LifespanHooks, scope: Scope, receive: Receive, send: Send
) -> None:
    """Run the app's lifespan with `hooks` called at its steps (each at most once)."""
    steps = {"stopped": False, "stopping": False}

    def stop() -> None:
        if not steps["stopped"]:
            steps["stopped"] = True
            hooks.stopped()

    async def receive_with_hooks() -> Message:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                hooks.starting()
            except BaseException:
                # Raised from the app's first receive, it escapes before the app can answer:
                # the server (uvicorn's lifespan="auto") would take the app for one without a
                # lifespan and serve it, its startup code never run. Answer for it.
                await send({"type": "lifespan.startup.failed", "message": traceback.format_exc()})
                raise
        elif message["type"] == "lifespan.shutdown":
            steps["stopping"] = True
        return message

    async def send_with_hooks(message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            hooks.started()
        elif kind in ("lifespan.startup.failed", "lifespan.shutdown.complete",
                      "lifespan.shutdown.failed"):  # fmt: skip
            stop()
        await send(message)

    try:
        await app(scope, receive_with_hooks, send_with_hooks)
    finally:
        if steps["stopping"]:  # an app that raised out of its shutdown still gets drained
            stop()
