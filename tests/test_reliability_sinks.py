"""Sink faults and many writers, with every line counted (issue 6).

Under real gunicorn + uvicorn_worker (2 workers, 127.0.0.1): a stdout pipe stalled for 10 s, a
pipe whose reader goes away (EPIPE), a full disk (/dev/full). With real files and pipes: the
log file deleted, logrotate's rename-and-create, four processes appending to one file and two
sharing one slow stdout pipe.
test_pipeline.py, test_writer.py and test_sinks.py have the in-process versions of stalled pipes,
write errors and rotation; these add the server, the counts per worker and the races with a
writer that never pauses.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from _server import free_port, get, rss_mb, stop, wait_for, wait_until_healthy

import asynclog

from conftest import FLUSH_S, ROOT, assert_accounted, read_lines

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).resolve().parent
APP = "tests._apps:app"
WORKERS = 2


# --- a gunicorn whose stdout is a pipe the test reads (or not) --------------------------------


class PipeReader(threading.Thread):
    """Reads the pipe's read end into memory while `reading` is set; stops on `close()`."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.data = bytearray()
        self.reading = threading.Event()
        self.reading.set()
        self._closing = False
        self._lock = threading.Lock()

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self._closing:
            if not self.reading.is_set() or not poller.poll(50):
                time.sleep(0.01)
                continue
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return
            with self._lock:
                self.data += chunk

    def lines(self) -> list[bytes]:
        with self._lock:
            return bytes(self.data).split(b"\n")[:-1]

    def close(self) -> None:
        """Stop reading and close the read end: later writes to the pipe fail with EPIPE."""
        if not self._closing:
            self._closing = True
            self.join(5)
            os.close(self.fd)


@contextmanager
def gunicorn_on_pipe(
    env: dict[str, str], stderr: Path
) -> Iterator[tuple[int, subprocess.Popen[bytes], PipeReader]]:
    """gunicorn serving tests/_apps.py; stdout is a pipe read by the PipeReader, stderr a file."""
    port = free_port()
    read_fd, write_fd = os.pipe()
    reader = PipeReader(read_fd)
    reader.start()
    with open(stderr, "ab") as err:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "-k", "uvicorn_worker.UvicornWorker"),
                *("-w", str(WORKERS), "--bind", f"127.0.0.1:{port}", APP),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "ASYNCLOG_FORMAT": "json", **env},
            stdout=write_fd,
            stderr=err,
        )
    os.close(write_fd)
    try:
        wait_until_healthy(port, proc)
        yield port, proc, reader
    finally:
        stop(proc)
        reader.close()


def worker_stats(port: int, timeout: float = 60.0) -> dict[int, dict[str, Any]]:
    """Each worker's counters after a flush (GET /stats until every worker has answered).

    Bounded in time, not in tries: the server is healthy once one worker answers, and on a
    loaded machine the other may still be booting for seconds, while the first takes every
    connection."""
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = get(port, "/stats", timeout=30)  # the route flushes for up to 20 s
        assert status == 200
        stats = json.loads(body)
        assert stats["flushed"]
        seen[stats["pid"]] = stats
        if len(seen) == WORKERS:
            return seen
        time.sleep(0.01)
    raise AssertionError(f"only {len(seen)} of {WORKERS} workers answered /stats")


def health_ms(port: int) -> float:
    """One GET /health on its own connection, timed from connect to the end of the response."""
    start = time.perf_counter()
    status, _, body = get(port, "/health", timeout=30)
    assert (status, body) == (200, b'{"status":"ok"}')
    return (time.perf_counter() - start) * 1000


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


# Requests /items/{id} from its own process (so the /health timings are not the load's) for a
# bounded time and count; prints {status: count}.
_LOAD = """
import asyncio, collections, json, sys, time
from _server import http_get

port, seconds, limit, concurrency = (float(a) for a in sys.argv[1:])
statuses = collections.Counter()
started = 0

async def client(deadline):
    global started
    while time.monotonic() < deadline and started < limit:
        started += 1
        try:
            status = (await http_get(int(port), f"/items/{started % 100 + 1}", timeout=30))[0]
        except Exception as exc:
            status = type(exc).__name__
        statuses[status] += 1

async def main():
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(client(deadline) for _ in range(int(concurrency))))

asyncio.run(main())
print(json.dumps(statuses))
"""


