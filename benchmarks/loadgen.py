"""HTTP load for the end-to-end benchmark: ``wrk`` when installed, else a built-in one.

Both run as a separate process pinned to the load CPU, keep ``connections`` HTTP/1.1
keep-alive connections busy for ``duration`` seconds, and report the same JSON:
``requests``, ``errors``, ``seconds`` and latency percentiles in milliseconds.

The built-in generator (``python -m benchmarks.loadgen URL``) writes raw requests over
asyncio streams; it is slower than wrk, so on a fast server it can be the bottleneck.
The results say which generator was used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks import proxy

# Long enough that a request stuck behind a stalled log pipe is measured, not dropped.
REQUEST_TIMEOUT = 30.0

_WRK_SCRIPT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"seconds":%.6f,"errors":%d,"p50_ms":%.3f,"p90_ms":%.3f,' ..
    '"p99_ms":%.3f,"max_ms":%.3f,"mean_ms":%.3f}\\n',
    summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3, latency.mean / 1e3))
end
"""


@dataclass(frozen=True)
class LoadGen:
    """A way to generate load: ``name`` for the report, ``command`` for one run."""

    name: str
    command: Callable[[str, int, float], list[str]]


def _wrk_command(script: Path) -> Callable[[str, int, float], list[str]]:
    def command(url: str, connections: int, duration: float) -> list[str]:
        return [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            f"--timeout={REQUEST_TIMEOUT:.0f}s",
            "-s",
            str(script),
            url,
        ]

    return command


def _builtin_command(url: str, connections: int, duration: float) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        url,
        f"--connections={connections}",
        f"--duration={duration}",
    ]


def choose(preference: str, workdir: Path) -> LoadGen:
    """``wrk`` if *preference* allows and it is on PATH, else the built-in generator."""
    if preference in ("auto", "wrk") and shutil.which("wrk"):
        script = workdir / "report.lua"
        script.write_text(_WRK_SCRIPT)
        return LoadGen("wrk", _wrk_command(script))
    if preference == "wrk":
        raise SystemExit("--loadgen wrk: wrk is not installed (apt-get install wrk)")
    return LoadGen("builtin", _builtin_command)


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """*cmd* prefixed with ``taskset -c CPU`` (unpinned without taskset or that CPU)."""
    if cpu is None or cpu >= (os.cpu_count() or 1) or not shutil.which("taskset"):
        return cmd
    return ["taskset", "-c", str(cpu), *cmd]


def run(
    gen: LoadGen, url: str, connections: int, duration: float, cpu: int | None
) -> dict[str, Any]:
    """Run one load phase; returns the generator's JSON report."""
    proc = subprocess.run(
        pinned(gen.command(url, connections, duration), cpu),
        capture_output=True,
        text=True,
        timeout=duration + REQUEST_TIMEOUT + 30,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{gen.name} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# -- the built-in generator ----------------------------------------------------------------


async def _connection(
    host: str,
    port: int,
    tls: ssl.SSLContext | None,
    request: bytes,
    deadline: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    writer = None
    try:
        while time.perf_counter() < deadline:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port, ssl=tls)
            start = time.perf_counter()
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            length, closes = 0, False
            for line in head.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line[15:])
                elif line.startswith(b"connection:"):
                    closes = b"close" in line
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 2"):
                errors[0] += 1
            if closes:
                # A server may end a keep-alive connection after some requests (nginx's
                # keepalive_requests, 1000 by default): open another, as wrk does, or the
                # load through the proxy would stop there.
                writer.close()
                writer = None
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
        errors[0] += 1
    finally:
        if writer is not None:
            writer.close()


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def generate(url: str, connections: int, duration: float) -> dict[str, Any]:
    """Keep *connections* keep-alive connections busy for *duration* seconds."""
    parts = urlsplit(url)
    # The benchmark's proxy has a throw-away self-signed certificate.
    tls = proxy.tls_context() if parts.scheme == "https" else None
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    latencies: list[float] = []
    errors = [0]
    start = time.perf_counter()
    deadline = start + duration
    await asyncio.gather(
        *(
            _connection(host, port, tls, request, deadline, latencies, errors)
            for _ in range(connections)
        )
    )
    seconds = time.perf_counter() - start
    ms = sorted(x * 1e3 for x in latencies)
    return {
        "requests": len(ms),
        "seconds": seconds,
        "errors": errors[0],
        "p50_ms": _percentile(ms, 50),
        "p90_ms": _percentile(ms, 90),
        "p99_ms": _percentile(ms, 99),
        "max_ms": ms[-1] if ms else 0.0,
        "mean_ms": sum(ms) / len(ms) if ms else 0.0,
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(generate(args.url, args.connections, args.duration))))


if __name__ == "__main__":
    main(sys.argv[1:])
