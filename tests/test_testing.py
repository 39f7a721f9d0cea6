"""asynclog.testing.capture_logs(): the lines a block writes, as dicts, with no flush."""

from __future__ import annotations

import datetime
import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import asynclog
from asynclog.testing import capture_logs

from conftest import assert_accounted, read_lines

# Each test runs on the C extension and on the pure-Python code (see conftest).
pytestmark = pytest.mark.usefixtures("implementation")


# The README's recipe, as a user would put it in conftest.py.
@pytest.fixture(name="logs")
def _logs() -> Iterator[list[dict[str, Any]]]:
    with capture_logs() as logs:
        yield logs


def test_a_captured_dict_is_the_json_line_written_for_the_same_call(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("shop").bind(tenant="acme", api_key="k-1")
    provider = TracerProvider()
    with capture_logs() as logs, asynclog.bound(request_id="r-1", token="t-1"):
        log.info(
            "paid %s",
            "now",
            order_id=7,
            amount=9.5,
            password="hunter2",
            nested={"card": {"secret": "s"}, "items": [1, 2]},
            when=datetime.datetime(2026, 1, 2, 3, 4, 5),
            id=uuid.UUID(int=1),
            tags={"a"},
            message="a field named like a key",
            huge=2**70,
        )
        log.warning("needs %d", "a str")  # the template stays, the args are noted
        with provider.get_tracer("t").start_as_current_span("span"):
            log.error("in a span")
        try:
            raise ValueError("bad")
        except ValueError:
            log.exception("failed", step=3)
        logging.getLogger("lib").warning("stdlib %s", "too", extra={"k": {"password": "x"}})
    asynclog.flush(5)
    assert logs == read_lines(log_path)
    first = logs[0]
    assert (first["message"], first["order_id"], first["tenant"]) == ("paid now", 7, "acme")
    assert first["request_id"] == "r-1"
    assert first["password"] == first["token"] == first["api_key"] == "[REDACTED]"
    assert first["nested"] == {"card": {"secret": "[REDACTED]"}, "items": [1, 2]}
    assert first["field.message"] == "a field named like a key"
    assert "asynclog.substituted" in first  # the huge int, written as a string
    assert logs[1]["message.args"] == "('a str',)"
    assert len(logs[2]["trace_id"]) == 32
    assert logs[3]["exception"]["type"] == "ValueError"
    assert (logs[4]["logger"], logs[4]["k"]) == ("lib", {"password": "[REDACTED]"})


def test_captured_when_the_call_returns_with_no_flush(
    log_path: Path, logs: list[dict[str, Any]]
) -> None:
    asynclog.configure(sink=str(log_path), format="json", flush_interval=60)
    log = asynclog.get_logger("sync")
    log.info("one", n=1)
    assert [(line["message"], line["n"]) for line in logs] == [("one", 1)]
    log.debug("below the level")  # not written, so not captured
    assert len(logs) == 1


def test_an_implicit_start_captures_native_lines_and_leaves_stdlib_ones_to_logging(
    logs: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    asynclog.get_logger("lib").info("native")
    logging.getLogger("lib").info("stdlib")
    assert [line["message"] for line in logs] == ["native"]
    assert [record.getMessage() for record in caplog.records] == ["stdlib"]


def test_capture_survives_configure_an_apps_lifespan_and_shutdown(log_path: Path) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    log = asynclog.get_logger("app")
    with capture_logs() as logs:
        log.info("before configure")
        asynclog.configure(sink=str(log_path), format="json", queue_size=50)
        log.info("configured")
        app = FastAPI()

        @app.get("/")
        async def root() -> dict[str, bool]:
            log.info("in the route")
            return {"ok": True}

        asynclog.install(app, sink=str(log_path), format="json", watchdog=False, queue_size=50)
        for _ in range(2):  # the lifespan drains the pipeline, the next one starts it again
            with TestClient(app) as client:
                client.get("/")
        asynclog.shutdown()
        log.info("written through after shutdown")
    messages = [line["message"] for line in logs]
    assert messages[:2] == ["before configure", "configured"]
    assert messages.count("in the route") == 2
    assert messages.count("GET / 200") == 2
    assert messages[-1] == "written through after shutdown"
    written = [line["message"] for line in read_lines(log_path)]
    assert written == messages[1:]  # the first went to the implicit start's stdout
    assert_accounted(asynclog.stats(), queue_size=50)


def test_after_the_block_nothing_is_captured_and_the_accounting_is_exact(
    log_path: Path,
) -> None:
    asynclog.configure(sink=str(log_path), format="json", queue_size=100)
    log = asynclog.get_logger("acc")
    with capture_logs() as outer:
        with capture_logs() as inner:
            for n in range(300):  # more than the queue holds: some are dropped, and counted
                log.info("n", n=n)
        log.info("outer only")
    log.info("not captured")
    assert len(inner) == 300 and len(outer) == 301
    assert asynclog.flush(5)
    stats = assert_accounted(asynclog.stats(), queue_size=100)
    # The loop holds the GIL for well under a switch interval: the writer cannot keep up.
    assert stats["dropped"] > 0
    assert stats["emitted"] - stats["notices"] == 302  # a notice says what was dropped
    assert len([line for line in read_lines(log_path) if line["logger"] == "acc"]) == (
        302 - stats["dropped"]
    )


def test_lines_from_other_threads_are_captured(logs: list[dict[str, Any]]) -> None:
    asynclog.configure(sink="stderr", format="json")
    log = asynclog.get_logger("t")

    def work(n: int) -> None:
        for i in range(100):
            log.info("w", thread=n, i=i)
            logging.getLogger("t.std").info("s")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(logs) == 800
    assert sorted((line["thread"], line["i"]) for line in logs if "i" in line) == [
        (n, i) for n in range(4) for i in range(100)
    ]


def test_a_console_pipeline_is_captured_as_json_keys(
    log_path: Path, logs: list[dict[str, Any]]
) -> None:
    asynclog.configure(sink=str(log_path), format="console", redact_keys={"pin"})
    asynclog.get_logger("c").info("shown", pin=1234, password="not a key here")
    [line] = logs
    assert (line["level"], line["pin"], line["password"]) == (
        "info",
        "[REDACTED]",
        "not a key here",
    )
    asynclog.flush(5)
    assert b"INFO" in log_path.read_bytes()


def test_the_readmes_recipe_on_the_example_service(logs: list[dict[str, Any]]) -> None:
    from fastapi.testclient import TestClient

    from example.app import app

    with TestClient(app) as client:
        client.post("/orders", json={"item_id": 1, "quantity": 2})
    [placed] = [line for line in logs if line["message"] == "order placed"]
    assert placed["total"] == 21.98
    assert placed["request_id"]  # bound by install() for the whole request