def start_load(
    port: int, seconds: float, limit: int = 50_000, concurrency: int = 4
) -> subprocess.Popen[str]:
    args = [str(port), str(seconds), str(limit), str(concurrency)]
    return subprocess.Popen(
        [sys.executable, "-c", _LOAD, *args],
        env={**os.environ, "PYTHONPATH": str(TESTS)},
        stdout=subprocess.PIPE,
        text=True,
    )


def load_result(load: subprocess.Popen[str]) -> dict[str, int]:
    out, _ = load.communicate(timeout=90)
    assert load.returncode == 0
    return dict(json.loads(out))


def stderr_notices(path: Path) -> list[dict[str, Any]]:
    """asynclog's own lines on the server's stderr (gunicorn's are plain text)."""
    text = path.read_text()
    assert "Traceback" not in text
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"')]


def write_failures(
    notices: list[dict[str, Any]], error: str, workers: set[int]
) -> list[dict[str, Any]]:
    """The "write to sink failed" reports, checked: each names `error` and one of `workers`, and
    each worker reports at most once a second (its wall-clock stamps may differ a little from the
    writer's monotonic gaps)."""
    failures = [n for n in notices if n["message"] == "write to sink failed"]
    assert failures and all(error in n["error"] for n in failures), failures
    times: dict[int, list[float]] = {}
    for n in failures:
        # Python 3.10's fromisoformat() does not read the "Z" suffix (3.11 does).
        stamp = datetime.fromisoformat(n["time"].replace("Z", "+00:00"))
        times.setdefault(n["pid"], []).append(stamp.timestamp())
    assert set(times) <= workers, (times, workers)
    for pid_times in times.values():
        assert all(b - a > 0.9 for a, b in itertools.pairwise(sorted(pid_times))), times
    return failures


# --- 1. a stalled stdout pipe -------------------------------------------------------------------

STALL_S = 10.0


@pytest.mark.integration
def test_stalled_stdout_pipe_keeps_health_fast_and_memory_bounded(
    tmp_path: Path, figures: Any
) -> None:
    # A small queue so that it overflows within the stall: the drop notices are counted too.
    env = {"ASYNCLOG_SINK": "stdout", "ASYNCLOG_QUEUE_SIZE": "5000"}
    stderr = tmp_path / "server.err"
    with gunicorn_on_pipe(env, stderr) as (port, _, reader):
        pids = list(worker_stats(port))
        warm = start_load(port, seconds=2)
        warm_statuses = load_result(warm)
        rss_before = {pid: rss_mb(pid) for pid in pids}

        reader.reading.clear()  # the stall: nobody reads stdout for STALL_S seconds
        load = start_load(port, seconds=STALL_S)
        timings: list[float] = []
        rss_peak = dict(rss_before)
        stall_end = time.monotonic() + STALL_S
        next_sample = 0.0
        while time.monotonic() < stall_end and len(timings) < 2_000:
            timings.append(health_ms(port))
            if time.monotonic() >= next_sample:
                rss_peak = {pid: max(rss_peak[pid], rss_mb(pid)) for pid in pids}
                next_sample = time.monotonic() + 0.5
            time.sleep(0.01)
        rss_peak = {pid: max(rss_peak[pid], rss_mb(pid)) for pid in pids}
        reader.reading.set()  # drain
        statuses = load_result(load)
        stats = worker_stats(port)
        written = sum(s["written"] for s in stats.values())
        deadline = time.monotonic() + 30
        while len(reader.lines()) < written and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = reader.lines()

    requests = sum(statuses.values())
    assert statuses == {"200": requests} and warm_statuses == {"200": sum(warm_statuses.values())}
    stall_p99 = p99(timings)
    growth = {pid: rss_peak[pid] - rss_before[pid] for pid in pids}
    dropped = sum(s["dropped"] for s in stats.values())
    figures(
        requests=requests,
        health_probes=len(timings),
        p99_ms=round(stall_p99, 1),
        max_ms=round(max(timings), 1),
        rss_mb={pid: f"{rss_before[pid]:.0f}->{rss_peak[pid]:.0f}" for pid in pids},
        emitted=sum(s["emitted"] for s in stats.values()),
        written=written,
        dropped=dropped,
        lines=len(lines),
    )
    assert stall_p99 < 50, f"/health p99 {stall_p99:.1f} ms during the stall"
    assert max(growth.values()) < 50, f"RSS grew {growth} MB"
    for s in stats.values():
        assert_accounted(s, dropped_write=0)  # a stalled pipe is waited for, not given up on
    assert dropped > 0, "the stall never filled a queue: nothing was tested"
    # Every line that came out of the pipe is whole, valid JSON, and there is one per write.
    parsed = [json.loads(line) for line in lines]
    assert len(parsed) == written
    notices = [line for line in parsed if line["message"] == "records dropped: queue full"]
    assert sum(n["dropped"] for n in notices) == sum(s["dropped_overflow"] for s in stats.values())
    access = [line for line in parsed if line["logger"] == "asynclog.access"]
    item_lines = [line for line in parsed if line["logger"] == "example"]
    # Each request logs three lines (two in the route, one access line) unless dropped. The
    # drop counter also counts any other record the full queue turned away (the watchdog's
    # "event loop blocked" warning, on a loaded machine): at most a few, never fewer than the
    # requests' own.
    request_lines = 3 * (requests + sum(warm_statuses.values()))
    other_dropped = len(access) + len(item_lines) + dropped - request_lines
    assert 0 <= other_dropped <= 10, other_dropped
    # Each worker says what it lost once more on stderr as it stops: the same, nothing since.
    finals = [n for n in stderr_notices(stderr) if n["message"] == "records lost before shutdown"]
    assert {n["pid"]: n["dropped"] for n in finals} == {
        pid: s["dropped"] for pid, s in stats.items() if s["dropped"]
    }


