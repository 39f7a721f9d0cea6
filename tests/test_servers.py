"""The example app under every ASGI server FastAPI users deploy, each run as its docs say (the
commands of the README's "Servers" table) and stopped by SIGTERM to the server's pid: the same
guarantees under each, and the startup checks knowing each."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _server import free_port, get, http_get, serving, stop, wait_for

from asynclog._checks import memory_limit

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PY = sys.executable
WORKERS = 2
REQUESTS = 50
STARTED = b'"message":"Application startup complete."'


@dataclass(frozen=True)
class Server:
    name: str
    argv: Callable[[int], list[str]]  # the command serving example.app:app on a port
    reload: Callable[[int], list[str]]  # the same with the server's auto-reload
    started: bytes  # a line each worker writes once it serves
    own: tuple[str, ...]  # the loggers of the server's own lines
    # What the server prints that asynclog cannot take over (see the README's table).
    foreign: Callable[[list[str], list[str]], bool] = lambda out, err: not out and not err


def _uvicorn_parent_only(out: list[str], err: list[str]) -> bool:
    """`fastapi run`: the CLI's banner, printed before any worker imports the app, and the
    uvicorn parent's lines in uvicorn's default text format (fastapi run takes no log config)."""
    parent = ("Uvicorn running on", "parent process", "child process", "Received SIGTERM")
    return bool(err) and all(
        line.startswith("INFO:") and any(p in line for p in parent) for line in err
    )


def _host_port(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port)]


SERVERS = [
    Server(
        "uvicorn",
        lambda port: [PY, "-m", "uvicorn", "example.app:app", "--workers", str(WORKERS),
                      "--log-config", "sidecar/server-logging.json", *_host_port(port)],
        lambda port: [PY, "-m", "uvicorn", "example.app:app", "--reload", *_host_port(port)],
        STARTED,
        ("uvicorn.error",),
    ),
    Server(
        "fastapi-run",
        lambda port: [PY, "-m", "fastapi", "run", "--entrypoint", "example.app:app",
                      "--workers", str(WORKERS), *_host_port(port)],
        lambda port: [PY, "-m", "fastapi", "run", "--entrypoint", "example.app:app",
                      "--reload", *_host_port(port)],
        STARTED,
        ("uvicorn.error",),
        _uvicorn_parent_only,
    ),
    Server(
        "gunicorn",
        lambda port: [PY, "-m", "gunicorn", "-c", "sidecar/gunicorn.conf.py", "-w", str(WORKERS),
                      "--bind", f"127.0.0.1:{port}", "example.app:app"],
        lambda port: [PY, "-m", "gunicorn", "-c", "sidecar/gunicorn.conf.py", "-w", "1",
                      "--reload", "--bind", f"127.0.0.1:{port}", "example.app:app"],
        STARTED,
        ("gunicorn.error", "uvicorn.error"),
    ),
    Server(
        "hypercorn",
        lambda port: [PY, "-m", "hypercorn", "--workers", str(WORKERS),
                      "--bind", f"127.0.0.1:{port}", "example.app:app"],
        lambda port: [PY, "-m", "hypercorn", "--reload",
                      "--bind", f"127.0.0.1:{port}", "example.app:app"],
        b'"logger":"hypercorn.error","message":"Running on http://',
        ("hypercorn.error",),
    ),
    Server(
        "granian",
        lambda port: [PY, "-m", "granian", "--interface", "asgi", "--workers", str(WORKERS),
                      "--log-config", "sidecar/server-logging.json", *_host_port(port),
                      "example.app:app"],
        lambda port: [PY, "-m", "granian", "--interface", "asgi", "--reload",
                      "--log-config", "sidecar/server-logging.json", *_host_port(port),
                      "example.app:app"],
        b'"message":"Started worker-',
        ("_granian",),
    ),
]  # fmt: skip


def _split(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """A stream's JSON lines, and every other line."""
    lines: list[dict[str, Any]] = []
    other: list[str] = []
    for text in path.read_text(errors="replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            line = None
        if isinstance(line, dict):
            lines.append(line)
        else:
            other.append(text)
    return lines, other


async def _fire(port: int, paths: list[str]) -> list[int]:
    gate = asyncio.Semaphore(10)

    async def one(path: str) -> int:
        async with gate:
            return (await http_get(port, path, timeout=30))[0]

    return await asyncio.gather(*(one(p) for p in paths))


@pytest.mark.parametrize("server", SERVERS, ids=[s.name for s in SERVERS])
def test_every_server_keeps_every_guarantee(
    server: Server, tmp_path: Path, figures: Callable[..., None]
) -> None:
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    port = free_port()
    markers = [f"m{n:03d}" for n in range(REQUESTS)]
    with serving(server.argv(port), port, env={}, stdout=out, stderr=err) as proc:
        wait_for(
            lambda: out.read_bytes().count(server.started) >= WORKERS, 60, "every worker to serve"
        )
        assert asyncio.run(_fire(port, [f"/marker/{m}" for m in markers])) == [200] * REQUESTS
        assert get(port, "/fail", timeout=30)[0] == 500
        # The last request before the signal: its lines must survive the stop.
        assert get(port, "/marker/last", timeout=30)[0] == 200
        assert stop(proc) == 0
    lines, foreign_out = _split(out)
    _, foreign_err = _split(err)

    # Every request has its access line, the last one included.
    access = Counter(line["url.path"] for line in lines if line["logger"] == "asynclog.access")
    assert access == Counter({f"/marker/{m}": 1 for m in [*markers, "last"]} | {"/fail": 1})
    assert Counter(line.get("marker") for line in lines if line["logger"] == "example") == {
        **{m: 1 for m in [*markers, "last"]},
        None: 1,  # /fail's "about to fail"
    }
    errors = [line for line in lines if "exception" in line]
    figures(
        requests=REQUESTS + 2,
        access_lines=sum(access.values()),
        error_lines=len(errors),
        other_stdout_lines=len(foreign_out),
        stderr_lines=len(foreign_err),
    )
    # One error line for the exception, and no other traceback anywhere.
    [error] = errors
    assert (error["logger"], error["url.path"]) == ("asynclog.error", "/fail")
    assert error["exception"]["type"] == "RuntimeError"
    everything = out.read_text(errors="replace") + err.read_text(errors="replace")
    assert everything.count("Traceback (most recent call last)") == 1
    # The server's own lines arrive as JSON through asynclog.
    assert any(line["logger"] in server.own for line in lines)
    # Nothing else on its stdout/stderr (or exactly what the README's table says).
    assert server.foreign(foreign_out, foreign_err), (foreign_out, foreign_err)
    if server.name == "fastapi-run":
        # The CLI's banner comes before any worker imports the app; at exit, one blank line.
        texts = out.read_text().splitlines()
        first_json = next(n for n, text in enumerate(texts) if text.startswith("{"))
        assert [t for t in texts[first_json:] if not t.startswith("{")] == [""]
        assert "Starting FastAPI in production mode" in "".join(texts[:first_json])
    # The startup checks run in each worker.
    unlimited = [line for line in lines if line.get("check") == "memory_limit"]
    assert len(unlimited) == (WORKERS if memory_limit() is None else 0)
    assert not [line for line in lines if line.get("check") == "reload"]


@pytest.mark.parametrize("server", SERVERS, ids=[s.name for s in SERVERS])
def test_auto_reload_is_warned_about_under_every_server(server: Server, tmp_path: Path) -> None:
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    port = free_port()
    with serving(server.reload(port), port, env={}, stdout=out, stderr=err):
        wait_for(lambda: b'"check":"reload"' in out.read_bytes(), 60, "the reload warning")
    [warning] = [line for line in _split(out)[0] if line.get("check") == "reload"]
    assert warning["logger"] == "asynclog.checks"
    assert warning["silence"] == "warn_reload=False"
