"""Every private name of another library that asynclog reads, simulated gone: asynclog falls back
to the plainer behaviour docs/guarantees.md describes, says so once (a `warning` line, logger
`asynclog`), never raises, and still drains at shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import asynclog
from asynclog._checks import reload_enabled

from conftest import QUIET, read_lines, run_python

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def make_app() -> FastAPI:
    """An app that logs at shutdown (the drain must keep that line) and fails on /fail."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        asynclog.get_logger("life").info("stopped cleanly")

    app = FastAPI(lifespan=lifespan)
    log = asynclog.get_logger("app")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        log.info("item", item_id=item_id)
        return {"id": item_id}

    @app.get("/fail")
    async def fail() -> None:
        log.info("about to fail")
        raise RuntimeError("boom")

    return app


def said(lines: list[dict[str, Any]]) -> list[str]:
    """The internals asynclog said were gone."""
    return [line["internal"] for line in lines if "internal" in line]


def by_logger(lines: list[dict[str, Any]], logger: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == logger]


@pytest.mark.parametrize("backend", ["asynclog", "native", "instrumentor"])
def test_nothing_is_said_when_every_internal_is_there(log_path: Path, backend: str) -> None:
    app = make_app()
    asynclog.install(app, sink=str(log_path), spans="log", tracing_backend=backend, **QUIET)
    with TestClient(app) as client:
        client.get("/items/1")
    lines = read_lines(log_path)
    assert said(lines) == []
    [access] = by_logger(lines, "asynclog.access")
    [span] = by_logger(lines, "asynclog.span")
    assert span["trace_id"] == access["trace_id"]


def test_without_opentelemetrys_context_variable_lines_keep_their_trace_ids(
    implementation: str,
) -> None:
    result = run_python(
        """
        import json, logging
        from contextvars import ContextVar
        from opentelemetry import context, trace
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
        from opentelemetry.sdk.trace import TracerProvider

        class Renamed(ContextVarsRuntimeContext):
            # The default runtime context of a release that renamed its variable.
            def __init__(self):
                self._var = ContextVar("current_context", default=context.Context())
            def attach(self, ctx):
                return self._var.set(ctx)
            def get_current(self):
                return self._var.get()
            def detach(self, token):
                self._var.reset(token)

        context._RUNTIME_CONTEXT = Renamed()
        import os
        import asynclog
        from asynclog import _accel, _compat
        assert (_accel.speedups is None) == ("ASYNCLOG_NO_EXTENSIONS" in os.environ)
        assert _compat.OTEL_CONTEXT_VAR is None
        asynclog.configure(format="json")
        trace.set_tracer_provider(TracerProvider())
        with trace.get_tracer("t").start_as_current_span("s") as span:
            expected = format(span.get_span_context().trace_id, "032x")
            asynclog.get_logger("app").info("native", expected=expected)
            logging.getLogger("lib").warning("stdlib", extra={"expected": expected})
        asynclog.shutdown()
        """,
        env={"ASYNCLOG_NO_EXTENSIONS": "1"} if implementation == "python" else {},
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(text) for text in result.stdout.splitlines()]
    assert said(lines) == ["opentelemetry: context._RUNTIME_CONTEXT._current_context"]
    logged = [line for line in lines if line["logger"] in ("app", "lib")]
    assert len(logged) == 2
    assert all(line["trace_id"] == line["expected"] for line in logged)


def test_otel_traces_sampler_is_read_without_the_sdks_private_reader(tmp_path: Path) -> None:
    code = """
        import sys
        from opentelemetry.sdk.trace import sampling
        del sampling._get_from_env_or_default   # a release that renamed it
        from fastapi import FastAPI
        from fastapi.testclient import TestClient
        import asynclog
        app = FastAPI()

        @app.get("/items/{n}")
        async def item(n: int) -> dict:
            return {"n": n}

        asynclog.install(app, sink=sys.argv[1], spans="log", watchdog=False,
                         startup_checks=False, format="json")
        with TestClient(app) as client:
            for n in range(20):
                client.get(f"/items/{n}")
        """
    counts = {}
    for sampler, arg in (("traceidratio", "0"), ("parentbased_traceidratio", "1"), ("bogus", "")):
        sink = tmp_path / f"{sampler}.log"
        result = run_python(
            code.replace("sys.argv[1]", repr(str(sink))),
            env={"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": arg},
        )
        assert result.returncode == 0, result.stderr
        lines = read_lines(sink)
        assert said(lines) == []  # a public replacement, not a fallback
        access = by_logger(lines, "asynclog.access")
        assert len(access) == 20 and all(len(line["trace_id"]) == 32 for line in access)
        counts[sampler] = len(by_logger(lines, "asynclog.span"))
    # Ratio 0 records nothing; ratio 1 everything; an unknown name is the SDK's default (on).
    assert counts == {"traceidratio": 0, "parentbased_traceidratio": 20, "bogus": 20}


