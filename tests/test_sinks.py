"""FdSink on its own: files, pipes and sockets, reopening, partial writes and deadlines."""

from __future__ import annotations

import os
import select
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import asynclog
from asynclog._sinks import FdSink, SinkError, SinkTimeout, _chunk_end, open_sink, report

from conftest import read_lines

# Enough to fill any pipe's buffer (64 KiB on Linux, unless raised).
_FILL = b"x" * 1023 + b"\n"


class _Stream:
    """Stands in for sys.stdout: the sink reads its descriptor from `fileno()`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


@pytest.fixture(name="stdout_pipe")
def _stdout_pipe() -> Iterator[tuple[int, int]]:
    """A fresh pipe, (read end, write end), for `_stdout_sink` to write to."""
    read_fd, write_fd = os.pipe()
    try:
        yield read_fd, write_fd
    finally:
        os.close(read_fd)
        os.close(write_fd)


def _stdout_sink(fd: int) -> FdSink:
    """A "stdout" sink opened while sys.stdout is on `fd` (fd 1 is left alone: pytest
    captures it, and puts its own sys.stdout back between a fixture and the test)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdout", _Stream(fd))
        return FdSink("stdout")


def _drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.set_blocking(fd, True)
    return b"".join(chunks)


def test_a_file_sink_appends_whole_lines(log_path: Path) -> None:
    log_path.write_bytes(b"already there\n")
    sink = FdSink(str(log_path))
    sink.write(b"one\n")
    sink.write(bytearray(b"two\nthree\n"))
    sink.close()
    assert log_path.read_bytes() == b"already there\none\ntwo\nthree\n"
    assert sink.fd == -1 and not sink.isatty


def test_an_unopenable_path_fails_fast_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sink=.*cannot be opened"):
        open_sink(str(tmp_path / "missing-dir" / "app.log"))


def test_a_renamed_file_is_reopened_at_the_path_by_check_rotation(log_path: Path) -> None:
    sink = FdSink(str(log_path))
    sink.write(b"before\n")
    now = time.monotonic()
    assert not sink.check_rotation(now, every=3600.0)  # the same file: kept
    rotated = log_path.with_suffix(".log.1")
    log_path.rename(rotated)
    assert not sink.check_rotation(now + 1.0, every=3600.0)  # checked at most that often
    assert sink.check_rotation(now + 7200.0, every=3600.0)
    sink.write(b"after\n")
    assert (rotated.read_bytes(), log_path.read_bytes()) == (b"before\n", b"after\n")
    sink.close()


def test_a_deleted_file_is_created_again_at_the_next_write(log_path: Path) -> None:
    sink = FdSink(str(log_path))
    sink.write(b"lost with the file\n")
    log_path.unlink()
    sink.write(b"in the new file\n")
    assert log_path.read_bytes() == b"in the new file\n"
    sink.close()


def test_open_reopens_the_path_on_request(log_path: Path) -> None:
    sink = FdSink(str(log_path))
    log_path.rename(log_path.with_suffix(".old"))
    sink.open()
    sink.write(b"here\n")
    assert log_path.read_bytes() == b"here\n"
    sink.close()


def test_a_pipe_is_written_nonblocking_without_changing_stdout(
    stdout_pipe: tuple[int, int],
) -> None:
    read_fd, write_fd = stdout_pipe
    sink = _stdout_sink(write_fd)
    assert sink.fd != write_fd
    assert os.get_blocking(write_fd)  # the process's own description stays blocking
    sink.write(b'{"a":1}\n')
    assert os.read(read_fd, 100) == b'{"a":1}\n'
    sink.close()


def test_a_full_pipe_times_out_at_the_deadline_saying_what_went_out(
    stdout_pipe: tuple[int, int],
) -> None:
    read_fd, write_fd = stdout_pipe
    sink = _stdout_sink(write_fd)
    data = _FILL * 200  # more than the pipe holds
    started = time.monotonic()
    with pytest.raises(SinkTimeout) as raised:
        sink.write(data, deadline=time.monotonic() + 0.2)
    assert 0.15 <= time.monotonic() - started < 5.0
    sent = raised.value.written
    assert 0 < sent < len(data) and sent % len(_FILL) == 0  # whole lines: not torn
    assert not sink.torn
    assert _drain(read_fd) == data[:sent]
    sink.close()


def test_the_sinks_own_deadline_ends_a_write_already_waiting(
    stdout_pipe: tuple[int, int],
) -> None:
    # A stop sets `deadline` while the writer waits on a full pipe: that wait gives up by it.
    sink = _stdout_sink(stdout_pipe[1])
    sink.deadline = time.monotonic() + 0.2
    with pytest.raises(SinkTimeout):
        sink.write(_FILL * 200)
    sink.close()


