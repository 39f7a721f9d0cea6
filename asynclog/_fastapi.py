"""install(app): the one call that makes a FastAPI app an observable production service."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from dataclasses import fields
from types import FrameType
from typing import Any

from . import _middleware
from ._checks import run_startup_checks
from ._compat import degraded, server_configs
from ._fastapi_telemetry import skip_unused_native_telemetry
from ._middleware import AccessLogMiddleware, RequestLogConfig
from ._pipeline import Pipeline, current, start_pipeline
from ._redact import Redactor
from ._settings import AppSettings, Settings, resolve_settings
from ._tracing import flush_spans, instrumentor_fallback, setup_tracing
from ._watchdog import LoopWatchdog

__all__ = ["install"]

# Server loggers routed through asynclog (their own handlers removed, propagating to root):
# uvicorn's, gunicorn's, hypercorn's, and granian's (`_granian`, where its Rust core logs too).
SERVER_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "gunicorn.error",
    "gunicorn.access",
    "hypercorn.error",
    "_granian",
)


class _Installation:
    """What install() keeps on the app; a later install() call replaces its parts in place. It
    is also the app's lifespan hooks (see `LifespanHooks`)."""

    def __init__(self, core: Settings, app: AppSettings, fastapi_app: Any) -> None:
        self.core = core
        self.app = app
        self.fastapi_app = fastapi_app
        self.request = self._request_config(core, app)
        self.watchdog: LoopWatchdog | None = None

    @staticmethod
    def _request_config(core: Settings, app: AppSettings) -> RequestLogConfig:
        redactor = Redactor(core.redact_keys, core.redact_depth)
        return RequestLogConfig(settings=app, redactor=redactor)

    def update(self, core: Settings, app: AppSettings) -> None:
        self.core, self.app = core, app
        request = self._request_config(core, app)
        for item in fields(RequestLogConfig):
            setattr(self.request, item.name, getattr(request, item.name))

    # --- lifespan hooks -----------------------------------------------------------------------

    def starting(self) -> None:
        """Before the app's startup code: the writer runs (again, after an earlier drain)."""
        pipeline = current()  # the running one, if any
        if pipeline is None:
            pipeline = start_pipeline(self.core)
        # gunicorn's worker resets the server loggers after --preload imported the app.
        _materialize_server_loggers(sys._getframe(1))
        capture_server_loggers(pipeline, self.app)
        if self.request.tracer is None:
            fallback = instrumentor_fallback(self.fastapi_app, self.app)
            if fallback is not None:
                self.request.tracer, self.request.ids_only = fallback
        run_startup_checks(self.core, self.app, pipeline.format, sys._getframe(1))

    def started(self) -> None:
        """Once the app's own startup has run: drop per-request work nothing will use, freeze
        what exists now out of the collector's passes (undone by `gc.unfreeze()` at shutdown),
        and start the watchdog."""
        skip_unused_native_telemetry(self.fastapi_app)
        if self.app.gc_freeze:
            # What exists now (modules, routes, models, clients) lives as long as the worker.
            # Frozen, it leaves the collector's full passes, which otherwise scan all of it and
            # set the p99 of every request they pause. Collected first: no garbage kept.
            gc.collect()
            gc.freeze()
        # Watching from here: nothing is served before, and the full collection above (long
        # with a big heap) would be reported as a stall.
        self.watchdog = _start_watchdog(self.app)

    def stopped(self) -> None:
        """After the app's own shutdown code: drain."""
        if self.app.gc_freeze:
            gc.unfreeze()
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        flush_spans(self.core.shutdown_timeout)
        # atexit never runs in a gunicorn worker killed by its re-raised SIGTERM: drain now.
        # Lines logged after this (the server's last words) are written synchronously.
        running = current()
        if running is not None:
            running.stop(restore=False)


def _skip_logged_exceptions(record: logging.LogRecord) -> bool:
    # The access middleware already wrote this exception with the request's trace ids.
    exc = record.exc_info[1] if record.exc_info else None
    return not getattr(exc, "__asynclog_logged__", False)


# granian's Rust core logs an application's exception as text, the traceback in the message
# ("Application callable raised an exception\nTraceback ..."): no exception object to mark.
_MIDDLEWARE_FRAME = f'File "{_middleware.__file__}"'


