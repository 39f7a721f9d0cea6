"""A real gunicorn with sidecar/gunicorn.conf.py: two workers appending to one shared file."""

from __future__ import annotations

import http.client
import re
import time
import urllib.error
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _fluentbit import gunicorn_serving, http_get, wait_for

from conftest import ROOT, read_lines

pytestmark = pytest.mark.integration

REQUESTS = 300
FAILURES = 20
ACCESS_FIELDS = {
    "http.request.method",
    "url.path",
    "http.route",
    "http.response.status_code",
    "duration_ms",
    "client.address",
    "user_agent.original",
    "request_id",
}


def _get(url: str, request_id: str) -> int:
    # urllib opens a new connection per request, so both workers accept some of them.
    return http_get(url, {"x-request-id": request_id})


def test_two_workers_share_one_file_and_drain_on_sigterm(log_path: Path) -> None:
    ok_ids = [f"ok-{n:04d}" for n in range(REQUESTS)]
    fail_ids = [f"fail-{n:04d}" for n in range(FAILURES)]
    with gunicorn_serving(ROOT, log_path, workers=2) as server:
        url = server.url
        assert _get(f"{url}/health", "health") == 200
        with ThreadPoolExecutor(8) as pool:
            ok = pool.map(lambda rid: _get(f"{url}/items/{rid[-2:]}", rid), ok_ids)
            failed = pool.map(lambda rid: _get(f"{url}/fail", rid), fail_ids)
            assert set(ok) == {200}
            assert set(failed) == {500}
        assert server.stop() == 0
    output = server.output.read_text(errors="replace")

    lines = read_lines(log_path)  # every line whole, valid JSON, newline-terminated
    for line in lines:
        assert list(line)[:4] == ["time", "level", "logger", "message"], line

    # Every request's access line, exactly once, written before the workers exited.
    access = [line for line in lines if line["logger"] == "asynclog.access"]
    # /health may or may not be logged (install's exclude_paths); the others must be.
    logged = Counter(line["request_id"] for line in access if line["request_id"] != "health")
    assert logged == Counter(ok_ids + fail_ids)
    for line in access:
        assert line.keys() >= ACCESS_FIELDS, line
    # The app's own lines too: two per /items request, correlated by request id.
    app_lines = [line for line in lines if line["logger"] == "example"]
    assert Counter(line["request_id"] for line in app_lines if "item_id" in line) == Counter(
        {rid: 2 for rid in ok_ids}
    )
    exceptions = [line["exception"] for line in lines if "exception" in line]
    assert len(exceptions) >= FAILURES
    for exception in exceptions:
        assert exception["type"].endswith("RuntimeError")
        assert "boom" in exception["message"]
        assert "raise RuntimeError" in exception["stacktrace"]

    # Both workers wrote to the file, and the master's gunicorn lines are JSON in it as well.
    messages = [line["message"] for line in lines]
    booted = {m.rsplit(" ", 1)[1] for m in messages if m.startswith("Booting worker with pid")}
    started = {
        match.group(1)
        for m in messages
        if (match := re.fullmatch(r"Started server process \[(\d+)\]", m))
    }
    assert len(booted) == 2
    assert started == booted
    gunicorn_lines = {line["message"] for line in lines if line["logger"] == "gunicorn.error"}
    for expected in (
        "Starting gunicorn",
        "Listening at: http://127.0.0.1:",
        "Using worker: uvicorn_worker.UvicornWorker",
        "Handling signal: term",
        "Shutting down: Master",
    ):
        assert any(m.startswith(expected) for m in gunicorn_lines), expected
    # Nothing went to gunicorn's plain-text format on stdout or stderr.
    assert "Booting worker" not in output
    assert not re.search(r"^\[\d{4}-\d\d-\d\d ", output, re.MULTILINE), output


def test_master_rotates_a_full_file_without_losing_lines(log_path: Path) -> None:
    rotated = log_path.with_name(log_path.name + ".1")
    ids = [f"r-{n:04d}" for n in range(400)]
    # No sidecar reads app.log.1 here, so within this budget it is never replaced.
    rotate_early = {"LOG_ROTATE_BYTES": "50000", "LOG_DISK_BUDGET_BYTES": "100000000"}
    with gunicorn_serving(ROOT, log_path, workers=2, env=rotate_early) as server:
        with ThreadPoolExecutor(4) as pool:
            codes = pool.map(lambda rid: _get(f"{server.url}/items/1", rid), ids)
            assert set(codes) == {200}
        wait_for(rotated.exists, 30, "the master to rotate app.log")
        assert server.stop() == 0
    lines = read_lines(rotated) + read_lines(log_path)
    access = [line for line in lines if line["logger"] == "asynclog.access"]
    assert Counter(line["request_id"] for line in access) == Counter(ids)
    assert any(line["message"].startswith("rotated ") for line in lines)
    # Replaced only once Fluent Bit has read it, so exactly one rotation without a sidecar.
    assert not log_path.with_name(log_path.name + ".2").exists()


def test_recycled_workers_drain_their_lines(log_path: Path) -> None:
    # max_requests recycles workers after ~1000 requests in production; 10 here, same path.
    recycle_early = {"GUNICORN_CMD_ARGS": "--max-requests 10 --max-requests-jitter 0"}
    served: list[str] = []
    # uvicorn may reset a connection it accepted just as its worker stops: such a request may
    # or may not have been handled, so its access line may or may not exist.
    reset: list[str] = []

    def exits() -> int:
        return log_path.read_text(errors="replace").count('"message":"Worker exiting')

    def booted() -> int:
        return log_path.read_text(errors="replace").count('"message":"Booting worker')

    with gunicorn_serving(ROOT, log_path, workers=2, env=recycle_early) as server:
        deadline = time.monotonic() + 60
        while exits() < 2:
            assert time.monotonic() < deadline, "workers were not recycled"
            request_id = f"c-{len(served) + len(reset):04d}"
            try:
                assert _get(f"{server.url}/items/2", request_id) == 200
                served.append(request_id)
            except (ConnectionResetError, http.client.RemoteDisconnected, urllib.error.URLError):
                reset.append(request_id)
            # uvicorn checks the request limit once per 0.1 s tick.
            time.sleep(0.02)
        # The master boots each replacement after its worker exited: a stop before that would
        # leave nothing to check (the boot lines are what show the recycling completed).
        wait_for(lambda: booted() >= 4, 60, "the replacement workers to boot")
        assert server.stop() == 0
    lines = read_lines(log_path)
    logged = Counter(line["request_id"] for line in lines if line["logger"] == "asynclog.access")
    assert {rid: logged[rid] for rid in served} == dict.fromkeys(served, 1)
    assert set(logged) <= set(served) | set(reset)
    assert all(logged[rid] <= 1 for rid in reset)
    messages = [line["message"] for line in lines]
    # A recycled worker exits normally: its last lines, up to gunicorn's, are in the file.
    assert sum(m.startswith("Maximum request limit of 10 exceeded") for m in messages) >= 2
    assert sum(m.startswith("Worker exiting") for m in messages) >= 2
    assert sum(m.startswith("Booting worker") for m in messages) >= 4
