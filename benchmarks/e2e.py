"""End-to-end benchmark: a FastAPI app under gunicorn + uvicorn-worker, loaded over HTTP.

One case is a mode (how the app logs) and a sink (where its lines go):

- ``file``: the app writes a file.
- ``file+nginx``: the same, loaded over TLS through nginx running sidecar/nginx.conf (pinned
  to the load generator's CPU), the production front layer.
- ``slow-pipe``: the app writes stdout, a pipe whose reader drains ~800 KiB/s.
- ``stalled-pipe``: the app writes stdout, a pipe whose reader stops for ``stall`` seconds
  in every measured round, then resumes.

For each case the harness boots one worker pinned to CPU 0, runs the load generator
pinned to CPU 1 (warm-up, then ``rounds`` measured rounds), samples the worker's RSS,
stops the server with SIGTERM (so lifespan shutdown drains what it can within
gunicorn's graceful timeout), and then counts and parses every line the app wrote.
File-sink cases run side by side, loaded in turn round by round (``run_group``).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil  # type: ignore[import-untyped]  # no stubs in the bench extra

from benchmarks import loadgen, proxy
from benchmarks.records import LineCheck, check_json_lines

REPO = Path(__file__).resolve().parent.parent
SERVER_CPU = 0
LOAD_CPU = 1
# gunicorn's graceful timeout: how long lifespan shutdown may drain before the worker is
# killed. Lines a logger still holds after that are lost, and show up as such.
GRACEFUL_TIMEOUT = 10
LINES_PER_REQUEST = 3
# The example app's benchmark route (GET /items/{item_id}), mirrored in benchmarks/apps.py.
LOAD_PATH = "/items/42"


@dataclass(frozen=True)
class E2EProfile:
    connections: int
    warmup: float
    duration: float
    rounds: int
    stall: float
    boot_timeout: float


@dataclass(frozen=True)
class Case:
    mode: str
    sink: str

    @property
    def name(self) -> str:
        return f"{self.mode}/{self.sink}"

    @property
    def to_file(self) -> bool:
        """The app writes a file (directly loaded or through the proxy), not a pipe."""
        return self.sink in ("file", PROXIED)


@dataclass(frozen=True)
class Target:
    """What gunicorn serves for a mode: the app spec, extra environment, the URL path."""

    spec: str
    env: dict[str, str]
    path: str
    source: str
    # A gunicorn config file (`-c`), if the mode needs one.
    config: str | None = None


MODES = {
    "none": "no logging",
    "stdlib-sync": "stdlib sync JSON",
    "stdlib-otel": "stdlib sync JSON + stock FastAPIInstrumentor",
    "stdlib-queue": "stdlib QueueHandler + QueueListener",
    "asynclog": "asynclog, tracing off",
    "asynclog-tracing": "asynclog, tracing on",
}

# gunicorn settings for the asynclog modes (uvicorn's proxy headers off, as in
# sidecar/gunicorn.conf.py); this checkout's file, also when BENCH_TREE serves another.
ASYNCLOG_CONFIG = str(REPO / "benchmarks" / "gunicorn_asynclog.py")

# A file sink, the load going through nginx (sidecar/nginx.conf, TLS) to the same server.
PROXIED = "file+nginx"

CASES = (
    Case("none", "file"),
    Case("stdlib-sync", "file"),
    Case("stdlib-otel", "file"),
    Case("asynclog", "file"),
    Case("asynclog-tracing", "file"),
    Case("none", PROXIED),
    Case("asynclog", PROXIED),
    Case("stdlib-sync", "slow-pipe"),
    Case("stdlib-queue", "slow-pipe"),
    Case("asynclog", "slow-pipe"),
    Case("stdlib-sync", "stalled-pipe"),
    Case("stdlib-queue", "stalled-pipe"),
    Case("asynclog", "stalled-pipe"),
)


# File-sink servers do nothing while idle, so they run side by side (see run_group); a pipe
# case runs alone, because its logger may keep draining a backlog between rounds.
GROUPS = [[c for c in CASES if c.to_file]] + [[c] for c in CASES if not c.to_file]


def target(mode: str, sink: str, extra_env: Mapping[str, str] | None = None) -> Target:
    """The app to serve for *mode*, writing to *sink* (a file path or ``stdout``), with
    *extra_env* added to its environment.

    The asynclog modes serve the bundled example app (``example.app:app``) configured by
    its ``ASYNCLOG_*`` variables alone, unless ``BENCH_ASYNCLOG_APP=bench`` (in the
    environment or *extra_env*) asks for the same route on a bare app in
    ``benchmarks/apps.py``. Other modes always use that module, whose route mirrors the
    example's. The asynclog modes run with ``ASYNCLOG_CONFIG``, as the sidecar ships them:
    the forwarded headers applied once, by asynclog, where the other modes have uvicorn's.
    """
    extra = dict(extra_env or {})
    if not mode.startswith("asynclog"):
        env = {"BENCH_MODE": mode, "BENCH_SINK": sink} | extra
        return Target("benchmarks.apps:app", env, LOAD_PATH, "benchmarks/apps.py")
    env = {
        "ASYNCLOG_SINK": sink,
        "ASYNCLOG_FORMAT": "json",
        "ASYNCLOG_LEVEL": "INFO",
        "ASYNCLOG_TRACING": "1" if mode == "asynclog-tracing" else "0",
    }
    if (os.environ | extra).get("BENCH_ASYNCLOG_APP") == "bench":
        env = env | {"BENCH_MODE": mode} | extra
        return Target("benchmarks.apps:app", env, LOAD_PATH, "benchmarks/apps.py", ASYNCLOG_CONFIG)
    return Target("example.app:app", env | extra, LOAD_PATH, "example/app.py", ASYNCLOG_CONFIG)


@contextlib.contextmanager
def load_cpu_only() -> Iterator[None]:
    """Keep the harness (RSS sampling, stall timers) off the server's CPU while it runs."""
    affinity = os.sched_getaffinity(0)
    if LOAD_CPU in affinity:
        os.sched_setaffinity(0, {LOAD_CPU})
    try:
        yield
    finally:
        os.sched_setaffinity(0, affinity)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} while booting")
        try:
            if _get(port, "/health") == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout:.0f} s")


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds on a background thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self.last = self.peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.last = self.process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, self.last)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _shutdown_report(server_log: Path) -> dict[str, Any]:
    """asynclog's one stderr line about records lost before shutdown, if it wrote one."""
    report: dict[str, Any] = {}
    for line in server_log.read_text(errors="replace").splitlines():
        if line.startswith("{") and "records lost before shutdown" in line:
            with contextlib.suppress(ValueError):
                report = json.loads(line)
    return report


