"""Where lines go: a file descriptor written with bounded waits, never left blocked forever."""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
import sys
import threading
import time

__all__ = ["FdSink", "SinkError", "SinkTimeout", "open_sink", "report"]

# A pipe takes a write of up to PIPE_BUF bytes whole or not at all, so pipes and sockets are
# written in chunks of whole lines that fit: other processes' lines (gunicorn's workers share one
# stdout) never land inside one of ours. A longer line goes alone, in pieces of up to _PIPE_CHUNK.
_PIPE_CHUNK = 64 * 1024
_POLL_STEP = 0.1


class SinkError(Exception):
    """A write failed after `written` bytes of the data went out; `error` says why."""

    def __init__(self, written: int, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.written = written
        self.error = error


class SinkTimeout(SinkError):
    """The sink did not accept data before the deadline."""

    def __init__(self, written: int) -> None:
        super().__init__(written, TimeoutError("sink not writable before the deadline"))


class FdSink:
    """Writes byte batches to one descriptor.

    Files are opened with O_APPEND (so several processes can share one), reopened when the
    path's inode changes, and created again at the next write when deleted. A pipe is written
    through its own non-blocking open file description (opened via /proc), so the process's
    stdout description is never switched to O_NONBLOCK; a socket is written with MSG_DONTWAIT.
    Both get whole lines per write, at most PIPE_BUF bytes when they fit. Waits on a full pipe
    are bounded by a deadline.
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self.path: str | None = None if target in ("stdout", "stderr") else target
        self.fd = -1
        self.isatty = False
        self._sock: socket.socket | None = None
        self._nonblocking = False
        self._identity: tuple[int, int] | None = None
        self._last_check = 0.0
        # Set by shutdown: a monotonic time after which waiting for a full pipe gives up.
        self.deadline: float | None = None
        self._call_deadline: float | None = None
        # True when a failed write stopped in the middle of a line.
        self.torn = False
        self.cuts = 0  # how many times that happened: names the line a resume continues
        self._lock = threading.Lock()
        self.open()

    def reset_after_fork(self) -> None:
        """In a forked child: a fork that landed while the parent's writer was inside a write
        copied its lock held, with no thread left to release it."""
        self._lock = threading.Lock()
        self.deadline = None

    def open(self) -> None:
        """(Re)open the descriptor; raises OSError when the target cannot be opened."""
        if self.path is not None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            info = os.fstat(fd)
            self._replace(fd, nonblocking=False, sock=None)
            self._identity = (info.st_dev, info.st_ino)
            self.isatty = False
            self.torn = False  # a line cut in the previous file cannot be ended in this one
            return
        source = 1 if self.target == "stdout" else 2
        stream = sys.stdout if source == 1 else sys.stderr
        try:
            source = stream.fileno() if stream is not None else source
        except (AttributeError, OSError, ValueError):
            pass
        info = os.fstat(source)
        self.isatty = os.isatty(source)
        if stat.S_ISFIFO(info.st_mode):
            try:
                fd = os.open(f"/proc/self/fd/{source}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                self._replace(os.dup(source), nonblocking=False, sock=None)
            else:
                self._replace(fd, nonblocking=True, sock=None)
            return
        if stat.S_ISSOCK(info.st_mode):
            fd = os.dup(source)
            self._replace(fd, nonblocking=True, sock=socket.socket(fileno=fd))
            return
        self._replace(os.dup(source), nonblocking=False, sock=None)

    def _replace(self, fd: int, *, nonblocking: bool, sock: socket.socket | None) -> None:
        old, old_sock = self.fd, self._sock
        self.fd, self._nonblocking, self._sock = fd, nonblocking, sock
        if old_sock is not None:
            old_sock.detach()
        if old >= 0:
            try:
                os.close(old)
            except OSError:
                pass

    def check_rotation(self, now: float, every: float = 1.0) -> bool:
        """Reopen a file sink whose path now names another file (or none). True if reopened."""
        if self.path is None or now - self._last_check < every:
            return False
        self._last_check = now
        try:
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == self._identity:
                return False
        except FileNotFoundError:
            pass
        self.open()
        return True

    def write(
        self, data: bytes | bytearray | memoryview, deadline: float | None = None, resume: int = 0
    ) -> None:
        """Write all of `data` (waiting at most until `deadline`, else `self.deadline`).

        Raises SinkError (SinkTimeout past the deadline) saying how many bytes of `data` went
        out. If a failed write left a line unfinished, the next write first ends it with a
        newline, so one cut line never swallows the next; `resume=cuts` (the `cuts` value read
        right after the failure) instead sends the rest of that very line, if nothing else was
        written since. Writes from several threads (the writer, and callers writing through
        after a stop) never interleave; one that cannot get its turn by the deadline times out.
        """
        limit = self.deadline if deadline is None else deadline
        wait = -1.0 if limit is None else max(0.0, limit - time.monotonic())
        if not self._lock.acquire(timeout=wait):
            raise SinkTimeout(0)
        try:
            if self.path is not None:
                self._check_file()
            if resume:
                if not self.torn or resume != self.cuts:
                    raise SinkError(0, RuntimeError("the cut line was ended by another write"))
                prefix = 0
            else:
                prefix = 1 if self.torn else 0
            payload = b"\n" + bytes(data) if prefix else bytes(data)
            self._call_deadline = deadline
            try:
                self._write_all(payload)
            except SinkError as exc:
                if exc.written:
                    self.torn = payload[exc.written - 1] != 0x0A
                    self.cuts += self.torn
                exc.written = max(0, exc.written - prefix)
                raise
            self.torn = False
        finally:
            self._lock.release()

    def _check_file(self) -> None:
        """Before a write to a file: one deleted while open (no links left) would swallow every
        later line unseen, so the path is opened again, creating a new file; a truncated file
        has no cut line left to end."""
        try:
            info = os.fstat(self.fd)
            if info.st_nlink == 0:
                self.open()
                return
        except OSError as exc:
            raise SinkError(0, exc) from exc
        if self.torn and info.st_size == 0:
            self.torn = False

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        total = len(view)
        done = 0
        while done < total:
            try:
                if self._sock is not None:
                    end = _chunk_end(data, done)
                    n = self._sock.send(view[done:end], socket.MSG_DONTWAIT)
                elif self._nonblocking:
                    n = os.write(self.fd, view[done : _chunk_end(data, done)])
                else:
                    n = os.write(self.fd, view[done:])
            except BlockingIOError:
                n = 0
            except InterruptedError:
                continue
            except OSError as exc:
                raise SinkError(done, exc) from exc
            if n > 0:
                done += n
                continue
            limit = self.deadline if self._call_deadline is None else self._call_deadline
            remaining = None if limit is None else limit - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise SinkTimeout(done)
            try:
                self._wait_writable(_POLL_STEP if remaining is None else min(_POLL_STEP, remaining))
            except OSError as exc:
                raise SinkError(done, exc) from exc

    def _wait_writable(self, timeout: float) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        for _, events in poller.poll(timeout * 1000):
            if events & (select.POLLERR | select.POLLNVAL):
                raise OSError(
                    errno.EPIPE if events & select.POLLERR else errno.EBADF,
                    "sink descriptor failed while waiting to write",
                )

    def close(self) -> None:
        self._replace(-1, nonblocking=False, sock=None)


def _chunk_end(data: bytes, start: int) -> int:
    """Where the next write to a pipe or socket ends: after the last whole line that fits in
    PIPE_BUF bytes, or, for a longer line, at its end (at most _PIPE_CHUNK bytes on)."""
    end = start + select.PIPE_BUF
    if end >= len(data):
        return len(data)
    cut = data.rfind(b"\n", start, end)
    if cut >= 0:
        return cut + 1
    line_end = data.find(b"\n", end, start + _PIPE_CHUNK)
    return start + _PIPE_CHUNK if line_end < 0 else line_end + 1


def open_sink(target: str) -> FdSink:
    """Open the sink named by the `sink` setting; a bad path fails fast naming the setting."""
    try:
        return FdSink(target)
    except OSError as exc:
        raise ValueError(f"asynclog: sink={target!r} cannot be opened: {exc.strerror}") from exc


def report(line: bytes, fd: int = 2, timeout: float = 0.1) -> bool:
    """Write one short line (asynclog's own notice) to stderr without ever blocking on it: a
    stalled stderr pipe must not hang the writer or the shutdown."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not poller.poll(timeout * 1000):
            return False
        # At most PIPE_BUF bytes: a pipe reported writable takes them in one write.
        return os.write(fd, line[: select.PIPE_BUF]) > 0
    except OSError:
        return False
