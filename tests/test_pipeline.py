"""Accounting, flush/shutdown, overflow, the pipeline's states, and fork safety."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import asynclog

from conftest import ROOT, assert_accounted, read_lines

# Each test runs on the C extension and on the pure-Python code (see conftest).
pytestmark = pytest.mark.usefixtures("implementation")


def test_exact_accounting_under_concurrent_threads(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json", queue_size=500)
    log = asynclog.get_logger("acc")
    per_thread = 5_000

    def work(n: int) -> None:
        for i in range(per_thread):
            if i % 2:
                log.info("native", t=n, i=i)
            else:
                logging.getLogger("std").info("stdlib %d", i, extra={"t": n})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert asynclog.flush(30)
    stats = assert_accounted(asynclog.stats())
    lines = read_lines(log_path)
    assert len(lines) == stats["written"]
    notices = [line for line in lines if line["logger"] == "asynclog"]
    assert sum(n["dropped"] for n in notices) == stats["dropped_overflow"]
    assert len(lines) - len(notices) + stats["dropped"] == 6 * per_thread


def test_flush_and_shutdown_lose_nothing(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json", overflow="block", queue_size=1_000)
    log = asynclog.get_logger("all")
    for i in range(20_000):
        log.info("n", i=i)
    assert asynclog.shutdown(timeout=30)
    lines = read_lines(log_path)
    assert [line["i"] for line in lines] == list(range(20_000))
    assert_accounted(asynclog.stats(), dropped=0, written=20_000, emitted=20_000)


def test_no_line_written_that_nobody_logged(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    asynclog.flush(5)
    asynclog.shutdown()
    assert log_path.read_bytes() == b""


def test_blocked_pipe_never_makes_a_call_wait_and_memory_stays_bounded() -> None:
    # stdout is a pipe nobody reads: the writer fills it and then waits; callers must not.
    code = """
        import asynclog, os, resource, sys, time
        asynclog.configure(sink="stdout", format="json", queue_size=2000)
        log = asynclog.get_logger("blocked")
        payload = "x" * 200
        worst = 0.0
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for i in range(200_000):
            t = time.perf_counter()
            log.info("stuck", i=i, payload=payload)
            worst = max(worst, time.perf_counter() - t)
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        s = asynclog.stats()
        ok = asynclog.shutdown(timeout=1)
        s2 = asynclog.stats()
        fields = (worst, rss1 - rss0, s["dropped"], s2["emitted"], s2["written"], s2["dropped"], ok)
        os.write(2, (" ".join(map(str, fields)) + "\\n").encode())
        """

    err = _run_into_unread_pipe(code)
    worst, rss_kb, dropped, emitted, written, dropped_after, ok = err.decode().split()[-7:]
    assert float(worst) < 0.05, f"a log call waited {float(worst) * 1000:.1f} ms"
    assert int(rss_kb) < 60_000, f"RSS grew {int(rss_kb) // 1024} MB"
    assert int(dropped) > 100_000
    assert_accounted(
        {"emitted": int(emitted), "written": int(written), "dropped": int(dropped_after)}
    )
    assert ok == "False"  # the pipe never drained: shutdown gave up at its deadline
    reports = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    assert {r["logger"] for r in reports} == {"asynclog"}
    [loss] = [r for r in reports if r["message"] == "records lost before shutdown"]
    assert loss["dropped"] == int(dropped_after)
    assert loss["emitted"] == int(emitted)


def test_a_stalled_pipe_never_gets_a_line_cut_in_the_middle_of_the_stream() -> None:
    # The reader stalls while the writer is mid-batch; shutdown's deadline passes; then the
    # reader drains everything. Every complete line must be valid JSON: a write that stopped
    # part-way through a line finishes it (or ends it) before any other line follows.
    code = """
        import asynclog
        asynclog.configure(sink="stdout", format="json", queue_size=50_000, batch_size=5000)
        log = asynclog.get_logger("torn")
        for i in range(30_000):
            log.info("x" * (i % 97), i=i, pad="p" * 300)
        asynclog.shutdown(timeout=0.5)
        asynclog.get_logger("torn").info("after shutdown, written through")
        """

    proc, read_fd = _start_with_stdout_pipe(code)
    chunks = [os.read(read_fd, 100_000)]  # a first gulp, then a stall
    time.sleep(2.5)
    while chunk := os.read(read_fd, 1 << 16):
        chunks.append(chunk)
    os.close(read_fd)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    data = b"".join(chunks)
    complete, _, tail = data.rpartition(b"\n")
    lines = complete.split(b"\n") if complete else []
    bad = [line[:80] for line in lines if line and not _is_json(line)]
    assert bad == []
    assert tail == b"" or len(tail) < 2000  # at most one unterminated line, at the very end
    assert len(lines) > 100


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fork_child_writes_its_own_records_once(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json", flush_interval=0.5)
    log = asynclog.get_logger("fork")
    log.info("parent-before-fork")  # still queued at fork time: the child must not write it
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            log.info("child", pid=os.getpid())
            ok = asynclog.flush(5) and asynclog.stats()["written"] == 1
            os._exit(0 if ok else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.info("parent-after-fork")
    asynclog.flush(5)
    messages = [line["message"] for line in read_lines(log_path)]
    assert sorted(messages) == ["child", "parent-after-fork", "parent-before-fork"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fork_while_the_writer_is_inside_a_write_leaves_the_child_a_working_sink(
    log_path: Path,
) -> None:
    # gunicorn forks its workers right after the master logged its start-up lines, when the
    # master's writer may be inside a write: the child must not inherit that write's lock held.
    pipeline = asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("fork")
    with pipeline.sink._lock:  # what the writer thread holds during a write
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                log.info("child")
                os._exit(0 if asynclog.flush(5) and asynclog.stats()["written"] == 1 else 3)
            except BaseException:
                os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [line["message"] for line in read_lines(log_path)] == ["child"]


def test_native_lines_after_shutdown_are_written_through_and_counted(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("late")
    assert asynclog.shutdown(5)

    log.info("after shutdown", n=1)
    log.error("after shutdown", n=2)

    assert [line["n"] for line in read_lines(log_path)] == [1, 2]
    assert_accounted(asynclog.stats(), emitted=2, written=2, queue_depth=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fork_after_shutdown_while_a_line_is_written_through(log_path: Path) -> None:
    # After shutdown() late lines are written through by the caller, under the sink's lock.
    pipeline = asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("fork")
    assert asynclog.shutdown(5)
    with pipeline.sink._lock:  # what a caller writing through holds
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                log.info("child, late")
                os._exit(0)
            except BaseException:
                os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [line["message"] for line in read_lines(log_path)] == ["child, late"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fork_child_notices_carry_the_childs_pid(log_path: Path) -> None:
    # Workers forked from one master share stderr and often one file: `pid` tells their
    # notices apart. A full queue in each process makes each write a drop notice.
    asynclog.configure(sink=str(log_path), format="json", queue_size=10, flush_interval=0.5)
    log = asynclog.get_logger("fork")
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            for i in range(100):
                log.info("child", i=i)
            os._exit(0 if asynclog.flush(5) else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for i in range(100):
        log.info("parent", i=i)
    assert asynclog.flush(5)
    notices = [line for line in read_lines(log_path) if line["logger"] == "asynclog"]
    assert [n["pid"] for n in notices] == [child, os.getpid()]


def test_redaction_at_any_depth(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json", redact_keys={"password", "token"})
    asynclog.get_logger("r").info(
        "login",
        Password="p",
        user={"name": "ann", "TOKEN": "t", "nested": [{"password": "q"}]},
        token_count=3,
    )
    asynclog.flush(5)
    [line] = read_lines(log_path)
    assert line["Password"] == "[REDACTED]"
    assert line["user"] == {
        "name": "ann",
        "TOKEN": "[REDACTED]",
        "nested": [{"password": "[REDACTED]"}],
    }
    assert line["token_count"] == 3


def test_default_redaction_keys_cover_common_secrets(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    logging.getLogger("r").info(
        "h", extra={"headers": {"Authorization": "Bearer x", "Set-Cookie": "s", "api_key": "k"}}
    )
    asynclog.flush(5)
    assert set(read_lines(log_path)[0]["headers"].values()) == {"[REDACTED]"}


def test_block_mode_waits_at_most_block_timeout_then_drops() -> None:
    code = """
        import asynclog, os, sys, time
        asynclog.configure(sink="stdout", format="json", queue_size=100, overflow="block",
                           block_timeout=0.02)
        log = asynclog.get_logger("block")
        worst = 0.0
        for i in range(250):  # ~130 fill the pipe and the queue; each later call waits 20 ms
            t = time.perf_counter()
            log.info("stuck", i=i, pad="p" * 2000)
            worst = max(worst, time.perf_counter() - t)
        s = asynclog.stats()
        os.write(2, f"{worst} {s['dropped_overflow']} {s['emitted'] - s['notices']}\\n".encode())
        asynclog.shutdown(timeout=0.2)
        """

    err = _run_into_unread_pipe(code)
    worst, dropped, emitted = err.decode().splitlines()[0].split()
    assert 0.015 < float(worst) < 0.5  # it did wait, and not for long
    assert int(dropped) >= 20
    assert int(emitted) == 250


def _start_with_stdout_pipe(code: str) -> tuple[subprocess.Popen[bytes], int]:
    """Run a snippet whose stdout is a pipe; returns the process and the pipe's read end."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=write_fd,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    os.close(write_fd)
    return proc, read_fd