def _start_reader(case: Case, capture: Path, stall: float) -> subprocess.Popen[bytes] | None:
    if case.to_file:
        return None
    mode = "slow" if case.sink == "slow-pipe" else "stalled"
    return subprocess.Popen(
        loadgen.pinned(
            [sys.executable, "-m", "benchmarks.pipes", mode, str(capture), f"--stall={stall}"],
            LOAD_CPU,
        ),
        stdin=subprocess.PIPE,
        cwd=REPO,
    )


def _stop_server(proc: subprocess.Popen[bytes]) -> float:
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=GRACEFUL_TIMEOUT + 15)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()
    return time.monotonic() - start


def _stop_reader(reader: subprocess.Popen[bytes] | None, stall: float) -> None:
    if reader is None:
        return
    if reader.stdin:
        reader.stdin.close()
    try:
        reader.wait(timeout=stall + 60)
    except subprocess.TimeoutExpired:
        reader.kill()
        reader.wait()


def _stall_later(reader: subprocess.Popen[bytes], delay: float) -> threading.Timer:
    def stall() -> None:
        if reader.poll() is None:
            reader.send_signal(signal.SIGUSR1)

    timer = threading.Timer(delay, stall)
    timer.start()
    return timer


class Server:
    """One case's server: boot it, load it round by round, stop it, count its lines."""

    def __init__(
        self,
        case: Case,
        profile: E2EProfile,
        workdir: Path,
        name: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """`name` names its files in `workdir` (default: mode-sink); `extra_env` is added to
        the server's environment (see `target`)."""
        self.case = case
        self.profile = profile
        name = name or f"{case.mode}-{case.sink}"
        self.capture = workdir / f"{name}.jsonl"
        self.server_log = workdir / f"{name}.server.log"
        self.port = _free_port()
        self.reader = _start_reader(case, self.capture, profile.stall)
        sink = "stdout" if self.reader else str(self.capture)
        self.target = target(case.mode, sink, extra_env)
        self.cmd = loadgen.pinned([
            sys.executable, "-m", "gunicorn",
            "-k", "uvicorn_worker.UvicornWorker", "-w", "1",
            "--bind", f"127.0.0.1:{self.port}",
            f"--graceful-timeout={GRACEFUL_TIMEOUT}",
            *(["-c", self.target.config] if self.target.config else []),
            self.target.spec,
        ], SERVER_CPU)  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}{self.target.path}"
        self.proxy_dir = workdir / f"{name}.nginx" if case.sink == PROXIED else None
        self.nginx: subprocess.Popen[bytes] | None = None
        self.warm: dict[str, Any] = {"requests": 0, "errors": 0}
        self.rounds: list[dict[str, Any]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.rss: RssSampler | None = None
        self.idle_rss = 0
        self.stop_seconds = 0.0

    def boot(self) -> None:
        """Start gunicorn and wait until the route answers; raises RuntimeError if not."""
        # BENCH_TREE serves the app from another checkout (its extension built in place), so
        # `benchmarks.ablate` can run before and after a change side by side.
        tree = self.target.env.get("BENCH_TREE", str(REPO))
        env = {**os.environ, "PYTHONPATH": tree, **self.target.env}
        stdout: IO[bytes] | int | None = self.reader.stdin if self.reader else subprocess.DEVNULL
        with self.server_log.open("wb") as stderr:
            self.proc = subprocess.Popen(
                self.cmd, env=env, cwd=tree, stdout=stdout, stderr=stderr
            )  # fmt: skip
        try:
            _wait_ready(self.proc, self.port, self.profile.boot_timeout)
            if _get(self.port, self.target.path) != 200:
                raise RuntimeError(f"GET {self.target.path} did not return 200")
        except RuntimeError as exc:
            tail = self.server_log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"{exc}; server log: " + " | ".join(tail)) from exc
        if self.proxy_dir is not None:
            self._start_nginx(self.proxy_dir)
        worker = psutil.Process(self.proc.pid).children()[0]
        self.rss = RssSampler(worker.pid).__enter__()
        self.idle_rss = self.rss.peak

    def _start_nginx(self, directory: Path) -> None:
        """nginx on the load generator's CPU, so the app's CPU serves the app alone, as in
        the direct cases; the load then goes to its TLS port."""
        directory.mkdir(parents=True, exist_ok=True)
        port = proxy.free_port("127.0.0.1")
        config = proxy.render_config(directory, "127.0.0.1", port, self.port)
        with (directory / "error.log").open("wb") as err:
            self.nginx = subprocess.Popen(
                loadgen.pinned(proxy.command(directory, config), LOAD_CPU), stdout=err, stderr=err
            )  # fmt: skip
        proxy.wait_listening(
            self.nginx, "127.0.0.1", port, self.profile.boot_timeout, directory / "error.log"
        )
        self.url = f"https://127.0.0.1:{port}{self.target.path}"

    def load(self, gen: loadgen.LoadGen, duration: float, warmup: bool = False) -> None:
        """One load run; a stalled pipe's reader is stopped a little into every round."""
        timer = None
        if self.reader and self.case.sink == "stalled-pipe" and not warmup:
            timer = _stall_later(self.reader, min(1.0, duration / 4))
        try:
            result = loadgen.run(gen, self.url, self.profile.connections, duration, LOAD_CPU)
        finally:
            if timer:
                timer.cancel()
        if warmup:
            self.warm = result
        else:
            self.rounds.append(result)

    def stop(self) -> None:
        """SIGTERM the server (lifespan shutdown drains), then let the pipe reader finish."""
        if self.rss:
            self.rss.__exit__()
        if self.nginx and self.nginx.poll() is None:
            self.nginx.terminate()
            try:
                self.nginx.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.nginx.kill()
                self.nginx.wait()
        if self.proc and self.proc.poll() is None:
            self.stop_seconds = _stop_server(self.proc)
        _stop_reader(self.reader, self.profile.stall)

    def result(self) -> dict[str, Any]:
        """The case's figures: medians over rounds, and the line accounting."""
        assert self.rss is not None and self.rounds
        check = LineCheck()
        if self.capture.exists():
            check = check_json_lines(self.capture)
            self.capture.unlink()
        rounds, warm, profile = self.rounds, self.warm, self.profile
        served = warm["requests"] + sum(r["requests"] for r in rounds) + 1
        expected = LINES_PER_REQUEST * served if self.case.mode != "none" else 0
        load_runs = (1 if profile.warmup > 0 else 0) + len(rounds)
        # Requests still in flight when a load run ends are served but not counted by the load
        # generator; their lines are written anyway, so allow that many extra.
        slack = LINES_PER_REQUEST * profile.connections * load_runs
        shutdown = _shutdown_report(self.server_log)
        # asynclog's in-stream notices may not get out through a failing sink; its stderr
        # report at shutdown has the whole count, plus what was still queued.
        dropped = max(check.dropped_reported, int(shutdown.get("dropped", 0)))
        dropped += int(shutdown.get("unwritten", 0))
        unaccounted = expected - check.valid - dropped
        return {
            "mode": self.case.mode,
            "sink": self.case.sink,
            "app": self.target.source,
            "requests_per_s": statistics.median(r["requests"] / r["seconds"] for r in rounds),
            "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
            "p90_ms": statistics.median(r["p90_ms"] for r in rounds),
            "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
            "max_ms": statistics.median(r["max_ms"] for r in rounds),
            "max_ms_worst": max(r["max_ms"] for r in rounds),
            "errors": warm["errors"] + sum(r["errors"] for r in rounds),
            "rounds": rounds,
            "requests_served": served,
            "lines_expected": expected,
            "lines_written": check.lines,
            "lines_valid": check.valid,
            "lines_corrupt": check.corrupt,
            "torn_tail": check.torn_tail,
            "lines_traced": check.traced,
            "corrupt_samples": check.samples,
            "dropped": dropped,
            "dropped_in_stream": check.dropped_reported,
            "shutdown_report": shutdown,
            "lines_unaccounted": unaccounted,
            "lines_lost": max(0, unaccounted) if unaccounted > slack else 0,
            "worker_idle_rss": self.idle_rss,
            "worker_peak_rss": self.rss.peak,
            "worker_end_rss": self.rss.last,
            "stop_seconds": self.stop_seconds,
            "command": " ".join(
                [f"{k}={v}" for k, v in self.target.env.items()]
                + [("python" if part == sys.executable else part) for part in self.cmd]
            ),
        }