def test_without_fastapis_telemetry_settings_the_native_backend_falls_back(
    log_path: Path,
) -> None:
    app = make_app()
    settings = app.__dict__.pop("_telemetry")  # a FastAPI that keeps them elsewhere
    asynclog.install(app, sink=str(log_path), tracing_backend="native", **QUIET)
    asynclog.install(app, sink=str(log_path), tracing_backend="native", **QUIET)
    app._telemetry = settings  # type: ignore[attr-defined]  # FastAPI's own code still reads it
    with TestClient(app) as client:
        client.get("/items/1")
    lines = read_lines(log_path)
    assert said(lines) == ["fastapi: FastAPI._telemetry"]
    [access] = by_logger(lines, "asynclog.access")
    [route] = by_logger(lines, "app")
    assert len(access["trace_id"]) == 32 and route["trace_id"] == access["trace_id"]
    assert by_logger(lines, "life")[0]["message"] == "stopped cleanly"


def test_without_opentelemetrys_proxy_provider_classes_fastapi_keeps_looking(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import opentelemetry.metrics._internal as metrics_internal

    monkeypatch.delattr(metrics_internal, "_ProxyMeterProvider")
    app = make_app()
    asynclog.install(app, sink=str(log_path), **QUIET)
    with TestClient(app) as client:
        assert app._telemetry["metrics"]  # not switched off: nobody can tell it is unused
        client.get("/items/1")
    lines = read_lines(log_path)
    assert said(lines) == ["opentelemetry: opentelemetry.metrics._internal._ProxyMeterProvider"]
    assert len(by_logger(lines, "asynclog.access")) == 1
    assert by_logger(lines, "life")[0]["message"] == "stopped cleanly"


class _StackBuiltItsOwnWay(FastAPI):
    """A FastAPI as a Starlette release might make it: no lazily built `middleware_stack` to
    hook. `add_middleware()` (public) still works."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        del self.middleware_stack
        self._stack: Any = None

    def add_middleware(self, middleware_class: Any, *args: Any, **kwargs: Any) -> None:
        from starlette.middleware import Middleware

        self.user_middleware.insert(0, Middleware(middleware_class, *args, **kwargs))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._stack is None:
            self._stack = FastAPI.build_middleware_stack(self)
        scope["app"] = self
        await self._stack(scope, receive, send)


def test_without_starlettes_stack_hook_the_middleware_sits_inside_server_errors(
    log_path: Path,
) -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        asynclog.get_logger("life").info("stopped cleanly")

    app = _StackBuiltItsOwnWay(lifespan=lifespan)

    @app.get("/fail")
    async def fail() -> None:
        asynclog.get_logger("app").info("about to fail")
        raise RuntimeError("boom")

    asynclog.install(app, sink=str(log_path), **QUIET)
    with TestClient(app) as client:
        with pytest.raises(RuntimeError, match="boom"):
            client.get("/fail")  # still raised into the test
        response = TestClient(app, raise_server_exceptions=False).get("/fail")
    assert response.status_code == 500
    assert "x-request-id" not in response.headers  # the documented plainer behaviour
    lines = read_lines(log_path)
    assert said(lines) == ["starlette: Starlette.build_middleware_stack / middleware_stack"]
    errors = by_logger(lines, "asynclog.error")
    access = by_logger(lines, "asynclog.access")
    assert [line["exception"]["type"] for line in errors] == ["RuntimeError"] * 2
    assert [line["http.response.status_code"] for line in access] == [500, 500]
    for error, line in zip(errors, access, strict=True):
        assert (error["trace_id"], error["request_id"]) == (line["trace_id"], line["request_id"])
    assert by_logger(lines, "life")[0]["message"] == "stopped cleanly"


@pytest.mark.parametrize("spans", ["log", "none"])
def test_when_fastapi_instrumentor_skips_the_app_asynclog_makes_the_span(
    log_path: Path, monkeypatch: pytest.MonkeyPatch, spans: str
) -> None:
    import opentelemetry.instrumentation.fastapi as instrumentation

    class NotStarlettes:
        pass

    # The instrumentor then finds no ServerErrorMiddleware on top, logs an error and skips.
    monkeypatch.setattr(instrumentation, "ServerErrorMiddleware", NotStarlettes)
    app = make_app()
    asynclog.install(app, sink=str(log_path), spans=spans, tracing_backend="instrumentor", **QUIET)
    with TestClient(app) as client:
        client.get("/items/1")
        client.get("/items/2")
    lines = read_lines(log_path)
    assert said(lines) == [
        "opentelemetry-instrumentation-fastapi: FastAPIInstrumentor's middleware stack"
    ]
    access = by_logger(lines, "asynclog.access")
    route = by_logger(lines, "app")
    assert [r["trace_id"] for r in route] == [a["trace_id"] for a in access]
    assert len({a["trace_id"] for a in access}) == 2
    span_lines = by_logger(lines, "asynclog.span")
    assert [s["trace_id"] for s in span_lines] == (
        [a["trace_id"] for a in access] if spans == "log" else []
    )
    assert by_logger(lines, "life")[0]["message"] == "stopped cleanly"


def test_the_instrumentor_backend_instruments_an_app_once(log_path: Path) -> None:
    app = make_app()
    for _ in range(2):
        asynclog.install(
            app, sink=str(log_path), spans="log", tracing_backend="instrumentor", **QUIET
        )
    with TestClient(app) as client:
        client.get("/items/1")
    lines = read_lines(log_path)
    [span] = by_logger(lines, "asynclog.span")
    [access] = by_logger(lines, "asynclog.access")
    assert span["trace_id"] == access["trace_id"]
    assert said(lines) == []


def test_reload_is_found_through_a_real_uvicorn_lifespan(log_path: Path) -> None:
    import uvicorn
    from uvicorn.lifespan.on import LifespanOn

    app = make_app()
    asynclog.install(
        app,
        sink=str(log_path),
        format="json",
        watchdog=False,
        warn_memory_limit=False,
        warn_debug_json=False,
    )
    config = uvicorn.Config(app, reload=True, lifespan="on", log_config=None)
    config.load()

    async def serve_lifespan() -> None:
        lifespan = LifespanOn(config)
        await lifespan.startup()
        await lifespan.shutdown()

    asyncio.run(serve_lifespan())
    lines = read_lines(log_path)
    assert [line["check"] for line in by_logger(lines, "asynclog.checks")] == ["reload"]
    assert said(lines) == []
    assert by_logger(lines, "life")[0]["message"] == "stopped cleanly"


def test_reload_check_says_once_when_uvicorns_config_is_not_found(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    # A lifespan class in a uvicorn module, as a release might keep it: its Config renamed.
    namespace: dict[str, Any] = {"__name__": "uvicorn.lifespan.on", "sys": sys}
    namespace["reload_enabled"] = reload_enabled
    source = """
        class LifespanOn:
            def __init__(self, config):
                self.settings = config

            def main(self):
                return reload_enabled(sys._getframe())
        """
    exec(textwrap.dedent(source), namespace)
    lifespan = namespace["LifespanOn"](SimpleNamespace(reload=True))
    assert lifespan.main() is False  # the command line has no --reload: not found
    assert lifespan.main() is False
    asynclog.flush(5)
    assert said(read_lines(log_path)) == [
        "uvicorn: the lifespan's self.config (its Config, found by walking frames)"
    ]


def test_hypercorns_loggers_are_made_and_taken_over_at_a_real_lifespan_startup(
    log_path: Path,
) -> None:
    from hypercorn.asyncio.lifespan import Lifespan
    from hypercorn.config import Config
    from hypercorn.utils import wrap_app

    app = make_app()
    asynclog.install(app, sink=str(log_path), **QUIET)
    config = Config()  # errorlog "-": its logger gets a stderr handler when first used

    async def serve_lifespan() -> list[logging.Handler]:
        loop = asyncio.get_running_loop()
        lifespan = Lifespan(wrap_app(app, config.wsgi_max_body_size, None), config, loop, {})
        task = loop.create_task(lifespan.handle_lifespan())
        await lifespan.wait_for_startup()
        await config.log.info("Running on http://127.0.0.1:1")  # as hypercorn does next
        handlers = list(logging.getLogger("hypercorn.error").handlers)
        await lifespan.wait_for_shutdown()
        await task
        return handlers

    assert asyncio.run(serve_lifespan()) == []  # made at startup, then captured: no stderr copy
    lines = read_lines(log_path)
    assert [line["message"] for line in by_logger(lines, "hypercorn.error")] == [
        "Running on http://127.0.0.1:1"
    ]
    assert said(lines) == []


def test_hypercorn_logger_check_says_once_when_its_config_is_not_found(log_path: Path) -> None:
    app = make_app()
    asynclog.install(app, sink=str(log_path), **QUIET)
    # A lifespan class in a hypercorn module, as a release might keep it: its Config renamed.
    namespace: dict[str, Any] = {"__name__": "hypercorn.asyncio.lifespan", "app": app}
    source = """
        class Lifespan:
            def __init__(self, config):
                self.settings = config

            async def handle_lifespan(self):
                async def receive():
                    return {"type": "lifespan.startup"} if not sent else await never()

                async def never():
                    import asyncio
                    await asyncio.Event().wait()

                sent = []

                async def send(message):
                    sent.append(message)
                    raise StopAsyncIteration

                try:
                    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
                except StopAsyncIteration:
                    pass
                return sent
        """
    exec(textwrap.dedent(source), namespace)
    sent = asyncio.run(namespace["Lifespan"](SimpleNamespace()).handle_lifespan())
    assert sent[0]["type"] == "lifespan.startup.complete"
    asynclog.flush(5)
    assert said(read_lines(log_path)) == [
        "hypercorn: the lifespan's self.config (its Config, found by walking frames)"
    ]
