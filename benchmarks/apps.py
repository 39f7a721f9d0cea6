"""One small FastAPI app per end-to-end mode, chosen by ``BENCH_MODE``.

Served as ``gunicorn -k uvicorn_worker.UvicornWorker benchmarks.apps:app``. Every mode
has the bundled example app's benchmark route (``GET /items/{item_id}`` in
``example/app.py``) doing the same work: two field-carrying log lines with the mode's
natural API, plus one access line per request from a small pure-ASGI middleware (or
asynclog's own). ``BENCH_SINK`` is a file path or ``stdout``.

Modes: ``none``, ``stdlib-sync``, ``stdlib-otel`` (stdlib sync + the stock
``FastAPIInstrumentor``, spans discarded), ``stdlib-queue`` (``QueueHandler`` +
``QueueListener``, drained in lifespan shutdown), ``asynclog`` and ``asynclog-tracing``
(the same route on a bare app with ``asynclog.install``; the benchmark serves the bundled
example app for these modes unless ``BENCH_ASYNCLOG_APP=bench``, see ``e2e.py``).
"""

from __future__ import annotations

import ast
import contextlib
import logging
import logging.handlers
import os
import queue
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from benchmarks.peers import JsonFormatter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTE = "/items/{item_id}"

MODE = os.environ.get("BENCH_MODE", "none")
SINK = os.environ.get("BENCH_SINK", "stdout")


class Item(BaseModel):
    id: int
    name: str
    price: float


_CATALOG = {n: Item(id=n, name=f"item-{n}", price=round(9.99 + n, 2)) for n in range(1, 101)}


def _item(item_id: int) -> Item:
    return _CATALOG.get(item_id) or Item(id=item_id, name=f"item-{item_id}", price=1.0)


class AccessLog:
    """One access line per HTTP request, logged after the response is sent."""

    def __init__(self, app: ASGIApp, logger: logging.Logger) -> None:
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.logger.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round((time.perf_counter() - start) * 1e3, 3),
                },
            )


def _stdlib_handler() -> logging.Handler:
    handler: logging.Handler = (
        logging.StreamHandler(sys.stdout) if SINK == "stdout" else logging.FileHandler(SINK)
    )
    handler.setFormatter(JsonFormatter())
    return handler


def _route_stdlib(app: FastAPI) -> None:
    log = logging.getLogger("example")

    @app.get(ROUTE)
    async def get_item(item_id: int) -> Item:
        item = _item(item_id)
        log.info("item fetched", extra={"item_id": item_id, "source": "catalog"})
        log.info(
            "price computed", extra={"item_id": item_id, "price": item.price, "currency": "EUR"}
        )
        return item


def _route_plain(app: FastAPI) -> None:
    @app.get(ROUTE)
    async def get_item(item_id: int) -> Item:
        return _item(item_id)


def _health(app: FastAPI) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}


def _stdlib_root(handler: logging.Handler) -> None:
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def _none() -> Any:
    app = FastAPI()
    _route_plain(app)
    _health(app)
    return app


def _stdlib_sync(instrument: bool) -> Any:
    _stdlib_root(_stdlib_handler())
    app = FastAPI()
    _route_stdlib(app)
    _health(app)
    if instrument:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.sdk.trace import TracerProvider

        # The stock instrumentation with a real SDK provider and no span processor:
        # spans are created, recorded and discarded, so only the tracing cost remains.
        FastAPIInstrumentor.instrument_app(app, tracer_provider=TracerProvider())
    return AccessLog(app, logging.getLogger("access"))


def _stdlib_queue() -> Any:
    records: queue.Queue[logging.LogRecord] = queue.Queue(-1)
    listener = logging.handlers.QueueListener(records, _stdlib_handler())
    _stdlib_root(logging.handlers.QueueHandler(records))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        listener.start()
        try:
            yield
        finally:
            # The worker exits by a re-raised SIGTERM, so atexit would never drain it.
            listener.stop()

    app = FastAPI(lifespan=lifespan)
    _route_stdlib(app)
    _health(app)
    return AccessLog(app, logging.getLogger("access"))


def _bench_settings() -> dict[str, Any]:
    """``BENCH_SETTINGS="flush_interval=0.02;watchdog=False"``: install() settings as Python
    literals, for settings no ``ASYNCLOG_*`` variable reaches."""
    pairs = filter(None, os.environ.get("BENCH_SETTINGS", "").split(";"))
    return {name: ast.literal_eval(value) for name, _, value in (p.partition("=") for p in pairs)}


def _asynclog(tracing: bool) -> Any:
    """Knobs for `benchmarks.ablate`: ``BENCH_LINES=0`` drops the route's two lines,
    ``BENCH_ACCESS=0`` the access line, ``BENCH_SETTINGS`` passes install() settings (others:
    the ``ASYNCLOG_*`` variables)."""
    import asynclog

    app = FastAPI()
    log = asynclog.get_logger("example")

    if os.environ.get("BENCH_LINES", "2") == "0":
        _route_plain(app)
    else:

        @app.get(ROUTE)
        async def get_item(item_id: int) -> Item:
            item = _item(item_id)
            log.info("item fetched", item_id=item_id, source="catalog")
            log.info("price computed", item_id=item_id, price=item.price, currency="EUR")
            return item

    _health(app)
    access_log = os.environ.get("BENCH_ACCESS", "1") != "0"
    asynclog.install(app, tracing=tracing, access_log=access_log, **_bench_settings())
    return app


def build(mode: str) -> Any:
    """The ASGI app for *mode*."""
    factories: dict[str, Callable[[], Any]] = {
        "none": _none,
        "stdlib-sync": lambda: _stdlib_sync(instrument=False),
        "stdlib-otel": lambda: _stdlib_sync(instrument=True),
        "stdlib-queue": _stdlib_queue,
        "asynclog": lambda: _asynclog(tracing=False),
        "asynclog-tracing": lambda: _asynclog(tracing=True),
    }
    if mode not in factories:
        raise SystemExit(f"BENCH_MODE={mode!r}: expected one of {', '.join(factories)}")
    return factories[mode]()


app = build(MODE)