def _skip_granian_logged_exceptions(record: logging.LogRecord) -> bool:
    # A traceback through asynclog's middleware is one it already wrote (it logs every
    # exception that passes it); any other is kept.
    message = record.msg if isinstance(record.msg, str) else ""
    return not ("Traceback (most recent call last)" in message and _MIDDLEWARE_FRAME in message)


def _materialize_server_loggers(frame: FrameType | None) -> None:
    """hypercorn makes its loggers (handlers included) at their first use, after the lifespan
    startup that captures them: make them now, from the `Config` its lifespan holds as
    `self.config` (not documented), so the capture that follows removes their handlers."""
    under_hypercorn = False
    for module, config in server_configs(frame):
        if module.startswith("hypercorn."):
            under_hypercorn = True
            if type(config).__module__ == "hypercorn.config":
                config.log  # noqa: B018 - the property makes the loggers
                return
    if under_hypercorn:
        degraded(
            "hypercorn: the lifespan's self.config (its Config, found by walking frames)",
            "hypercorn.error keeps the stderr handler it adds after startup: its lines are "
            "written twice, as JSON and as text",
        )


def capture_server_loggers(pipeline: Pipeline, settings: AppSettings) -> None:
    """Send uvicorn's and gunicorn's loggers through asynclog; switch uvicorn's access line off
    (uvicorn skips it entirely when its logger has no handlers). `shutdown()` gives them back."""
    routing = pipeline.routing
    for name in SERVER_LOGGERS:
        routing.capture(name)
    routing.add_filter("uvicorn.error", _skip_logged_exceptions)
    routing.add_filter("hypercorn.error", _skip_logged_exceptions)
    # granian's Rust core logs it from its `utils` module, on that child logger.
    routing.add_filter("_granian.utils", _skip_granian_logged_exceptions)
    routing.capture("uvicorn.access", propagate=settings.uvicorn_access_log)
    pipeline.set_record_switches()  # the captured loggers' handlers no longer count


def _start_watchdog(settings: AppSettings) -> LoopWatchdog | None:
    if not settings.watchdog:
        return None
    watchdog = LoopWatchdog(
        asyncio.get_running_loop(),
        threshold=settings.watchdog_threshold_ms / 1000,
        interval=settings.watchdog_interval_ms / 1000,
    )
    watchdog.start()
    return watchdog


_NOT_BUILT = object()


def _wrap_whole_stack(fastapi_app: Any, installation: _Installation) -> None:
    """Put asynclog's middleware around the app's whole middleware stack, outside Starlette's
    `ServerErrorMiddleware`, so it sees the 500 that answers an unhandled exception and every
    middleware the app adds, before or after install().

    Starlette builds that stack lazily with `build_middleware_stack()` into `middleware_stack`
    (not a documented extension point): without them, asynclog's middleware is added with the
    public `add_middleware()`, first among the app's own, inside `ServerErrorMiddleware`."""
    build = getattr(fastapi_app, "build_middleware_stack", None)
    built = getattr(fastapi_app, "middleware_stack", _NOT_BUILT)
    if built is not None and built is not _NOT_BUILT:
        raise RuntimeError("asynclog: install(app) must run before the app serves requests")
    if built is _NOT_BUILT or not callable(build):
        degraded(
            "starlette: Starlette.build_middleware_stack / middleware_stack",
            "asynclog's middleware sits inside ServerErrorMiddleware: a 500 carries no "
            "X-Request-ID and lines of the app's 500 handler no trace ids",
        )
        fastapi_app.add_middleware(
            AccessLogMiddleware, config=installation.request, lifespan=installation
        )
        return

    def build_middleware_stack() -> Any:
        stack = AccessLogMiddleware(build(), installation.request, installation)
        if installation.app.tracing_backend == "instrumentor":
            from starlette.middleware.errors import ServerErrorMiddleware

            # FastAPIInstrumentor (applied after this) wants ServerErrorMiddleware on top, and
            # moves what that wraps inside its span: asynclog's middleware, which then logs
            # with the instrumentor's trace ids.
            return ServerErrorMiddleware(stack, debug=fastapi_app.debug)
        return stack

    fastapi_app.build_middleware_stack = build_middleware_stack


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
        _wrap_whole_stack(app, installation)
    else:
        installation.update(core, app_settings)
    installation.request.tracer, installation.request.ids_only = setup_tracing(app, app_settings)
    return pipeline
