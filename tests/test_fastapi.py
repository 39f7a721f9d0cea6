"""install(app) through FastAPI's TestClient: access lines, request ids, errors, tracing."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.testclient import TestClient

import asynclog
from asynclog._middleware import AccessLogMiddleware, RequestLogConfig
from asynclog._redact import Redactor
from asynclog._settings import AppSettings

from conftest import QUIET, read_lines, run_python

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def make_app(log_path: Path, **settings: Any) -> FastAPI:
    app = FastAPI()
    log = asynclog.get_logger("app")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        log.info("item", item_id=item_id)
        return {"id": item_id}

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(status_code=404)

    @app.get("/boom")
    async def boom() -> None:
        log.info("before boom")
        raise RuntimeError("boom")

    @app.get("/sync")
    def sync_route() -> dict[str, bool]:
        logging.getLogger("lib.sync").info("in threadpool")
        return {"sync": True}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for n in range(3):
                log.info("chunk", n=n)
                yield b"x" * 10

        return StreamingResponse(chunks())

    @app.get("/background")
    async def background(tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(lambda: logging.getLogger("lib.bg").info("background task ran"))
        return {"queued": True}

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(0.05)
        return {"slow": True}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    asynclog.install(app, sink=str(log_path), **{**QUIET, **settings})
    return app


@pytest.fixture(name="client", params=["asynclog", "native", "instrumentor"])
def _client(log_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """The same checks for every tracing backend: asynclog's own server span, FastAPI's
    built-in telemetry and the contrib FastAPIInstrumentor."""
    app = make_app(log_path, tracing_backend=request.param)
    with TestClient(app) as client:  # the default: server exceptions are raised into the test
        yield client


def lines_of(log_path: Path, logger: str | None = None) -> list[dict[str, Any]]:
    asynclog.flush(5)
    lines = read_lines(log_path)
    return [line for line in lines if logger is None or line["logger"] == logger]


def test_one_access_line_with_semantic_convention_fields(
    client: TestClient, log_path: Path
) -> None:
    response = client.get("/items/7?a=1", headers={"user-agent": "probe/1.0"})
    assert response.status_code == 200
    [access] = lines_of(log_path, "asynclog.access")
    assert access["level"] == "info"
    assert access["http.request.method"] == "GET"
    assert access["url.path"] == "/items/7"
    assert access["http.route"] == "/items/{item_id}"
    assert access["http.response.status_code"] == 200
    assert access["duration_ms"] > 0
    # The same whole microseconds, in seconds: what the sidecar's histogram observes.
    assert round(access["duration_s"] * 1_000_000) == round(access["duration_ms"] * 1000)
    assert access["client.address"] == "testclient"
    assert access["user_agent.original"] == "probe/1.0"
    assert access["request_id"] == response.headers["x-request-id"]
    assert access["url.query"] == "a=1"
    assert "http.request.method_original" not in access


def test_methods_outside_the_known_set_are_logged_as_other(log_path: Path) -> None:
    app = make_app(log_path, http_known_methods={"GET", "PURGE"})
    with TestClient(app) as client:
        for method in ("GET", "PURGE", "POST", "X-" + "A" * 40):
            client.request(method, "/items/7")
    methods = [
        (line["http.request.method"], line.get("http.request.method_original"))
        for line in lines_of(log_path, "asynclog.access")
    ]
    # Semconv: a method the instrumentation does not know is `_OTHER`, whatever the client
    # sent, so no client can make a new metric series; the original is kept beside it.
    assert methods == [
        ("GET", None),
        ("PURGE", None),
        ("_OTHER", "POST"),
        ("_OTHER", "X-" + "A" * 40),
    ]


def test_the_span_and_the_error_line_name_unknown_methods_as_the_access_line_does(
    log_path: Path,
) -> None:
    app = make_app(log_path, spans="log", http_known_methods={"HEAD"})  # GET is unknown here
    with TestClient(app) as client:
        client.get("/items/7")
        with pytest.raises(RuntimeError, match="boom"):
            client.get("/boom")
    spans = lines_of(log_path, "asynclog.span")
    assert [s["span.name"] for s in spans] == ["HTTP /items/{item_id}", "HTTP /boom"]
    for span in spans:
        assert span["attributes"]["http.request.method"] == "_OTHER"
        assert span["attributes"]["http.request.method_original"] == "GET"
    [error] = lines_of(log_path, "asynclog.error")
    assert (error["http.request.method"], error["http.request.method_original"]) == (
        "_OTHER",
        "GET",
    )


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise ValueError("no text for this one")


def test_an_exception_that_cannot_be_printed_still_propagates_as_itself(log_path: Path) -> None:
    app = make_app(log_path, spans="log")

    @app.get("/unprintable")
    async def unprintable() -> None:
        raise _Unprintable

    with TestClient(app) as client, pytest.raises(_Unprintable):
        client.get("/unprintable")
    [error] = lines_of(log_path, "asynclog.error")
    assert error["exception"]["type"].endswith("_Unprintable")
    [span] = lines_of(log_path, "asynclog.span")
    assert span["status"] == "error"


def test_level_follows_status(client: TestClient, log_path: Path) -> None:
    client.get("/items/1")
    client.get("/missing")
    with pytest.raises(RuntimeError, match="boom"):
        client.get("/boom")
    levels = {
        line["http.response.status_code"]: line["level"]
        for line in lines_of(log_path, "asynclog.access")
    }
    assert levels == {200: "info", 404: "warning", 500: "error"}


def test_level_setting_applies_to_access_lines(log_path: Path) -> None:
    app = make_app(log_path, level="WARNING")
    with TestClient(app) as client:
        for path in ("/items/1", "/missing"):
            client.get(path)
        with pytest.raises(RuntimeError):
            client.get("/boom")
    statuses = [line["http.response.status_code"] for line in lines_of(log_path, "asynclog.access")]
    assert statuses == [404, 500]


def test_secret_query_parameters_are_masked(client: TestClient, log_path: Path) -> None:
    client.get("/items/1?token=abc&page=2&API_KEY=k")
    [access] = lines_of(log_path, "asynclog.access")
    assert "abc" not in access["url.query"]
    assert access["url.query"] == "token=%5BREDACTED%5D&page=2&API_KEY=%5BREDACTED%5D"


def test_request_id_is_reused_when_safe_and_replaced_when_not(
    client: TestClient, log_path: Path
) -> None:
    ok = client.get("/items/1", headers={"x-request-id": "abc-123.x"})
    bad = client.get("/items/2", headers={"x-request-id": 'evil" id; <script>'})
    long = client.get("/items/3", headers={"x-request-id": "a" * 200})
    assert ok.headers["x-request-id"] == "abc-123.x"
    assert bad.headers["x-request-id"] != 'evil" id; <script>'
    assert len(bad.headers["x-request-id"]) == 32
    assert len(long.headers["x-request-id"]) == 32
    route_lines = lines_of(log_path, "app")
    assert [line["request_id"] for line in route_lines] == [
        "abc-123.x",
        bad.headers["x-request-id"],
        long.headers["x-request-id"],
    ]


def test_route_and_library_lines_carry_the_requests_trace_ids(
    client: TestClient, log_path: Path
) -> None:
    client.get("/items/5")
    client.get("/sync")
    lines = lines_of(log_path)
    access = {line["url.path"]: line for line in lines if line["logger"] == "asynclog.access"}
    [route_line] = [line for line in lines if line["logger"] == "app"]
    [sync_line] = [line for line in lines if line["logger"] == "lib.sync"]
    assert len(route_line["trace_id"]) == 32 and len(route_line["span_id"]) == 16
    assert route_line["trace_id"] == access["/items/5"]["trace_id"]
    assert route_line["span_id"] == access["/items/5"]["span_id"]
    assert sync_line["trace_id"] == access["/sync"]["trace_id"]
    assert access["/items/5"]["trace_id"] != access["/sync"]["trace_id"]


def test_background_task_lines_share_the_trace(client: TestClient, log_path: Path) -> None:
    client.get("/background")
    lines = lines_of(log_path)
    [task_line] = [line for line in lines if line["logger"] == "lib.bg"]
    [access] = [line for line in lines if line["logger"] == "asynclog.access"]
    assert task_line["trace_id"] == access["trace_id"]
    assert task_line["request_id"] == access["request_id"]


def test_unhandled_exception_is_raised_logged_once_and_the_client_gets_500(
    client: TestClient, log_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        client.get("/boom")  # as without asynclog: TestClient raises the route's exception
    lines = lines_of(log_path)
    errors = [line for line in lines if "exception" in line]
    assert len(errors) == 1
    [error] = errors
    assert error["logger"] == "asynclog.error"
    assert error["exception"]["type"] == "RuntimeError"
    assert error["exception"]["message"] == "boom"
    assert "in boom" in error["exception"]["stacktrace"]
    assert error["http.route"] == "/boom"
    [access] = [line for line in lines if line["logger"] == "asynclog.access"]
    assert len(error["trace_id"]) == 32
    assert error["trace_id"] == access["trace_id"]
    assert error["request_id"] == access["request_id"]
    assert access["http.response.status_code"] == 500

    quiet = TestClient(client.app, raise_server_exceptions=False)
    response = quiet.get("/boom")
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    assert (
        response.headers["x-request-id"] == lines_of(log_path, "asynclog.access")[-1]["request_id"]
    )


@pytest.mark.parametrize("backend", ["asynclog", "native", "instrumentor"])
def test_apps_own_exception_handlers_log_with_trace_ids(log_path: Path, backend: str) -> None:
    app = FastAPI()
    handler_log = asynclog.get_logger("handler")

    class Teapot(Exception):
        pass

    @app.exception_handler(Teapot)
    async def teapot(request: Request, exc: Teapot) -> JSONResponse:
        handler_log.warning("teapot handled")
        return JSONResponse({"teapot": True}, status_code=418)

    @app.exception_handler(500)
    async def server_error(request: Request, exc: Exception) -> PlainTextResponse:
        handler_log.error("custom 500 page")
        return PlainTextResponse("custom", status_code=500)

    @app.get("/teapot")
    async def raise_teapot() -> None:
        raise Teapot

    @app.get("/crash")
    async def crash() -> None:
        raise ValueError("crash")

    asynclog.install(app, sink=str(log_path), tracing_backend=backend, **QUIET)
    with TestClient(app) as client:
        assert client.get("/teapot").status_code == 418
        with pytest.raises(ValueError, match="crash"):
            client.get("/crash")
        crash = TestClient(app, raise_server_exceptions=False).get("/crash")
    assert (crash.status_code, crash.text) == (500, "custom")
    assert crash.headers["x-request-id"]
    lines = lines_of(log_path)
    access = {line["url.path"]: line for line in lines if line["logger"] == "asynclog.access"}
    handled = {line["message"]: line for line in lines if line["logger"] == "handler"}
    assert handled["teapot handled"]["trace_id"] == access["/teapot"]["trace_id"]
    assert handled["custom 500 page"]["trace_id"] == access["/crash"]["trace_id"]
    assert access["/teapot"]["http.response.status_code"] == 418


def test_streaming_response_gives_exactly_one_line(client: TestClient, log_path: Path) -> None:
    assert client.get("/stream").content == b"x" * 30
    lines = lines_of(log_path)
    assert [line["n"] for line in lines if line["logger"] == "app"] == [0, 1, 2]
    [access] = [line for line in lines if line["logger"] == "asynclog.access"]
    assert access["http.response.status_code"] == 200


def test_client_disconnect_gives_exactly_one_line(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise asyncio.CancelledError  # what the server does when the client goes away

    middleware = AccessLogMiddleware(app, RequestLogConfig(AppSettings(), Redactor(frozenset())))
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/gone",
        "headers": [],
        "client": ("1.2.3.4", 5),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        pass

    async def run() -> None:
        with pytest.raises(asyncio.CancelledError):
            await middleware(scope, receive, send)

    asyncio.run(run())
    [access] = lines_of(log_path, "asynclog.access")
    assert access["url.path"] == "/gone"
    assert access["client.address"] == "1.2.3.4"


def test_excluded_paths_and_sampling(log_path: Path) -> None:
    app = make_app(log_path, exclude_paths={"/health"}, sample_rate=0.0, slow_threshold_ms=30)
    with TestClient(app) as client:
        client.get("/health")
        for n in range(5):
            client.get(f"/items/{n}")  # sampled away
        client.get("/missing")  # errors are always kept
        with pytest.raises(RuntimeError):
            client.get("/boom")
        client.get("/slow")  # slower than the threshold: kept
    paths = [line["url.path"] for line in lines_of(log_path, "asynclog.access")]
    assert paths == ["/missing", "/boom", "/slow"]


def test_install_is_idempotent(log_path: Path) -> None:
    app = make_app(log_path)
    asynclog.install(app, sink=str(log_path), **QUIET)
    with TestClient(app) as client:
        client.get("/items/1")
    assert len(lines_of(log_path, "asynclog.access")) == 1
    assert sum(isinstance(h, asynclog.AsyncLogHandler) for h in logging.getLogger().handlers) == 1


def test_lifespan_shutdown_code_lines_are_saved(log_path: Path) -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        asynclog.get_logger("life").info("starting")
        yield
        await asyncio.sleep(0)
        asynclog.get_logger("life").info("stopped cleanly")

    app = FastAPI(lifespan=lifespan)
    asynclog.install(app, sink=str(log_path), **QUIET)
    with TestClient(app):
        pass
    logging.getLogger("uvicorn.error").info("Finished server process")  # after the lifespan
    messages = [line["message"] for line in read_lines(log_path)]
    assert messages == ["starting", "stopped cleanly", "Finished server process"]
    stats = asynclog.stats()
    assert stats["emitted"] == stats["written"] == 3


def test_startup_objects_are_frozen_while_serving(log_path: Path) -> None:
    app = FastAPI()
    asynclog.install(app, sink=str(log_path), **QUIET)
    with TestClient(app):
        assert gc.get_freeze_count() > 0  # full collections skip what startup made
    assert gc.get_freeze_count() == 0

    app = FastAPI()
    asynclog.install(app, sink=str(log_path), gc_freeze=False, **QUIET)
    with TestClient(app):
        assert gc.get_freeze_count() == 0


def test_fastapi_stops_asking_for_providers_nobody_set(log_path: Path) -> None:
    app = FastAPI()
    asynclog.install(app, sink=str(log_path), **QUIET)
    assert app._telemetry["metrics"] and app._telemetry["logs"]
    with TestClient(app):
        assert not app._native_telemetry.enabled()
        assert not app._telemetry["metrics"] and not app._telemetry["logs"]


def test_fastapi_metrics_stay_on_with_a_meter_provider(log_path: Path) -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    app = FastAPI(telemetry={"meter_provider": MeterProvider()})
    asynclog.install(app, sink=str(log_path), **QUIET)
    with TestClient(app):
        assert app._telemetry["metrics"] and app._native_telemetry.enabled()


def test_uvicorn_access_logger_is_switched_off(log_path: Path) -> None:
    make_app(log_path)
    access = logging.getLogger("uvicorn.access")
    assert not access.hasHandlers()  # uvicorn then skips its own access line entirely
    assert logging.getLogger("uvicorn.error").propagate


@pytest.mark.parametrize("backend", ["asynclog", "native", "instrumentor"])
def test_spans_as_lines_one_per_request_same_trace(log_path: Path, backend: str) -> None:
    with TestClient(make_app(log_path, spans="log", tracing_backend=backend)) as client:
        client.get("/items/9")
        client.get("/items/10")
    lines = lines_of(log_path)
    spans = [line for line in lines if line["logger"] == "asynclog.span"]
    access = [line for line in lines if line["logger"] == "asynclog.access"]
    assert len(spans) == 2
    assert [s["trace_id"] for s in spans] == [a["trace_id"] for a in access]
    assert [s["span_id"] for s in spans] == [a["span_id"] for a in access]
    assert spans[0]["span.kind"] == "server"
    assert spans[0]["attributes"]["http.route"] == "/items/{item_id}"
    assert spans[0]["duration_ms"] > 0


@pytest.mark.parametrize("backend", ["asynclog", "native", "instrumentor"])
def test_no_send_or_receive_spans(log_path: Path, backend: str) -> None:
    with TestClient(make_app(log_path, spans="log", tracing_backend=backend)) as client:
        client.get("/stream")
    spans = [line["message"] for line in lines_of(log_path, "asynclog.span")]
    assert spans == ["GET /stream"]


def test_unsampled_requests_still_get_trace_ids(log_path: Path) -> None:
    with TestClient(make_app(log_path, spans="log", trace_ratio=0.0)) as client:
        client.get("/items/1")
    lines = lines_of(log_path)
    assert not [line for line in lines if line["logger"] == "asynclog.span"]
    [access] = [line for line in lines if line["logger"] == "asynclog.access"]
    assert len(access["trace_id"]) == 32


def test_tracing_off_means_no_ids(log_path: Path) -> None:
    with TestClient(make_app(log_path, tracing=False)) as client:
        client.get("/items/1")
    [access] = lines_of(log_path, "asynclog.access")
    assert "trace_id" not in access


def test_incoming_traceparent_is_continued(client: TestClient, log_path: Path) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    client.get("/items/1", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    [access] = lines_of(log_path, "asynclog.access")
    assert access["trace_id"] == trace_id


def test_sdk_disabled_and_user_provider_are_honoured(tmp_path: Path) -> None:
    code = """
        import os, sys
        from fastapi import FastAPI
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        import asynclog
        if sys.argv[1] == "user":
            mine = TracerProvider()
            trace.set_tracer_provider(mine)
        app = FastAPI()
        asynclog.install(app, sink=sys.argv[2], watchdog=False, startup_checks=False)
        provider = trace.get_tracer_provider()
        print(type(provider).__name__, sys.argv[1] != "user" or provider is mine)
        """
    disabled = run_python(
        code.replace("sys.argv[1]", "'disabled'").replace("sys.argv[2]", repr(str(tmp_path / "a"))),
        env={"OTEL_SDK_DISABLED": "true"},
    )
    assert disabled.stdout.split() == ["ProxyTracerProvider", "True"], disabled.stderr
    user = run_python(
        code.replace("sys.argv[1]", "'user'").replace("sys.argv[2]", repr(str(tmp_path / "b")))
    )
    assert user.stdout.split() == ["TracerProvider", "True"], user.stderr


def test_startup_checks_warn_once_each_and_can_be_silenced(log_path: Path) -> None:
    app = FastAPI()
    asynclog.install(app, sink=str(log_path), level="DEBUG", format="json", watchdog=False)
    with TestClient(app):
        pass
    checks = [line["check"] for line in read_lines(log_path) if line["logger"] == "asynclog.checks"]
    assert "debug_json" in checks
    assert len(checks) == len(set(checks))

    quiet = FastAPI()
    asynclog.install(
        quiet,
        sink=str(log_path),
        level="DEBUG",
        format="json",
        watchdog=False,
        warn_debug_json=False,
        warn_memory_limit=False,
        warn_reload=False,
    )
    log_path.write_bytes(b"")
    with TestClient(quiet):
        pass
    assert [line for line in read_lines(log_path) if line["logger"] == "asynclog.checks"] == []


def test_watchdog_runs_with_the_app(log_path: Path) -> None:
    app = FastAPI()

    @app.get("/block")
    async def block() -> dict[str, bool]:
        time.sleep(0.3)
        return {"blocked": True}

    asynclog.install(app, sink=str(log_path), format="json", startup_checks=False)
    with TestClient(app) as client:
        client.get("/block")
    [warning] = lines_of(log_path, "asynclog.watchdog")
    assert "block" in warning["frame"]
    assert warning["blocked_ms"] >= 250


def test_the_collection_before_the_startup_freeze_is_not_reported_as_a_blocked_loop(
    log_path: Path,
) -> None:
    # install()'s gc.collect() before gc.freeze() visits every object the worker holds: with a
    # big heap it outlasts the threshold. It is asynclog's own work at boot, not the app's stall.
    heap = [[n] for n in range(2_000_000)]
    started = time.perf_counter()
    gc.collect()
    collect_ms = (time.perf_counter() - started) * 1000
    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, bool]:
        return {"ok": True}

    asynclog.install(
        app,
        sink=str(log_path),
        format="json",
        startup_checks=False,
        watchdog_threshold_ms=min(100.0, collect_ms / 2),
    )
    with TestClient(app) as client:
        assert client.get("/").status_code == 200
    del heap
    assert lines_of(log_path, "asynclog.watchdog") == []


def test_middleware_added_after_install_still_runs_inside_the_request(log_path: Path) -> None:
    app = make_app(log_path)
    seen: dict[str, Any] = {}

    class Late:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                asynclog.get_logger("late").info("late middleware")
                seen.update(asynclog.get_contextvars())
            await self.app(scope, receive, send)

    app.add_middleware(Late)
    with TestClient(app) as client:
        response = client.get("/items/1")
    assert seen["request_id"] == response.headers["x-request-id"]
    [late] = lines_of(log_path, "late")
    [access] = lines_of(log_path, "asynclog.access")
    assert late["trace_id"] == access["trace_id"]


def test_ids_only_when_nothing_is_exported(log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # spans="none" with asynclog's own provider: every line still gets ids, but no SDK span is
    # started (its cost is the largest part of tracing).
    from opentelemetry.sdk.trace import Tracer

    started: list[str] = []
    original = Tracer.start_span

    def counting(self: Tracer, name: str, *args: Any, **kwargs: Any) -> Any:
        started.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(Tracer, "start_span", counting)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with TestClient(make_app(log_path)) as client:
        client.get("/items/1", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
        client.get("/items/2")
    assert started == []
    first, second = lines_of(log_path, "asynclog.access")
    assert first["trace_id"] == trace_id
    assert len(second["trace_id"]) == 32 and second["trace_id"] != trace_id
    assert first["span_id"] != "00f067aa0ba902b7"


# What sits outside the app (a test client, an error tracker, an outer ASGI middleware) sees an
# unhandled exception exactly as it would without asynclog. tests/_sentry_app.py is the app.

_THROUGH_TESTCLIENT = """
    import json
    from fastapi.testclient import TestClient
    from tests._sentry_app import app

    seen = {"exceptions": [], "status": None, "headers": {}, "body": ""}

    class Outer:
        # An ASGI middleware around the whole app: what a server (or Sentry's) sees.
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            async def watch(message):
                if message["type"] == "http.response.start":
                    seen["status"] = message["status"]
                    seen["headers"] = {k.decode(): v.decode() for k, v in message["headers"]}
                elif message["type"] == "http.response.body":
                    seen["body"] += message.get("body", b"").decode()
                await send(message)

            try:
                await self.app(scope, receive, watch)
            except Exception as exc:
                seen["exceptions"].append(repr(exc))
                raise

    seen["raised"] = None
    with TestClient(Outer(app)) as client:  # raise_server_exceptions=True: the default
        try:
            client.get("/fail")
        except RuntimeError as exc:
            seen["raised"] = repr(exc)
    print(json.dumps(seen))
