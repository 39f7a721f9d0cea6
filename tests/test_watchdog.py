"""The event-loop watchdog: one warning per stall, naming the blocking frame and the route."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import asynclog
from asynclog._watchdog import LoopWatchdog

from conftest import read_lines


def blocking_work(seconds: float) -> None:
    """What the anti-pattern looks like: a synchronous sleep inside async code."""
    time.sleep(seconds)


def waiting_in_the_stdlib(seconds: float) -> None:
    threading.Event().wait(seconds)


def run_watched(body: Callable[[], Awaitable[Any]], **options: Any) -> LoopWatchdog:
    """Run `body` on a fresh loop under a watchdog (stopped once it has reported)."""

    async def main() -> LoopWatchdog:
        watchdog = LoopWatchdog(asyncio.get_running_loop(), **options)
        watchdog.start()
        await asyncio.sleep(0.05)
        await body()
        # A stall is reported once the loop's heartbeat runs again; the watchdog has finished
        # with it by its next look at the heartbeat.
        after = watchdog.checks + 2
        deadline = time.monotonic() + 2
        while watchdog.checks < after and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert watchdog.stop()
        return watchdog

    return asyncio.run(main())


@pytest.fixture(name="warnings")
def _warnings(log_path: Path) -> Callable[[], list[dict[str, Any]]]:
    asynclog.configure(sink=str(log_path), format="json")

    def written() -> list[dict[str, Any]]:
        assert asynclog.flush(5)
        return [line for line in read_lines(log_path) if line["logger"] == "asynclog.watchdog"]

    return written


def test_a_blocking_call_is_reported_once_with_its_frame(
    warnings: Callable[[], list[dict[str, Any]]],
) -> None:
    async def body() -> None:
        blocking_work(0.3)

    watchdog = run_watched(body)

    [line] = warnings()
    assert line["level"] == "warning"
    assert line["message"] == "event loop blocked"
    assert "test_watchdog.py:" in line["frame"] and line["frame"].endswith("in blocking_work")
    assert line["blocked_ms"] >= 250
    assert line["threshold_ms"] == 100
    assert line["stack"][-1] == line["frame"]
    assert (line["route"], line["method"]) == (None, None)  # not serving a request
    assert (watchdog.stalls, watchdog.errors) == (1, 0)


def test_a_loop_that_only_awaits_is_never_reported(
    warnings: Callable[[], list[dict[str, Any]]],
) -> None:
    async def body() -> None:
        for _ in range(20):
            await asyncio.sleep(0.015)

    watchdog = run_watched(body)

    assert warnings() == []
    assert watchdog.checks >= 2
    assert watchdog.stalls == 0


def test_a_healthy_loop_is_looked_at_once_per_threshold_not_per_interval(
    warnings: Callable[[], list[dict[str, Any]]],
) -> None:
    async def main() -> int:
        watchdog = LoopWatchdog(asyncio.get_running_loop(), threshold=0.2, interval=0.01)
        watchdog.start()
        await asyncio.sleep(1.0)
        assert watchdog.stop()
        return watchdog.checks

    # One look per threshold + interval (~5 in a second), not one ping per interval (100).
    assert 1 <= asyncio.run(main()) <= 10
    assert warnings() == []


def test_blocks_shorter_than_the_threshold_are_not_reported(
    warnings: Callable[[], list[dict[str, Any]]],
) -> None:
    async def body() -> None:
        blocking_work(0.15)

    watchdog = run_watched(body, threshold=0.6)

    assert warnings() == []
    assert watchdog.stalls == 0


def test_frames_of_the_standard_library_are_skipped(
    warnings: Callable[[], list[dict[str, Any]]],
) -> None:
    async def body() -> None:
        waiting_in_the_stdlib(0.3)

    run_watched(body)

    [line] = warnings()
    assert line["frame"].endswith("in waiting_in_the_stdlib")
    assert any("threading.py" in frame for frame in line["stack"])


@pytest.mark.parametrize(
    ("scope", "route"),
    [
        ({"type": "http", "path": "/slow", "method": "GET"}, "/slow"),
        (
            {
                "type": "http",
                "path": "/items/7",
                "method": "POST",
                "route": SimpleNamespace(path="/items/{item_id}"),
            },
            "/items/{item_id}",
        ),
    ],
    ids=["path", "route-template"],
)
def test_the_route_comes_from_the_asgi_scope_being_served(
    warnings: Callable[[], list[dict[str, Any]]], scope: dict[str, Any], route: str
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        blocking_work(0.3)

    async def body() -> None:
        await app(scope, None, None)

    run_watched(body)

    [line] = warnings()
    assert (line["route"], line["method"]) == (route, scope["method"])
    assert line["frame"].endswith("in blocking_work")


def test_a_fastapi_route_is_named_by_its_template(
    warnings: Callable[[], list[dict[str, Any]]],
) -> None:
    from fastapi import FastAPI
    from httpx2 import ASGITransport, AsyncClient

    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def slow_order(order_id: int) -> dict[str, int]:
        time.sleep(0.3)
        return {"order_id": order_id}

    async def body() -> None:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/orders/7")).status_code == 200

    run_watched(body)

    [line] = warnings()
    assert (line["route"], line["method"]) == ("/orders/{order_id}", "GET")
    assert "test_watchdog.py:" in line["frame"] and "slow_order" in line["frame"]


def test_a_stall_that_does_not_end_is_reported_once_as_still_blocked(
    warnings: Callable[[], list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("asynclog._watchdog._MAX_WAIT", 0.2)  # 60 s in production

    async def body() -> None:
        blocking_work(0.8)

    run_watched(body)

    [line] = warnings()
    assert line["still_blocked"] is True
    assert 250 <= line["blocked_ms"] < 750
    assert line["frame"].endswith("in blocking_work")


def test_stop_is_prompt_and_keeps_the_stall_it_interrupts(
    warnings: Callable[[], list[dict[str, Any]]],
) -> None:
    async def main() -> float:
        watchdog = LoopWatchdog(asyncio.get_running_loop())
        watchdog.start()
        await asyncio.sleep(0.05)
        blocking_work(0.3)  # the watchdog now waits for the loop to answer its ping
        started = time.monotonic()
        assert watchdog.stop()  # before the loop had a chance to answer
        assert not watchdog.running
        return time.monotonic() - started

    assert asyncio.run(main()) < 0.5
    [line] = warnings()
    assert line["frame"].endswith("in blocking_work") and line["blocked_ms"] >= 250
    assert "still_blocked" not in line


def test_a_failure_reading_the_stack_is_counted_and_the_stall_still_reported(
    warnings: Callable[[], list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> tuple[str, ...]:
        raise RuntimeError("boom")

    monkeypatch.setattr("asynclog._watchdog._plumbing_dirs", broken)

    async def body() -> None:
        blocking_work(0.3)

    watchdog = run_watched(body)

    assert (watchdog.errors, watchdog.stalls) == (1, 1)
    [line] = warnings()
    assert line["frame"] is None and line["blocked_ms"] >= 250


def test_settings_are_validated() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="threshold"):
            LoopWatchdog(loop, threshold=0)
        with pytest.raises(ValueError, match="interval"):
            LoopWatchdog(loop, interval=-1)
    finally:
        loop.close()


def test_start_must_be_called_inside_the_running_loop() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(RuntimeError, match="inside its running loop"):
            LoopWatchdog(loop).start()
    finally:
        loop.close()


def test_start_twice_and_stop_twice_are_harmless() -> None:
    async def main() -> LoopWatchdog:
        watchdog = LoopWatchdog(asyncio.get_running_loop())
        watchdog.start()
        watchdog.start()
        await asyncio.sleep(0.05)
        assert watchdog.running
        assert watchdog.stop() and watchdog.stop()
        return watchdog

    watchdog = asyncio.run(main())
    assert not watchdog.running
    assert "stopped" in repr(watchdog)