# --- 2. the pipe's reader goes away (EPIPE) ---------------------------------------------------


@pytest.mark.integration
def test_reader_closing_the_pipe_costs_lines_not_requests(tmp_path: Path, figures: Any) -> None:
    stderr = tmp_path / "server.err"
    with gunicorn_on_pipe({"ASYNCLOG_SINK": "stdout"}, stderr) as (port, proc, reader):
        before = worker_stats(port)
        reader.close()  # from here on every write to stdout fails with EPIPE
        statuses = load_result(start_load(port, seconds=3, limit=1_000))
        after = worker_stats(port)
        assert stop(proc) == 0

    requests = sum(statuses.values())
    assert statuses == {"200": requests}
    emitted = sum(after[p]["emitted"] - before[p]["emitted"] for p in after)
    lost = sum(after[p]["dropped_write"] - before[p]["dropped_write"] for p in after)
    notices = stderr_notices(stderr)
    failures = write_failures(notices, "BrokenPipeError", set(after))
    figures(requests=requests, emitted=emitted, dropped_write=lost, reports=len(failures))
    assert emitted == 3 * requests  # two route lines and one access line each
    for pid, s in after.items():
        # Nothing went out after the reader left.
        assert_accounted(s, written=before[pid]["written"])
    assert lost == emitted  # and every line that did not was counted
    finals = [n for n in notices if n["message"] == "records lost before shutdown"]
    # And once more, with the totals, as each worker stopped.
    assert sorted(n["pid"] for n in finals) == sorted(after)
    assert all(n["dropped_write"] >= after[n["pid"]]["dropped_write"] for n in finals), finals


# --- 3. the disk is full (ENOSPC) -------------------------------------------------------------


@pytest.mark.integration
def test_full_disk_costs_lines_not_requests(tmp_path: Path, figures: Any) -> None:
    stderr = tmp_path / "server.err"
    with gunicorn_on_pipe({"ASYNCLOG_SINK": "/dev/full"}, stderr) as (port, proc, _):
        statuses = load_result(start_load(port, seconds=3, limit=1_000))
        stats = worker_stats(port)
        assert stop(proc) == 0

    requests = sum(statuses.values())
    assert statuses == {"200": requests}
    for s in stats.values():
        assert_accounted(s, written=0, dropped=s["dropped_write"])
        assert s["dropped_write"] > 0, s
    emitted = sum(s["emitted"] for s in stats.values())
    notices = stderr_notices(stderr)
    failures = write_failures(notices, "No space left on device", set(stats))
    figures(requests=requests, emitted=emitted, dropped_write=emitted, reports=len(failures))
    assert emitted >= 3 * requests  # plus the server's own start-up lines
    finals = [n for n in notices if n["message"] == "records lost before shutdown"]
    assert sorted(n["pid"] for n in finals) == sorted(stats)  # with the totals, as each stopped
    for n in finals:
        assert_accounted(n, written=0, dropped_write=n["emitted"])


