"""The FastAPI app the install(app) topic tests share, its `client` fixture (one per tracing
backend), and the lines it wrote."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

import asynclog

from conftest import QUIET, read_lines


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
def client_fixture(log_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """The same checks for every tracing backend: asynclog's own server span, FastAPI's
    built-in telemetry and the contrib FastAPIInstrumentor."""
    app = make_app(log_path, tracing_backend=request.param)
    with TestClient(app) as client:  # the default: server exceptions are raised into the test
        yield client


def lines_of(log_path: Path, logger: str | None = None) -> list[dict[str, Any]]:
    asynclog.flush(5)
    lines = read_lines(log_path)
    return [line for line in lines if logger is None or line["logger"] == logger]