def _run_into_unread_pipe(code: str, timeout: float = 120) -> bytes:
    """Run a snippet whose stdout is a pipe nobody reads; returns its stderr."""
    proc, read_fd = _start_with_stdout_pipe(code)
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        os.close(read_fd)
    assert proc.returncode == 0, err
    return err


def test_redaction_holds_whatever_route_a_value_takes(log_path: Path) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("r")
    log.info("object inside", data={"password": "p1", "obj": Opaque()})
    log.info("unencodable inside", data={"password": "p2", (1, 2): 3, "big": 2**70})
    log.bind(ctx={"token": "t1", "n": [1]}).info("bound")
    asynclog.flush(5)
    text = log_path.read_text()
    for secret in ("p1", "p2", "t1"):
        assert f'"{secret}"' not in text
    first, second, third = read_lines(log_path)
    assert first["data"] == {"password": "[REDACTED]", "obj": "<opaque>"}
    assert second["data"]["password"] == "[REDACTED]"
    assert third["ctx"] == {"token": "[REDACTED]", "n": [1]}


def _log_from_threads_throughout_a_stop(path: Path) -> list[int]:
    """Four threads log as fast as they can while the pipeline stops; returns what each sent."""
    asynclog.configure(sink=str(path), format="json")
    log = asynclog.get_logger("during-stop")
    started = threading.Barrier(5)
    stop = threading.Event()
    sent = [0] * 4

    def work(n: int) -> None:
        started.wait()
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            log.info("line", t=n, i=sent[n])
            sent[n] += 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.05)
    asynclog.shutdown(10)
    time.sleep(0.05)  # still logging, now written through
    stop.set()
    for t in threads:
        t.join()
    return sent