# --- 4. the log file is deleted ---------------------------------------------------------------


def test_deleted_log_file_is_created_again_for_the_next_line(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("deleted")
    held = []  # the deleted files, kept open to read what went into each
    for n in range(3):
        for i in range(100 * n, 100 * n + 100):
            log.info("line", i=i)
        assert asynclog.flush(FLUSH_S)
        held.append(log_path.open("rb"))
        log_path.unlink()
    for i in range(300, 400):
        log.info("line", i=i)
    assert asynclog.flush(FLUSH_S)

    assert [line["i"] for line in read_lines(log_path)] == list(range(300, 400))
    for n, file in enumerate(held):
        with file:
            got = [json.loads(line)["i"] for line in file.read().splitlines()]
        assert got == list(range(100 * n, 100 * n + 100))
    assert_accounted(asynclog.stats(), emitted=400, written=400)


# A child that logs `count` numbered lines at a steady pace (about `seconds` in all) into
# `path`, never dropping one, then prints its counters.
_PACED = """
import asynclog, json, sys, time
path, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
asynclog.configure(sink=path, format="json", overflow="block", block_timeout=10)
log = asynclog.get_logger("paced")
start = time.monotonic()
for i in range(count):
    log.info("paced", i=i)
    if i % 100 == 99:
        time.sleep(max(0.0, start + seconds * (i + 1) / count - time.monotonic()))
asynclog.shutdown(timeout=10)
print(json.dumps(asynclog.stats()))
"""


def _paced_writer(path: Path, count: int, seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _PACED, str(path), str(count), str(seconds)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )


def _numbers(data: bytes) -> list[int]:
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line)["i"] for line in data.splitlines()]


# Lines a file must hold before the test deletes or rotates it: the writer is well into it, and
# most of its stream is still to come (the paced writers log 30,000).
INTO_FILE = 2_000


def _wait_for_lines(path: Path, lines: int = INTO_FILE) -> None:
    """Wait until `path` holds `lines` lines; 60 s also covers the writer's start."""

    def holds() -> bool:
        return path.exists() and path.read_bytes().count(b"\n") >= lines

    wait_for(holds, 60, f"{lines} lines in {path}")


def test_file_deleted_under_a_busy_writer_loses_no_line_to_the_void(
    log_path: Path, figures: Any
) -> None:
    count = 30_000
    writer = _paced_writer(log_path, count, seconds=2)
    held = []  # each deleted file, opened just before its deletion: whatever reached it
    for _ in range(3):
        _wait_for_lines(log_path)
        held.append(log_path.open("rb"))
        log_path.unlink()
    out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0

    parts = []
    for file in held:
        with file:
            parts.append(_numbers(file.read()))
    parts.append(_numbers(log_path.read_bytes()))
    figures(lines=count, per_file=[len(p) for p in parts])
    assert [i for part in parts for i in part] == list(range(count))
    assert parts[-1], "no line reached the file created after the last deletion"
    assert_accounted(json.loads(out), emitted=count, written=count)


# --- 5. logrotate's rename, then create ---------------------------------------------------------


