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


def _only_json(out: list[str], err: list[str]) -> bool:
    return all(text.startswith("{") for text in out) and not err


@dataclass(frozen=True)
class Server:
    name: str
    argv: Callable[[int], list[str]]  # the command serving example.app:app on a port
    reload: Callable[[int], list[str]]  # the same with the server's auto-reload
    started: bytes  # a line each worker writes once it serves
    own: tuple[str, ...]  # the loggers of the server's own lines
    # Whether stdout's lines and stderr's are all asynclog's, or else exactly what the
    # README's table says the server prints that asynclog cannot take over.
    expected_output: Callable[[list[str], list[str]], bool] = _only_json
    workers: int = WORKERS
    # uvicorn in one process re-raises the SIGTERM it handled once it has shut down.
    exit_code: int = 0
    # A line of the main process (which never imports the app), if it is asynclog's to write.
    main_process: str | None = None


def _fastapi_banner_then_json(out: list[str], after: list[str]) -> bool:
    """The CLI's banner, printed before the app is imported, then asynclog's lines and
    `after`, the non-JSON lines that follow them."""
    first_json = next(n for n, text in enumerate(out) if text.startswith("{"))
    banner = "".join(out[:first_json])
    rest = [text for text in out[first_json:] if not text.startswith("{")]
    return "Starting FastAPI in production mode" in banner and rest == after


def _fastapi_workers(out: list[str], err: list[str]) -> bool:
    """`fastapi run --workers`: the banner, one blank line at exit, and uvicorn's parent
    process's lines in uvicorn's default text format on stderr (it takes no log config)."""
    parent = ("Uvicorn running on", "parent process", "child process", "Received SIGTERM")
    return (
        _fastapi_banner_then_json(out, [""])
        and len(err) == 8
        and all(line.startswith("INFO:") and any(p in line for p in parent) for line in err)
    )


def _fastapi_one_process(out: list[str], err: list[str]) -> bool:
    return _fastapi_banner_then_json(out, []) and not err


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
        main_process="Started parent process",
    ),
    Server(
        "fastapi-run",
        lambda port: [PY, "-m", "fastapi", "run", "--entrypoint", "example.app:app",
                      "--workers", str(WORKERS), *_host_port(port)],
        lambda port: [PY, "-m", "fastapi", "run", "--entrypoint", "example.app:app",
                      "--reload", *_host_port(port)],
        STARTED,
        ("uvicorn.error",),
        _fastapi_workers,
    ),
    Server(
        "fastapi-run-one-process",
        lambda port: [PY, "-m", "fastapi", "run", "--entrypoint", "example.app:app",
                      *_host_port(port)],
        lambda port: [PY, "-m", "fastapi", "run", "--entrypoint", "example.app:app",
                      "--reload", *_host_port(port)],
        STARTED,
        ("uvicorn.error",),
        _fastapi_one_process,
        workers=1,
        exit_code=-15,
    ),
    Server(
        "gunicorn",
        lambda port: [PY, "-m", "gunicorn", "-c", "sidecar/gunicorn.conf.py", "-w", str(WORKERS),
                      "--bind", f"127.0.0.1:{port}", "example.app:app"],
        lambda port: [PY, "-m", "gunicorn", "-c", "sidecar/gunicorn.conf.py", "-w", "1",
                      "--reload", "--bind", f"127.0.0.1:{port}", "example.app:app"],
        STARTED,
        ("gunicorn.error", "uvicorn.error"),
        main_process="Starting gunicorn",
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
        main_process="Starting granian",
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
            lambda: out.read_bytes().count(server.started) >= server.workers,
            60,
            "every worker to serve",
        )
        assert asyncio.run(_fire(port, [f"/marker/{m}" for m in markers])) == [200] * REQUESTS
        assert get(port, "/fail", timeout=30)[0] == 500
        # The last request before the signal: its lines must survive the stop.
        assert get(port, "/marker/last", timeout=30)[0] == 200
        assert stop(proc) == server.exit_code
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
    if server.main_process is not None:
        assert [x for x in lines if x["message"].startswith(server.main_process)]
    # Nothing else on its stdout/stderr (or exactly what the README's table says).
    texts = out.read_text(errors="replace").splitlines()
    assert server.expected_output(texts, foreign_err), (foreign_out, foreign_err)
    # The startup checks run in each worker.
    unlimited = [line for line in lines if line.get("check") == "memory_limit"]
    assert len(unlimited) == (server.workers if memory_limit() is None else 0)
    assert not [line for line in lines if line.get("check") == "reload"]


# `fastapi run --reload` runs one process either way: started once.
RELOADING = [s for s in SERVERS if s.name != "fastapi-run-one-process"]


@pytest.mark.parametrize("server", RELOADING, ids=[s.name for s in RELOADING])
def test_auto_reload_is_warned_about_under_every_server(server: Server, tmp_path: Path) -> None:
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    port = free_port()
    with serving(server.reload(port), port, env={}, stdout=out, stderr=err):
        wait_for(lambda: b'"check":"reload"' in out.read_bytes(), 60, "the reload warning")
    [warning] = [line for line in _split(out)[0] if line.get("check") == "reload"]
    assert warning["logger"] == "asynclog.checks"
    assert warning["silence"] == "warn_reload=False"