def test_records_logged_by_other_threads_throughout_a_stop_are_all_written(
    log_path: Path,
) -> None:
    # Threadpool routes and the server's last lines keep coming while the lifespan shutdown
    # stops the pipeline: none may be left in the queue, unwritten and uncounted.
    for attempt in range(5):
        path = log_path.with_name(f"stop-{attempt}.log")
        sent = _log_from_threads_throughout_a_stop(path)
        assert asynclog.flush(5)
        stats = assert_accounted(asynclog.stats(), queue_depth=0)
        assert stats["emitted"] == sum(sent) + stats["notices"], stats
        lines = read_lines(path)
        assert len(lines) == stats["written"]
        for n in range(4):  # each thread's lines in the order it logged them
            mine = [line["i"] for line in lines if line.get("t") == n]
            assert mine == sorted(mine)
        asynclog.shutdown()
        pipeline = asynclog._pipeline.latest()
        assert pipeline is not None
        pipeline.close()  # the next attempt starts from nothing


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fork_while_another_thread_writes_through_leaves_the_child_a_working_pipeline(
    log_path: Path,
) -> None:
    # After shutdown() a late line is written through on its caller's thread; a fork that lands
    # meanwhile must not hand the child that write's lock held.
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("fork")
    assert asynclog.shutdown(5)
    inside = threading.Event()

    class Slow:
        def __str__(self) -> str:
            inside.set()
            time.sleep(0.5)  # on the writing-through thread, inside the write-through lock
            return "slow"

    late = threading.Thread(target=log.info, args=("late %s", Slow()))
    late.start()
    assert inside.wait(5)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            done = threading.Event()
            threading.Thread(target=lambda: (log.info("child"), done.set()), daemon=True).start()
            os._exit(0 if done.wait(3) else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    late.join()
    assert os.waitstatus_to_exitcode(status) == 0, "the child's first line never got written"
    assert sorted(line["message"] for line in read_lines(log_path)) == ["child", "late slow"]


def test_a_pipeline_goes_through_its_states_in_order(log_path: Path) -> None:
    from asynclog._pipeline import State

    first = asynclog.configure(sink=str(log_path), format="json")
    assert first.state is State.RUNNING
    second = asynclog.configure(sink=str(log_path), format="json")
    assert (first.state, second.state) == (State.CLOSED, State.RUNNING)
    assert asynclog.shutdown(5)
    assert second.state is State.STOPPED
    assert asynclog.shutdown(5)  # a second stop changes nothing
    with pytest.raises(RuntimeError, match="cannot go from"):
        second.start()
    third = asynclog.configure(sink=str(log_path), format="json")
    assert (second.state, third.state) == (State.CLOSED, State.RUNNING)


def test_closing_the_latest_pipeline_takes_the_process_back_to_never_configured(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asynclog._pipeline import State, latest
    from asynclog._queue import QUEUE, Mode
    from asynclog._settings import Settings

    first = asynclog.configure(sink=str(log_path), format="json", queue_size=7, level="ERROR")
    assert asynclog.shutdown(5)
    assert latest() is first and QUEUE.mode is Mode.WRITE_THROUGH  # late lines written through
    first.close()
    assert first.state is State.CLOSED and latest() is None
    defaults = Settings()
    assert QUEUE.mode is Mode.QUEUED
    assert (QUEUE.limit, QUEUE.level, QUEUE.block) == (defaults.queue_size, defaults.level, False)
    other = log_path.with_name("from-env.log")
    monkeypatch.setenv("ASYNCLOG_SINK", str(other))
    monkeypatch.setenv("ASYNCLOG_FORMAT", "json")
    asynclog.get_logger("again").info("afresh")  # starts from the environment, as at first
    second = latest()
    assert second is not None and second is not first and second.running
    assert asynclog.flush(5)
    assert [line["message"] for line in read_lines(other)] == ["afresh"]
    assert_accounted(asynclog.stats(), emitted=1, written=1)