def test_logrotate_create_mode_under_a_busy_writer_loses_nothing(
    log_path: Path, figures: Any
) -> None:
    count = 30_000
    writer = _paced_writer(log_path, count, seconds=3)
    rotated = [log_path.with_name(f"app.log.{n}") for n in (1, 2)]
    for _ in range(2):  # what logrotate does with `create`: shift, rename, create empty
        _wait_for_lines(log_path)
        if rotated[0].exists():
            rotated[0].rename(rotated[1])
        log_path.rename(rotated[0])
        # No O_EXCL: the writer may have made the new file itself in between (its rotation check).
        os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT, 0o644))
    out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0

    parts = [_numbers(path.read_bytes()) for path in (rotated[1], rotated[0], log_path)]
    figures(lines=count, per_file=[len(p) for p in parts])
    assert [i for part in parts for i in part] == list(range(count))  # old + new == emitted
    assert parts[-1], "no line reached the newly created app.log"
    assert_accounted(json.loads(out), emitted=count, written=count)


# --- 6. many writers, one file ------------------------------------------------------------------

# A child that appends `count` numbered lines to `path` once told to go, then prints its counters.
_APPENDER = """
import asynclog, json, sys
path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
asynclog.configure(sink=path, format="json", overflow="block", block_timeout=10)
log = asynclog.get_logger("appender")
print("ready", flush=True)
sys.stdin.readline()  # start together
for i in range(count):
    # Every 997th line is 20 KB: a write far bigger than a page.
    log.info("append", p=name, i=i, pad="x" * (20_000 if i % 997 == 0 else i % 300))
assert asynclog.shutdown(timeout=30)
print(json.dumps(asynclog.stats()))
"""


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next line of a child's stdout, waiting at most `timeout` seconds for it."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"no line from the child in {timeout} s"
    return proc.stdout.readline()


def test_four_processes_append_to_one_file_without_tearing_a_line(
    log_path: Path, figures: Any
) -> None:
    count, names = 50_000, ["a", "b", "c", "d"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(log_path), name, str(count)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    # Each says "ready" once configured (a crash closes its stdout: "" fails the assertion).
    assert [_read_line(proc, 60) for proc in procs] == ["ready\n"] * len(names)
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
    outs = [_read_line(proc, 90) for proc in procs]
    for proc in procs:
        assert proc.stdout is not None
        proc.stdout.close()
    assert [proc.wait(30) for proc in procs] == [0] * len(names)
    for out in outs:
        assert_accounted(json.loads(out), emitted=count, written=count)

    lines = read_lines(log_path)  # fails on any torn or glued line
    switches = sum(a["p"] != b["p"] for a, b in itertools.pairwise(lines))
    figures(lines=len(lines), writer_switches=switches)
    assert len(lines) == count * len(names)
    for name in names:
        mine = [line for line in lines if line["p"] == name]
        assert [line["i"] for line in mine] == list(range(count))
        pads = [len(line["pad"]) for line in mine]
        assert pads == [20_000 if i % 997 == 0 else i % 300 for i in range(count)]
    assert switches > len(names), "the writers never overlapped: nothing was tested"


_PIPE_WRITER = """
import asynclog, sys
name, count = sys.argv[1], int(sys.argv[2])
asynclog.configure(sink="stdout", format="json", overflow="block", block_timeout=10)
log = asynclog.get_logger("shared")
for i in range(count):
    log.info("pipe", p=name, i=i, pad="x" * (i % 500))
assert asynclog.shutdown(timeout=30)
"""


def test_two_processes_on_one_slow_stdout_pipe_never_tear_a_line(figures: Any) -> None:
    # gunicorn's workers share the container's stdout pipe. A slow reader keeps it nearly full,
    # so writes often find too little room: lines up to PIPE_BUF must still arrive whole.
    count = 10_000
    read_fd, write_fd = os.pipe()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PIPE_WRITER, name, str(count)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=write_fd,
        )
        for name in ("a", "b")
    ]
    os.close(write_fd)
    data = bytearray()
    deadline = time.monotonic() + 60
    while True:
        # Bounded even if a writer hangs with the pipe open: a plain read would wait for ever.
        ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, "the writers stopped without closing the pipe"
        chunk = os.read(read_fd, 20_000)
        if not chunk:
            break
        data += chunk
        time.sleep(0.002)
    os.close(read_fd)
    assert [proc.wait(30) for proc in procs] == [0, 0]

    lines = [json.loads(line) for line in bytes(data).splitlines()]  # fails on a torn line
    figures(lines=len(lines), bytes=len(data))
    for name in ("a", "b"):
        assert [line["i"] for line in lines if line["p"] == name] == list(range(count))