def test_a_write_cut_in_a_line_is_ended_before_the_next_or_resumed(
    stdout_pipe: tuple[int, int],
) -> None:
    read_fd, write_fd = stdout_pipe
    sink = _stdout_sink(write_fd)
    long_line = b"y" * (2 * 1024 * 1024) + b"\n"  # longer than the pipe: written in pieces
    with pytest.raises(SinkError) as raised:
        sink.write(long_line, deadline=time.monotonic() + 0.2)
    sent = raised.value.written
    assert 0 < sent < len(long_line) and sink.torn and sink.cuts == 1
    assert _drain(read_fd) == long_line[:sent]
    # The rest of that very line, named by `cuts`:
    rest = long_line[sent : sent + 100]  # stands in for the rest of the line
    sink.write(rest + b"\n", resume=1)
    assert _drain(read_fd) == rest + b"\n" and not sink.torn
    # A cut line with no resume: the next write ends it first, so no line swallows another.
    with pytest.raises(SinkError):
        sink.write(long_line, deadline=time.monotonic() + 0.2)
    assert sink.torn and sink.cuts == 2
    _drain(read_fd)
    with pytest.raises(SinkError, match="ended by another write"):
        sink.write(b"stale\n", resume=1)
    sink.write(b"next\n")
    assert _drain(read_fd) == b"\nnext\n" and not sink.torn
    sink.close()


def test_a_socket_is_written_with_whole_lines() -> None:
    ours, theirs = socket.socketpair()
    try:
        sink = _stdout_sink(ours.fileno())
        sink.write(b"one\ntwo\n")
        assert theirs.recv(100) == b"one\ntwo\n"
        assert ours.getblocking()  # MSG_DONTWAIT per send, the socket itself unchanged
        sink.close()
    finally:
        ours.close()
        theirs.close()


def test_chunks_for_a_pipe_end_after_the_last_whole_line_that_fits() -> None:
    line = b"z" * 99 + b"\n"
    data = line * 100
    end = _chunk_end(data, 0)
    assert end <= select.PIPE_BUF and end % len(line) == 0 and end > select.PIPE_BUF - len(line)
    assert _chunk_end(data, len(data) - 10) == len(data)
    long = b"l" * (3 * select.PIPE_BUF) + b"\n" + line
    assert _chunk_end(long, 0) == 3 * select.PIPE_BUF + 1  # a longer line goes alone
    huge = b"h" * (200 * 1024) + b"\n"
    assert _chunk_end(huge, 0) == 64 * 1024  # in pieces of at most _PIPE_CHUNK


def test_a_write_error_says_how_much_went_out() -> None:
    sink = FdSink("/dev/full")
    with pytest.raises(SinkError) as raised:
        sink.write(b"no space\n")
    assert raised.value.written == 0 and isinstance(raised.value.error, OSError)
    sink.close()


def test_report_never_blocks_on_a_full_stderr(stdout_pipe: tuple[int, int]) -> None:
    read_fd, write_fd = stdout_pipe
    assert report(b'{"n":1}\n', fd=write_fd)
    assert os.read(read_fd, 100) == b'{"n":1}\n'
    os.set_blocking(write_fd, False)
    try:
        while True:
            os.write(write_fd, _FILL)
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(write_fd, True)
    started = time.monotonic()
    assert not report(b'{"n":2}\n', fd=write_fd, timeout=0.05)
    assert time.monotonic() - started < 2.0


def test_a_fork_inside_a_write_leaves_the_child_an_unheld_lock(log_path: Path) -> None:
    sink = FdSink(str(log_path))
    with sink._lock:  # held by a thread that does not come along
        sink.reset_after_fork()
    sink.write(b"ok\n")
    assert log_path.read_bytes() == b"ok\n"
    sink.close()


# Through a pipeline, on the C extension and on the pure-Python code (see conftest).


@pytest.mark.usefixtures("implementation")
def test_rename_rotation_loses_nothing(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("rot")
    for i in range(100):
        log.info("before", i=i)
    asynclog.flush(5)
    rotated = log_path.with_suffix(".log.1")
    log_path.rename(rotated)
    for i in range(100, 150):
        log.info("between", i=i)  # may land in the renamed file until the writer notices
    asynclog.reopen()
    asynclog.flush(5)
    for i in range(150, 300):
        log.info("after", i=i)
    asynclog.flush(5)
    seen = [line["i"] for path in (rotated, log_path) for line in read_lines(path)]
    assert sorted(seen) == list(range(300))
    assert [line["i"] for line in read_lines(log_path)][-1] == 299


@pytest.mark.usefixtures("implementation")
def test_rotation_is_noticed_without_reopen(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("rot")
    log.info("first")
    asynclog.flush(5)
    log_path.rename(log_path.with_suffix(".old"))
    log_path.touch()

    time.sleep(1.3)  # the writer checks the path's inode once a second
    log.info("second")
    asynclog.flush(5)
    assert [line["message"] for line in read_lines(log_path)] == ["second"]
