"""The example app under a real gunicorn + uvicorn_worker.UvicornWorker (2 workers, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _server import gunicorn, http_get, stop, wait_for_startup

from conftest import read_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SERVER_ENV = {"ASYNCLOG_FORMAT": "json", "ASYNCLOG_LEVEL": "INFO"}


async def _fire(port: int, paths: list[str], concurrency: int) -> list[tuple[int, dict[str, str]]]:
    gate = asyncio.Semaphore(concurrency)

    async def one(path: str) -> tuple[int, dict[str, str]]:
        async with gate:
            status, headers, _ = await http_get(port, path, timeout=30)
            return status, headers

    return await asyncio.gather(*(one(p) for p in paths))


def _lines(path: Path) -> list[dict[str, Any]]:
    return read_lines(path)


def test_every_line_carries_its_own_requests_trace_id(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    env = {**SERVER_ENV, "ASYNCLOG_SINK": str(log)}
    markers = [f"m{n:03d}" for n in range(200)]
    with gunicorn(env=env, log_path=tmp_path / "server.out") as (port, proc):
        wait_for_startup(log)  # both workers must have started before the stop
        results = asyncio.run(_fire(port, [f"/marker/{m}" for m in markers], concurrency=200))
        assert all(status == 200 for status, _ in results)
        assert stop(proc) == 0
    lines = _lines(log)
    access = {
        line["request_id"]: line
        for line in lines
        if line["logger"] == "asynclog.access" and line["url.path"].startswith("/marker/")
    }
    assert len(access) == 200
    marker_lines = [line for line in lines if line.get("marker") in markers]
    assert Counter(line["marker"] for line in marker_lines) == {m: 2 for m in markers}
    for line in marker_lines:
        request = access[line["request_id"]]
        assert request["url.path"] == f"/marker/{line['marker']}"
        assert line["trace_id"] == request["trace_id"]
    assert len({line["trace_id"] for line in access.values()}) == 200
    assert not [line for line in lines if line["logger"] == "uvicorn.access"]
    started = {line["message"] for line in lines if line["message"].startswith("Started server")}
    assert len(started) == 2  # both workers (one pid each) wrote into the one file
    assert not [line for line in lines if "color_message" in line]  # uvicorn's ANSI copy
    # The server's own loggers came through asynclog as JSON too.
    assert any(line["logger"].startswith(("uvicorn", "gunicorn")) for line in lines)


def test_sigterm_after_n_requests_keeps_every_access_line(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    env = {**SERVER_ENV, "ASYNCLOG_SINK": str(log)}
    n = 300
    with gunicorn(env=env, log_path=tmp_path / "server.out") as (port, proc):
        results = asyncio.run(_fire(port, ["/items/7"] * n, concurrency=50))
        assert [status for status, _ in results] == [200] * n
        # Straight after the last response: lines still queued in the workers must survive.
        assert stop(proc) == 0
    lines = _lines(log)
    access = [line for line in lines if line["logger"] == "asynclog.access"]
    assert len([a for a in access if a["url.path"] == "/items/7"]) == n
    assert len({a["request_id"] for a in access}) == len(access)
    route_lines = [line for line in lines if line["logger"] == "example"]
    assert len(route_lines) == 2 * n
    shutdown_words = [line["message"] for line in lines if line["logger"].startswith("uvicorn")]
    assert any("shutdown" in message.lower() for message in shutdown_words)


def test_spans_as_log_lines_one_per_request(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    env = {**SERVER_ENV, "ASYNCLOG_SINK": str(log), "ASYNCLOG_SPANS": "log"}
    with gunicorn(env=env, log_path=tmp_path / "server.out") as (port, proc):
        results = asyncio.run(_fire(port, [f"/items/{n}" for n in range(40)], concurrency=10))
        assert all(status == 200 for status, _ in results)
        stop(proc)
    lines = _lines(log)
    access = [line for line in lines if line["logger"] == "asynclog.access"]
    spans = [line for line in lines if line["logger"] == "asynclog.span"]
    item_access = {a["trace_id"] for a in access if a["url.path"].startswith("/items/")}
    item_spans = [s for s in spans if s["span.name"] == "GET /items/{item_id}"]
    assert len(item_spans) == 40
    assert {s["trace_id"] for s in item_spans} == item_access


def test_watchdog_names_the_blocking_function(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    env = {**SERVER_ENV, "ASYNCLOG_SINK": str(log)}
    with gunicorn(env=env, log_path=tmp_path / "server.out") as (port, proc):
        status, _, body = asyncio.run(http_get(port, "/block", timeout=30))
        assert (status, json.loads(body)) == (200, {"blocked_s": 0.3})
        stop(proc)
    [warning] = [line for line in _lines(log) if line["logger"] == "asynclog.watchdog"]
    assert warning["level"] == "warning"
    assert "in block" in warning["frame"] and "app.py" in warning["frame"]
    assert warning["route"] == "/block"
    assert warning["blocked_ms"] >= 250


def test_unhandled_exception_is_logged_once_under_the_server(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    env = {**SERVER_ENV, "ASYNCLOG_SINK": str(log)}
    with gunicorn(env=env, log_path=tmp_path / "server.out") as (port, proc):
        status, headers, _ = asyncio.run(http_get(port, "/fail"))
        assert status == 500
        stop(proc)
    lines = _lines(log)
    with_exception = [line for line in lines if "exception" in line]
    assert len(with_exception) == 1
    [access] = [
        line
        for line in lines
        if line.get("url.path") == "/fail" and line["logger"] == "asynclog.access"
    ]
    assert with_exception[0]["trace_id"] == access["trace_id"]
    assert access["request_id"] == headers["x-request-id"]


def test_spans_exported_over_otlp_before_the_worker_exits(tmp_path: Path) -> None:
    # A local OTLP/HTTP receiver stands in for the Fluent Bit sidecar on 127.0.0.1:4318.
    import http.server
    import threading

    received: list[bytes] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/traces"
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    log = tmp_path / "app.log"
    env = {
        **SERVER_ENV,
        "ASYNCLOG_SINK": str(log),
        "ASYNCLOG_SPANS": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "60000",  # nothing leaves before the shutdown flush
    }
    try:
        with gunicorn(env=env, log_path=tmp_path / "server.out") as (port, proc):
            results = asyncio.run(_fire(port, [f"/items/{n}" for n in range(5)], concurrency=5))
            assert all(status == 200 for status, _ in results)
            stop(proc)
    finally:
        server.shutdown()
        server.server_close()
    access = [line for line in _lines(log) if line["logger"] == "asynclog.access"]
    payload = b"".join(received)
    for line in access:
        if line["url.path"].startswith("/items/"):
            assert bytes.fromhex(line["trace_id"]) in payload  # protobuf carries raw id bytes


def _fail_under_gunicorn(tmp_path: Path, variant: str) -> dict[str, Any]:
    """One failing request to tests/_sentry_app.py under gunicorn + UvicornWorker (1 worker)."""
    events, log, out = (tmp_path / f"{variant}.{kind}" for kind in ("events", "log", "out"))
    env = {
        **SERVER_ENV,
        "SENTRY_EVENTS": str(events),
        "WITH_ASYNCLOG": "1" if variant == "asynclog" else "0",
        "ASYNCLOG_SINK": str(log),
    }
    args = ("-k", "uvicorn_worker.UvicornWorker", "-w", "1")
    with gunicorn(env=env, args=args, app="tests._sentry_app:app", log_path=out) as (port, proc):
        status, headers, body = asyncio.run(http_get(port, "/fail"))
        assert stop(proc) == 0
    return {
        "status": status,
        "headers": headers,
        "body": body,
        "events": [json.loads(line) for line in events.read_text().splitlines()],
        "server_output": out.read_text(),
        "lines": read_lines(log) if log.exists() else [],
    }


def test_an_unhandled_exception_under_gunicorn_as_without_asynclog(tmp_path: Path) -> None:
    plain = _fail_under_gunicorn(tmp_path, "plain")
    ours = _fail_under_gunicorn(tmp_path, "asynclog")
    for seen in (plain, ours):
        assert (seen["status"], seen["body"]) == (500, b"Internal Server Error")
    # Sentry reports the exception once either way (its ASGI integration). Without asynclog its
    # logging integration also makes an event of uvicorn's "Exception in ASGI application"
    # record (a duplicate its dedupe misses: the two come from different contexts); asynclog
    # suppresses that record, so the duplicate event goes too.
    reported = [(e["type"], e["value"], e["mechanism"], e["logger"]) for e in ours["events"]]
    assert reported == [("RuntimeError", "boom", "starlette", None)]
    plain_reported = [(e["type"], e["value"], e["mechanism"], e["logger"]) for e in plain["events"]]
    assert plain_reported == [*reported, ("RuntimeError", "boom", "logging", "uvicorn.error")]
    # Without asynclog, uvicorn writes its traceback; with it, asynclog's one line replaces it.
    assert plain["server_output"].count("Exception in ASGI application") == 1
    assert "RuntimeError: boom" in plain["server_output"]
    assert "Exception in ASGI application" not in ours["server_output"]
    assert "Traceback" not in ours["server_output"]
    lines = ours["lines"]
    assert not [line for line in lines if "Exception in ASGI application" in line["message"]]
    [error] = [line for line in lines if "exception" in line]
    [access] = [
        line
        for line in lines
        if line["logger"] == "asynclog.access" and line["url.path"] == "/fail"
    ]
    assert (error["logger"], error["exception"]["type"]) == ("asynclog.error", "RuntimeError")
    assert access["http.response.status_code"] == 500
    assert error["request_id"] == access["request_id"] == ours["headers"]["x-request-id"]
    assert error["trace_id"] == access["trace_id"]
    [before] = [line for line in lines if line["message"] == "about to fail"]
    assert (before["trace_id"], before["request_id"]) == (error["trace_id"], error["request_id"])
