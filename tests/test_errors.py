"""An unhandled exception under install(app): logged once with the request's ids, answered by
the app's own 500, and raised to what sits outside exactly as without asynclog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _fastapi_app import (
    client_fixture,  # noqa: F401 (the `client` fixture, used by name)
    lines_of,
    make_app,
)
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.testclient import TestClient

import asynclog

from conftest import QUIET, read_lines, run_python

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


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
