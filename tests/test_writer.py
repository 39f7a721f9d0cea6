"""The writer thread cannot be stopped by what it writes: faults are substituted, counted, and
survived; a writer that dies anyway is replaced by the next caller or flush. Write errors are
counted and reported, drops are said in the stream, and steady logging does not wake it."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import asynclog
from asynclog._encoder import Encoder
from asynclog._queue import RecordQueue
from asynclog._redact import Redactor
from asynclog._sinks import FdSink
from asynclog._writer import Counters, Writer

from conftest import assert_accounted, read_lines, run_python

pytestmark = pytest.mark.usefixtures("implementation")

# What a value's own code may raise that is not an Exception: the writer must survive each.
NOT_EXCEPTIONS = [KeyboardInterrupt, SystemExit, GeneratorExit]


class RaisingStr:
    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def __str__(self) -> str:
        raise self.error()

    def __repr__(self) -> str:
        return "<RaisingStr>"


class RaisingRepr:
    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def __repr__(self) -> str:
        raise self.error()


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "asynclog-writer"]


def _assert_accounted(**exactly: int) -> dict[str, Any]:
    return assert_accounted(asynclog.stats(), queue_depth=0, **exactly)


@pytest.mark.parametrize("error", NOT_EXCEPTIONS, ids=lambda e: e.__name__)
def test_a_percent_argument_whose_str_raises_does_not_stop_the_writer(
    log_path: Path, error: type[BaseException]
) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("faults")
    log.info("before")
    log.info("bad %s", RaisingStr(error))
    logging.getLogger("std").warning("bad stdlib %s", RaisingStr(error))
    log.info("after")
    assert asynclog.flush(5)
    lines = read_lines(log_path)
    assert [line["message"] for line in lines] == ["before", "bad %s", "bad stdlib %s", "after"]
    for bad in lines[1:3]:
        assert any(error.__name__ in note for note in bad["asynclog.substituted"]), bad
    _assert_accounted(written=4, errors=2)  # each faulty record counted once
    assert len(_writer_threads()) == 1


@pytest.mark.parametrize("error", NOT_EXCEPTIONS, ids=lambda e: e.__name__)
def test_a_field_whose_repr_raises_does_not_stop_the_writer(
    log_path: Path, error: type[BaseException]
) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("faults")
    log.info("bad field", obj=RaisingRepr(error), n=1)
    log.info("after", n=2)
    assert asynclog.flush(5)
    bad, after = read_lines(log_path)
    assert bad["message"] == "bad field" and bad["asynclog.substituted"]
    assert after == {**after, "message": "after", "n": 2}
    _assert_accounted(written=2, errors=1)


def test_a_bug_in_the_writer_loop_costs_only_the_records_in_hand(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("faults")
    write_batch = Writer._write_batch
    failures = []

    def fail_once(self: Writer, batch: list[Any]) -> None:
        if not failures:
            failures.append(len(batch))
            raise SystemExit("a bug")
        write_batch(self, batch)

    monkeypatch.setattr(Writer, "_write_batch", fail_once)
    log.info("lost to the bug")
    assert asynclog.flush(5)
    log.info("written")
    assert asynclog.flush(5)
    assert [line["message"] for line in read_lines(log_path)] == ["written"]
    _assert_accounted(dropped_write=1, errors=1)
    assert failures == [1]
    assert pipeline.writer.is_alive() and len(_writer_threads()) == 1


def _kill_the_writer(monkeypatch: pytest.MonkeyPatch) -> Writer:
    """Make the running writer's thread end as only a bug could: the supervisor's own report
    fails while it handles a fault."""
    pipeline = asynclog.configure(sink="stdout", format="json")
    writer = pipeline.writer

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in the supervisor")

    with monkeypatch.context() as patch:
        patch.setattr(Writer, "_housekeeping", broken)
        patch.setattr(Writer, "_report_error", broken)
        asynclog._pipeline.QUEUE.wake.set()
        writer.join(5)
    assert not writer.is_alive()
    return writer


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_writer_is_replaced_by_the_next_caller(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    dead = _kill_the_writer(monkeypatch)
    log = asynclog.get_logger("revived")
    log.info("after the death", n=1)  # wakes the writer that is no more: a new one starts
    pipeline = asynclog._pipeline.current()
    assert pipeline is not None and pipeline.writer is not dead
    assert pipeline.writer.is_alive()
    assert asynclog.flush(5)
    out, err = capfd.readouterr()
    assert [json.loads(line)["n"] for line in out.splitlines()] == [1]
    notices = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [n["message"] for n in notices] == ["writer thread died; a new one was started"]
    _assert_accounted()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_flush_without_a_timeout_never_waits_on_a_dead_writer(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    _kill_the_writer(monkeypatch)
    queue = asynclog._pipeline.QUEUE
    queue.idle = False  # so no caller revives it: flush must notice by itself
    asynclog.get_logger("revived").info("queued for a dead writer")
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(asynclog.flush()))
    waiter.start()
    waiter.join(10)
    assert result == [True]
    out, _ = capfd.readouterr()
    assert [json.loads(line)["message"] for line in out.splitlines()] == [
        "queued for a dead writer"
    ]
    _assert_accounted()


class RaisingItems(Mapping[str, Any]):
    """A mapping that cannot be copied: the snapshot on the caller fails with what it raises."""

    def __init__(self, error: type[BaseException]) -> None:
        self.error = error

    def __getitem__(self, key: str) -> Any:
        raise self.error()

    def __iter__(self) -> Any:
        raise self.error()

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit], ids=lambda e: e.__name__)
def test_a_call_that_raises_while_capturing_leaves_no_phantom_record(
    log_path: Path, error: type[BaseException]
) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("phantom")
    with pytest.raises(error):
        log.info("never captured", data=RaisingItems(error))
    log.info("captured")
    assert asynclog.flush(2)  # nothing to wait for that will never come
    assert [line["message"] for line in read_lines(log_path)] == ["captured"]
    _assert_accounted(emitted=1)


def test_drop_notice_counts_what_was_lost(log_path: Path) -> None:
    handle = asynclog.configure(sink=str(log_path), format="json", queue_size=10)
    handle.writer.flush_interval = 0.5  # keep the writer asleep while the queue overflows
    log = asynclog.get_logger("d")
    for i in range(100):
        log.info("x", i=i)
    assert asynclog.flush(10)
    lines = read_lines(log_path)
    [notice] = [line for line in lines if line["logger"] == "asynclog"]
    assert notice["dropped"] == asynclog.stats()["dropped_overflow"] >= 80
    assert notice["level"] == "warning"
    assert notice["pid"] == os.getpid()


def test_write_errors_are_counted_and_reported(tmp_path: Path) -> None:
    result = run_python(
        """
        import asynclog, sys
        asynclog.configure(sink="/dev/full", format="json")
        log = asynclog.get_logger("full")
        for i in range(50):
            log.info("x", i=i)
        asynclog.flush(10)
        s = asynclog.stats()
        print(s["errors"], s["dropped_write"], s["written"], s["emitted"], s["dropped"])
        """
    )
    assert result.returncode == 0, result.stderr
    errors, dropped_write, written, emitted, dropped = map(int, result.stdout.split())
    assert errors >= 1 and dropped_write == 50 and written == 0
    assert_accounted({"emitted": emitted, "written": written, "dropped": dropped})
    reports = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert reports and reports[0]["logger"] == "asynclog"
    assert "ENOSPC" in reports[0]["error"] or "No space" in reports[0]["error"]
    assert len(reports) <= 2  # at most once a second


def test_writer_recovers_when_the_sink_does(tmp_path: Path) -> None:
    # A file size limit makes writes fail (EFBIG) like a full disk; truncating the file frees
    # the space: later records are written again, and every lost one was counted.
    path = tmp_path / "limited.log"
    code = f"""
        import asynclog, resource, signal, os
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        asynclog.configure(sink={str(path)!r}, format="json")
        log = asynclog.get_logger("disk")
        for i in range(400):
            log.info("filling", i=i, pad="p" * 100)
        asynclog.flush(10)
        failed = asynclog.stats()
        os.truncate({str(path)!r}, 0)
        log.info("after space came back")
        asynclog.flush(10)
        s = asynclog.stats()
        print(failed["errors"], failed["dropped_write"], s["written"], s["emitted"], s["dropped"])
        """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    errors, dropped_write, written, emitted, dropped = map(int, result.stdout.split())
    assert errors >= 1 and dropped_write > 0
    assert_accounted({"emitted": emitted, "written": written, "dropped": dropped})
    assert [line["message"] for line in read_lines(path)] == ["after space came back"]


def test_under_steady_logging_callers_do_not_wake_the_writer(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asynclog._queue import QUEUE

    asynclog.configure(sink=str(log_path), format="json", flush_interval=0.02)
    log = asynclog.get_logger("steady")
    wakes = []
    set_event = QUEUE.wake.set
    monkeypatch.setattr(QUEUE.wake, "set", lambda: (wakes.append(1), set_event()))

    for i in range(100):  # one line every ~5 ms: several per flush interval, for 0.5 s
        log.info("tick", i=i)
        time.sleep(0.005)
    woken_by_callers = len(wakes)

    assert asynclog.flush(5)
    assert [line["i"] for line in read_lines(log_path)] == list(range(100))
    # The first line wakes the idle writer; from then on it wakes itself once per interval,
    # rather than idling after every batch until the next caller wakes it (~25 times here).
    # A pause longer than the interval (a busy machine) may idle it once or twice more.
    assert woken_by_callers <= 5


# --- the writer on its own: what the pipeline asks of it --------------------------------------


def _records(n: int) -> list[Any]:
    """`n` records captured as a caller captures them, taken back off the process's queue (no
    pipeline runs: the autouse fixture left none)."""
    from asynclog._logger import Logger
    from asynclog._queue import QUEUE

    QUEUE.items.clear()
    log = Logger("unit")
    for i in range(n):
        log.info("record", i=i)
    records = QUEUE.take(n)
    assert len(records) == n
    return records


def _writer(sink: FdSink, queue: RecordQueue | None = None) -> Writer:
    return Writer(
        queue if queue is not None else RecordQueue(),
        sink,
        Encoder(Redactor(frozenset())),
        Counters(),
        batch_size=100,
        flush_interval=0.01,
    )


def test_write_now_writes_and_counts_on_the_calling_thread(log_path: Path) -> None:
    writer = _writer(FdSink(str(log_path)))
    writer.write_now(_records(3))
    assert [line["i"] for line in read_lines(log_path)] == [0, 1, 2]
    c = writer.counters
    assert (c.written, c.dropped_write, c.errors) == (3, 0, 0)
    assert c.bytes_written == log_path.stat().st_size


def test_write_now_counts_a_failed_write_as_lost_and_says_so(
    capfd: pytest.CaptureFixture[str],
) -> None:
    writer = _writer(FdSink("/dev/full"))
    writer.write_now(_records(2))
    c = writer.counters
    assert (c.written, c.dropped_write, c.errors) == (0, 2, 1)
    [report_line] = [json.loads(x) for x in capfd.readouterr().err.splitlines()]
    assert report_line["message"] == "write to sink failed"


def test_stop_writes_what_is_queued_then_the_thread_ends(log_path: Path) -> None:
    queue = RecordQueue()
    writer = _writer(FdSink(str(log_path)), queue)
    queue.items.extend(_records(250))
    writer.start()
    writer.stop(time.monotonic() + 5)
    assert not writer.is_alive()
    assert [line["i"] for line in read_lines(log_path)] == list(range(250))
    assert (writer.counters.written, writer.processed()) == (250, 250)


def test_wait_processed_says_when_the_records_are_written(log_path: Path) -> None:
    queue = RecordQueue()
    writer = _writer(FdSink(str(log_path)), queue)
    writer.flush_interval = 10.0  # only a flush request makes it write before a batch fills
    writer.start()
    try:
        assert writer.wait_processed(0, 0, 0.0)
        for record in _records(5):
            queue.put(record)
        deadline = time.monotonic() + 5
        while not writer.wait_processed(5, 0, 0.05):
            assert time.monotonic() < deadline
        assert len(read_lines(log_path)) == 5
    finally:
        writer.stop(time.monotonic() + 5)


def test_a_stop_abandons_a_writer_stuck_in_a_write_and_counts_what_it_left(
    log_path: Path,
) -> None:
    queue = RecordQueue()
    sink = FdSink(str(log_path))
    writer = _writer(sink, queue)
    records = _records(10)
    with sink._lock:  # another write holds the sink: the writer's own write waits for it
        writer.start()
        queue.put(records[0])
        deadline = time.monotonic() + 10
        while not _inside_sink_write(writer):  # the writer took it and waits for the sink
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for record in records[1:]:
            queue.put(record)
        started = time.monotonic()
        writer.stop(time.monotonic() + 0.1)
        assert 0.5 <= time.monotonic() - started < 5  # its deadline, then the grace
        assert writer.is_alive() and not queue.items
        assert writer.counters.dropped_write == 9  # what was queued is lost, and counted
    writer.join(5)  # the stuck write goes out; the abandoned writer takes nothing more
    assert not writer.is_alive()
    assert [line["i"] for line in read_lines(log_path)] == [0]
    assert (writer.counters.written, writer.processed()) == (1, 10)


def _inside_sink_write(thread: threading.Thread) -> bool:
    frame = sys._current_frames().get(thread.ident or 0)
    return frame is not None and frame.f_code is FdSink.write.__code__


def test_request_reopen_reopens_the_sink_at_the_next_round(log_path: Path) -> None:
    queue = RecordQueue()
    writer = _writer(FdSink(str(log_path)), queue)
    writer.start()
    try:
        rotated = log_path.with_suffix(".log.1")
        log_path.rename(rotated)
        writer.request_reopen()
        deadline = time.monotonic() + 5
        while not log_path.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        queue.put(_records(1)[0])
        while not writer.wait_processed(1, 0, 0.05):
            assert time.monotonic() < deadline
        assert [line["message"] for line in read_lines(log_path)] == ["record"]
        assert rotated.read_bytes() == b""
    finally:
        writer.stop(time.monotonic() + 5)
