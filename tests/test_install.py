"""install(app) itself and what it does at the app's lifespan: idempotent, server loggers
captured, lines of the shutdown code kept, startup frozen, checks and watchdog run, a failing
start stops the server."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from _fastapi_app import lines_of, make_app
from fastapi import FastAPI
from fastapi.testclient import TestClient

import asynclog

from conftest import QUIET, assert_accounted, read_lines

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_install_is_idempotent(log_path: Path) -> None:
    app = make_app(log_path)
    asynclog.install(app, sink=str(log_path), **QUIET)
    with TestClient(app) as client:
        client.get("/items/1")
    assert len(lines_of(log_path, "asynclog.access")) == 1
    assert sum(isinstance(h, asynclog.AsyncLogHandler) for h in logging.getLogger().handlers) == 1


def test_uvicorn_access_logger_is_switched_off(log_path: Path) -> None:
    make_app(log_path)
    access = logging.getLogger("uvicorn.access")
    assert not access.hasHandlers()  # uvicorn then skips its own access line entirely
    assert logging.getLogger("uvicorn.error").propagate


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
    assert_accounted(stats, emitted=3, written=3)


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
