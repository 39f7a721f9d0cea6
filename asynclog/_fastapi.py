"""install(app): the one call that makes a FastAPI app an observable production service."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import fields
from typing import Any

from ._checks import run_startup_checks
from ._middleware import AccessLogMiddleware, RequestLogConfig
from ._pipeline import Pipeline, current, start_pipeline
from ._redact import Redactor
from ._settings import AppSettings, Settings, resolve_settings
from ._tracing import flush_spans, setup_tracing, skip_unused_native_telemetry
from ._watchdog import LoopWatchdog

__all__ = ["install"]

# Server loggers routed through asynclog (their own handlers removed, propagating to root).
SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "gunicorn.error", "gunicorn.access")


class _Installation:
    """What install() keeps on the app; a later install() call replaces its parts in place."""

    def __init__(self, core: Settings, app: AppSettings, fastapi_app: Any) -> None:
        self.core = core
        self.app = app
        self.request = self._request_config(core, app, fastapi_app)

    @staticmethod
    def _request_config(core: Settings, app: AppSettings, fastapi_app: Any) -> RequestLogConfig:
        return RequestLogConfig(
            settings=app,
            redactor=Redactor(core.redact_keys, core.redact_depth),
            error_handler=_error_handler(fastapi_app),
        )

    def update(self, core: Settings, app: AppSettings, fastapi_app: Any) -> None:
        self.core, self.app = core, app
        request = self._request_config(core, app, fastapi_app)
        for item in fields(RequestLogConfig):
            setattr(self.request, item.name, getattr(request, item.name))


def _keep_outermost(fastapi_app: Any, middleware: Any) -> None:
    """Keep asynclog's middleware the outermost of the app's own middleware, even for middleware
    added after install(): their lines get request ids and trace ids too."""
    build = fastapi_app.build_middleware_stack

    def build_middleware_stack() -> Any:
        stack = fastapi_app.user_middleware
        if middleware in stack:
            stack.remove(middleware)
        stack.insert(0, middleware)
        return build()

    fastapi_app.build_middleware_stack = build_middleware_stack


def _error_handler(fastapi_app: Any) -> Any:
    """Render an unhandled exception the way Starlette's ServerErrorMiddleware would: the app's
    own handler for 500/Exception if it has one, else a plain 500. Debug mode keeps Starlette's
    traceback page (None leaves the exception to it)."""
    if getattr(fastapi_app, "debug", False):
        return None
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    async def handle(scope: Any, receive: Any, send: Any, exc: Exception) -> None:
        handlers = fastapi_app.exception_handlers
        handler = handlers.get(500) or handlers.get(Exception)
        request = Request(scope, receive)
        if handler is None:
            response = PlainTextResponse("Internal Server Error", status_code=500)
        elif inspect.iscoroutinefunction(handler):
            response = await handler(request, exc)
        else:
            response = await run_in_threadpool(handler, request, exc)
        await response(scope, receive, send)

    return handle


def _skip_logged_exceptions(record: logging.LogRecord) -> bool:
    # The access middleware already wrote this exception with the request's trace ids.
    exc = record.exc_info[1] if record.exc_info else None
    return not getattr(exc, "__asynclog_logged__", False)


def capture_server_loggers(pipeline: Pipeline, settings: AppSettings) -> None:
    """Send uvicorn's and gunicorn's loggers through asynclog; switch uvicorn's access line off
    (uvicorn skips it entirely when its logger has no handlers). `shutdown()` gives them back."""
    routing = pipeline.routing
    for name in SERVER_LOGGERS:
        routing.capture(name)
    routing.add_filter("uvicorn.error", _skip_logged_exceptions)
    routing.capture("uvicorn.access", propagate=settings.uvicorn_access_log)


def _ensure_pipeline(installation: _Installation) -> Pipeline:
    pipeline = current()
    if pipeline is None:
        pipeline = start_pipeline(installation.core)
    return pipeline


def _wrap_lifespan(app: Any, installation: _Installation) -> None:
    original: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: Any) -> AsyncIterator[Any]:
        pipeline = _ensure_pipeline(installation)
        # gunicorn's worker resets the server loggers after --preload imported the app.
        capture_server_loggers(pipeline, installation.app)
        run_startup_checks(installation.core, installation.app, pipeline.format, sys._getframe())
        watchdog: LoopWatchdog | None = None
        try:
            async with original(app_) as state:
                _after_startup(app, installation.app)
                # Watching from here: nothing is served before, and the full collection in
                # _after_startup (100s of ms with a big heap) would be reported as a stall.
                watchdog = _start_watchdog(installation)
                yield state
        finally:
            if installation.app.gc_freeze:
                gc.unfreeze()
            if watchdog is not None:
                watchdog.stop()
            flush_spans(installation.core.shutdown_timeout)
            # atexit never runs in a gunicorn worker killed by its re-raised SIGTERM: drain now.
            # Lines logged after this (the server's last words) are written synchronously.
            running = current()
            if running is not None:
                running.stop(restore=False)

    app.router.lifespan_context = lifespan


def _after_startup(app: Any, settings: AppSettings) -> None:
    """Once the app's own startup has run: drop per-request work nothing will use (undone by
    `gc.unfreeze()` at shutdown)."""
    skip_unused_native_telemetry(app)
    if settings.gc_freeze:
        # What exists now (modules, routes, models, clients) lives as long as the worker. Frozen,
        # it leaves the collector's full passes, which otherwise scan all of it: tens of ms
        # each, the p99 of every request they pause. Collected first, so no garbage is kept.
        gc.collect()
        gc.freeze()


def _start_watchdog(installation: _Installation) -> LoopWatchdog | None:
    if not installation.app.watchdog:
        return None
    watchdog = LoopWatchdog(
        asyncio.get_running_loop(),
        threshold=installation.app.watchdog_threshold_ms / 1000,
        interval=installation.app.watchdog_interval_ms / 1000,
    )
    watchdog.start()
    return watchdog


def install(app: Any, **settings: Any) -> Pipeline:
    """Make `app` (FastAPI) log and trace: access lines, request ids, trace ids on every line,
    server loggers as JSON, a blocked-loop watchdog, and a drain at lifespan shutdown.

    Accepts every `configure()` setting plus the install settings in the README. Idempotent:
    a second call updates the settings. Returns the pipeline handle.
    """
    core, app_settings = resolve_settings(settings)
    pipeline = start_pipeline(core)
    capture_server_loggers(pipeline, app_settings)
    installation: _Installation | None = getattr(app.state, "asynclog", None)
    if installation is None:
        installation = _Installation(core, app_settings, app)
        app.state.asynclog = installation
        app.add_middleware(AccessLogMiddleware, config=installation.request)
        _keep_outermost(app, app.user_middleware[0])
        _wrap_lifespan(app, installation)
    else:
        installation.update(core, app_settings, app)
    installation.request.tracer, installation.request.ids_only = setup_tracing(app, app_settings)
    return pipeline