def _round_orders(count: int, rounds: int) -> list[list[int]]:
    """The order of the cases in each round: shuffled, with a fixed seed so runs repeat.

    A case's figures moved with its place in the round (by up to 25% in trials here) and with
    the case loaded just before it: a rotation keeps every case behind the same neighbour, so
    a shuffle varies both."""
    rng = random.Random(count)
    orders = []
    for _ in range(rounds):
        order = list(range(count))
        rng.shuffle(order)
        orders.append(order)
    return orders


def run_group(
    cases: list[Case],
    profile: E2EProfile,
    gen: loadgen.LoadGen,
    workdir: Path,
    on_round: Callable[[str], None] = lambda label: None,
) -> list[dict[str, Any]]:
    """Run *cases* side by side: boot every server, then load them in turn, round by round.

    Interleaving spreads whatever else the machine does over all cases alike, so their
    ratios hold even when absolute figures drift. Idle servers cost nearly nothing; only
    cases whose idle server does no background work (file sinks) should share a group.
    A case that fails gets ``error`` instead of figures; the others go on.
    """
    errors: dict[int, str] = {}
    with load_cpu_only():
        servers = [Server(case, profile, workdir) for case in cases]
        try:
            for i, server in enumerate(servers):
                try:
                    server.boot()
                    if profile.warmup > 0:
                        server.load(gen, profile.warmup, warmup=True)
                except (RuntimeError, OSError) as exc:
                    errors[i] = str(exc)
            for n, order in enumerate(_round_orders(len(servers), profile.rounds)):
                on_round(f"round {n + 1}/{profile.rounds}")
                for i in order:
                    server = servers[i]
                    if i not in errors:
                        try:
                            server.load(gen, profile.duration)
                        except (RuntimeError, OSError) as exc:
                            errors[i] = str(exc)
        finally:
            for server in servers:
                server.stop()
    return [
        {"mode": s.case.mode, "sink": s.case.sink, "error": errors[i]}
        if i in errors
        else s.result()
        for i, s in enumerate(servers)
    ]
