"""The request id and trace ids install(app) binds: echoed in the response, carried by every
line of the request (route, library, threadpool, background task, a later middleware)."""

from __future__ import annotations

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

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


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
