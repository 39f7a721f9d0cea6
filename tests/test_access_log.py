"""The access line install(app) writes: one per request, semantic-convention fields, its level,
masking, sampling, and the one line for a streamed or abandoned response."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from _fastapi_app import (
    client_fixture,  # noqa: F401 (the `client` fixture, used by name)
    lines_of,
    make_app,
)
from fastapi.testclient import TestClient

import asynclog
from asynclog._middleware import AccessLogMiddleware, RequestLogConfig
from asynclog._redact import Redactor
from asynclog._settings import AppSettings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


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
