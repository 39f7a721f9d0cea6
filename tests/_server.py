"""Real servers for tests: gunicorn + uvicorn-worker on 127.0.0.1, and a tiny HTTP client.

Everything is bounded: start-up, each request and the stop all have deadlines, and the server
is stopped by PID (SIGTERM, then SIGKILL) whatever happens in the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 GET on its own connection: (status, lowercase headers, body)."""

    async def go() -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n"
            writer.write(request.encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        parsed = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            parsed[key.strip().lower()] = value.strip()
        return status, parsed, body

    return await asyncio.wait_for(go(), timeout)


def get(port: int, path: str, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    return asyncio.run(http_get(port, path, timeout=timeout))


@contextmanager
def gunicorn(
    *,
    env: dict[str, str],
    args: Sequence[str] = ("-k", "uvicorn_worker.UvicornWorker", "-w", "2"),
    app: str = "example.app:app",
    log_path: Path | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Run gunicorn serving `app` on a free 127.0.0.1 port until the block ends, its stdout and
    stderr together in `log_path`."""
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", *args, "--bind", f"127.0.0.1:{port}", app]
    output = log_path or Path(os.devnull)
    with serving(argv, port, env=env, stdout=output, startup_timeout=startup_timeout) as proc:
        yield port, proc


@contextmanager
def serving(
    argv: Sequence[str],
    port: int,
    *,
    env: dict[str, str],
    stdout: Path,
    stderr: Path | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server command (listening on 127.0.0.1:`port`) from the repository's root, its
    stdout and stderr kept apart (stderr in stdout's file if None), until the block ends;
    stopped by SIGTERM to its pid."""
    with ExitStack() as files:
        out = files.enter_context(stdout.open("ab"))
        err = subprocess.STDOUT if stderr is None else files.enter_context(stderr.open("ab"))
        proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=out,
            stderr=err,
        )
        try:
            wait_until_healthy(port, proc, startup_timeout)
            yield proc
        finally:
            stop(proc)


def wait_until_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until GET /health answers 200 (one worker is up); fails if gunicorn exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} during start-up")
        try:
            if get(port, "/health", timeout=2)[0] == 200:
                return
        except (OSError, asyncio.TimeoutError, IndexError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not answer /health in time")
        time.sleep(0.2)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def wait_for_startup(log: Path, workers: int = 2, timeout: float = 60.0) -> None:
    """Wait until `workers` workers have written "Application startup complete." to the JSON
    log `log`: gunicorn() returns as soon as one worker answers."""
    started = b'"message":"Application startup complete."'
    wait_for(
        lambda: log.read_bytes().count(started) >= workers, timeout, f"{workers} workers to start"
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM (gunicorn's graceful stop), then SIGKILL after `timeout`; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def rss_mb(pid: int) -> float:
    """A process's resident set size (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")