"""


def _fail_once(tmp_path: Path, variant: str, custom_500: bool) -> dict[str, Any]:
    events = tmp_path / f"{variant}.events"
    env = {
        "SENTRY_EVENTS": str(events),
        "WITH_ASYNCLOG": "1" if variant == "asynclog" else "0",
        "CUSTOM_500": "1" if custom_500 else "0",
        "ASYNCLOG_SINK": str(tmp_path / f"{variant}.log"),
        "ASYNCLOG_FORMAT": "json",
    }
    result = run_python(_THROUGH_TESTCLIENT, env=env)
    assert result.returncode == 0, result.stderr
    seen: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    lines = events.read_text().splitlines() if events.exists() else []
    seen["events"] = [json.loads(line) for line in lines]
    return seen


@pytest.mark.parametrize("custom_500", [False, True], ids=["plain-500", "custom-500"])
def test_an_unhandled_exception_reaches_sentry_the_test_and_outer_middleware_once(
    tmp_path: Path, custom_500: bool
) -> None:
    plain = _fail_once(tmp_path, "plain", custom_500)
    ours = _fail_once(tmp_path, "asynclog", custom_500)
    body = "custom" if custom_500 else "Internal Server Error"
    for seen in (plain, ours):
        assert seen["raised"] == "RuntimeError('boom')"  # TestClient raised it into the test
        assert seen["exceptions"] == ["RuntimeError('boom')"]  # the outer middleware, once
        assert (seen["status"], seen["body"]) == (500, body)  # the app's own 500 answered
        assert [(e["type"], e["value"]) for e in seen["events"]] == [("RuntimeError", "boom")]
    assert ours["events"][0]["mechanism"] == plain["events"][0]["mechanism"]
    assert "x-request-id" not in plain["headers"]

    lines = read_lines(tmp_path / "asynclog.log")
    [error] = [line for line in lines if "exception" in line]
    [access] = [line for line in lines if line["logger"] == "asynclog.access"]
    assert (error["logger"], error["level"]) == ("asynclog.error", "error")
    assert (error["exception"]["type"], error["exception"]["message"]) == ("RuntimeError", "boom")
    assert (access["http.response.status_code"], access["level"]) == (500, "error")
    assert error["request_id"] == access["request_id"] == ours["headers"]["x-request-id"]
    assert len(error["trace_id"]) == 32
    route_lines = [line for line in lines if line["logger"] == "app.library"]
    expected = ["about to fail", "custom 500 page"] if custom_500 else ["about to fail"]
    assert [line["message"] for line in route_lines] == expected
    for line in (*route_lines, access):
        assert (line["trace_id"], line["request_id"]) == (error["trace_id"], error["request_id"])


def test_debug_mode_keeps_starlettes_traceback_page_and_still_raises(log_path: Path) -> None:
    app = FastAPI(debug=True)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    asynclog.install(app, sink=str(log_path), **QUIET)
    with TestClient(app) as client, pytest.raises(RuntimeError):
        client.get("/boom")
    response = TestClient(app, raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert "RuntimeError: boom" in response.text  # Starlette's debug traceback
    assert response.headers["x-request-id"]
    assert len(lines_of(log_path, "asynclog.error")) == 2


def _uvicorn_startup(app: Any) -> tuple[bool, bool]:
    """Run `app`'s lifespan startup as uvicorn does by default (`lifespan="auto"`): whether
    the startup failed, and whether the server would then exit rather than serve."""
    import uvicorn
    from uvicorn.lifespan.on import LifespanOn

    config = uvicorn.Config(app, lifespan="auto", log_config=None)
    config.load()
    lifespan = LifespanOn(config)

    async def start() -> None:
        await lifespan.startup()

    asyncio.run(start())
    return lifespan.startup_failed, lifespan.should_exit


def test_a_failing_start_stops_the_server_as_a_failing_app_startup_does(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn exits when an app's startup raises; it must when asynclog's own start raises
    too, not take the app for one without a lifespan and serve it unstarted."""
    started: list[str] = []

    @asynccontextmanager
    async def failing(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("the app's startup failed")
        yield

    assert _uvicorn_startup(FastAPI(lifespan=failing)) == (True, True)  # without asynclog

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started.append("app")
        yield

    def check_fails(*args: Any) -> None:
        raise RuntimeError("a startup check failed")

    app = FastAPI(lifespan=lifespan)
    asynclog.install(app, sink=str(log_path), **QUIET)
    monkeypatch.setattr("asynclog._fastapi.run_startup_checks", check_fails)
    assert _uvicorn_startup(app) == (True, True)
    assert started == []


def _forwarded(log_path: Path, peer: str | None, headers: list[tuple[bytes, bytes]], **settings: Any
               ) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """One request from `peer` through the middleware: what the app saw, and its access line."""
    asynclog.configure(sink=str(log_path), format="json")
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(client=scope["client"], scheme=scope["scheme"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    config = RequestLogConfig(AppSettings(**settings), Redactor(frozenset()))
    scope = {"type": "http", "method": "GET", "path": "/p", "scheme": "http",
             "headers": headers, "client": (peer, 40000) if peer else None}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    asyncio.run(AccessLogMiddleware(app, config)(scope, receive, send))
    [access] = lines_of(log_path, "asynclog.access")
    return seen, access


@pytest.mark.parametrize(
    ("peer", "allow", "forwarded_for", "client"),
    [
        # Loopback is trusted by default; an untrusted peer's forged header is ignored.
        ("127.0.0.1", ("127.0.0.1", "::1"), b"203.0.113.9", "203.0.113.9"),
        ("198.51.100.7", ("127.0.0.1", "::1"), b"203.0.113.9", "198.51.100.7"),
        # The rightmost address that is not a trusted proxy: the forged entries to its left lose.
        ("10.1.2.3", ("10.0.0.0/8",), b"6.6.6.6, 203.0.113.9, 10.4.4.4", "203.0.113.9"),
        ("10.1.2.3", ("*",), b"203.0.113.9, 10.4.4.4", "203.0.113.9"),
        ("::1", ("::1",), b"2001:db8::5", "2001:db8::5"),
    ],
)
def test_forwarded_client_only_from_trusted_proxies(
    log_path: Path, peer: str, allow: tuple[str, ...], forwarded_for: bytes, client: str
) -> None:
    headers = [(b"x-forwarded-for", forwarded_for), (b"x-forwarded-proto", b"https")]
    seen, access = _forwarded(log_path, peer, headers, forwarded_allow_ips=allow)
    trusted = client != peer
    assert access["client.address"] == client == seen["client"][0]
    assert access["network.peer.address"] == peer
    assert access["url.scheme"] == seen["scheme"] == ("https" if trusted else "http")


def test_no_forwarded_headers_keep_the_peer(log_path: Path) -> None:
    seen, access = _forwarded(log_path, "127.0.0.1", [])
    assert seen == {"client": ("127.0.0.1", 40000), "scheme": "http"}
    assert access["client.address"] == access["network.peer.address"] == "127.0.0.1"
    assert access["url.scheme"] == "http"


@pytest.mark.parametrize(
    ("peer", "allow", "forwarded_for", "proto"),
    [
        ("127.0.0.1", "127.0.0.1", b"203.0.113.9", b"https"),
        ("198.51.100.7", "127.0.0.1", b"203.0.113.9", b"https"),
        ("10.1.2.3", "10.0.0.0/8", b"6.6.6.6, 203.0.113.9, 10.4.4.4", b"http"),
        ("10.1.2.3", "*", b"203.0.113.9, 10.4.4.4", b"https"),
        ("10.1.2.3", "10.0.0.0/8", b"10.9.9.9, 10.4.4.4", b"ftp"),
        # Ports, bracketed IPv6, another spelling of a trusted address, garbage, nothing.
        ("127.0.0.1", "127.0.0.1", b"203.0.113.9:4711", b"https"),
        ("::1", "::1", b"[2001:db8::5]:443, 0:0:0:0:0:0:0:1", b"https"),
        ("127.0.0.1", "127.0.0.1", b"unknown, \x1b[31m:x", b"https"),
        ("127.0.0.1", "127.0.0.1", b"", b""),
        # Ports int() reads or rejects: a Latin-1 superscript passes str.isdigit() only.
        ("127.0.0.1", "*", b"203.0.113.9:\xb2, 10.4.4.4", b"https"),
        ("::1", "::1", b"[2001:db8::5]:\xb3", b"https"),
        ("127.0.0.1", "127.0.0.1", b"203.0.113.9: 80", b"https"),
        # A peer with no address (a unix socket, nginx's usual upstream): trusted by "*" only.
        (None, "*", b"203.0.113.9", b"https"),
        (None, "127.0.0.1", b"203.0.113.9", b"https"),
    ],
)
def test_forwarded_headers_give_the_app_what_uvicorn_would(
    log_path: Path, peer: str | None, allow: str, forwarded_for: bytes, proto: bytes
) -> None:
    """gunicorn.conf.py hands the forwarded headers to asynclog instead of uvicorn: the app
    must see the same client and scheme as with uvicorn's own middleware, without asynclog."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    headers = [(b"x-forwarded-for", forwarded_for), (b"x-forwarded-proto", proto)]
    without: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        without.update(client=scope["client"], scheme=scope["scheme"])

    scope = {"type": "http", "method": "GET", "path": "/p", "scheme": "http",
             "headers": headers, "client": (peer, 40000) if peer else None}  # fmt: skip
    # uvicorn's middleware neither receives nor sends for an http scope it passes on.
    uvicorn = ProxyHeadersMiddleware(app, trusted_hosts=allow)
    asyncio.run(uvicorn(scope, None, None))
    seen, _ = _forwarded(log_path, peer, headers, forwarded_allow_ips=allow.split(","))
    assert seen == without


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "proto"),
    [
        ("127.0.0.1", b"203.0.113.9", b"https"),
        ("127.0.0.1", b"203.0.113.9:4711", b"http"),
        ("198.51.100.7", b"203.0.113.9", b"https"),
    ],
)
def test_websocket_scopes_get_the_forwarded_client_too(
    peer: str, forwarded_for: bytes, proto: bytes
) -> None:
    """gunicorn.conf.py turns uvicorn's proxy-headers middleware off for every scope: a
    websocket behind the proxy must still see the client and scheme uvicorn would give it."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    headers = [(b"x-forwarded-for", forwarded_for), (b"x-forwarded-proto", proto)]

    def websocket() -> dict[str, Any]:
        return {"type": "websocket", "path": "/ws", "scheme": "ws", "client": (peer, 40000),
                "headers": headers}  # fmt: skip

    seen: list[tuple[Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["client"], scope["scheme"]))

    asyncio.run(ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1")(websocket(), None, None))
    settings = AppSettings(forwarded_allow_ips=("127.0.0.1",))
    config = RequestLogConfig(settings, Redactor(frozenset()))
    asyncio.run(AccessLogMiddleware(app, config)(websocket(), None, None))  # type: ignore[arg-type]
    assert seen[1] == seen[0]


def test_trusted_proxy_verdicts_are_kept_bounded_and_stay_right() -> None:
    from asynclog._proxies import _PARSED_HOSTS_KEPT, TrustedProxies

    trusted = TrustedProxies(("10.0.0.0/8", "::1"))
    for _ in range(2):  # the second round answers from the kept verdicts
        assert "10.1.2.3" in trusted
        assert "0:0:0:0:0:0:0:1" in trusted  # another spelling of ::1
        assert "11.0.0.1" not in trusted
        assert "not-an-address" not in trusted
    # Forged hosts, more than are kept: the memory stays bounded, the verdicts right.
    for n in range(3 * _PARSED_HOSTS_KEPT):
        assert f"11.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" not in trusted
        assert len(trusted._parsed) <= _PARSED_HOSTS_KEPT
    assert "10.9.9.9" in trusted
