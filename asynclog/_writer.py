"""The background writer thread: drains the queue in batches, encodes, writes, counts."""

from __future__ import annotations

import bisect
import itertools
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from ._encoder import Encoder, encode_line, format_time
from ._queue import RecordQueue, read_count
from ._sinks import FdSink, SinkTimeout

__all__ = ["Counters", "Writer"]

_MAX_WRITE = 1 << 20  # bytes joined into one write(); whole lines only
_IDLE_WAIT = 1.0  # seconds between housekeeping rounds when nothing is logged
_REPORT_EVERY = 1.0  # seconds between reports of write errors and drops


@dataclass
class Counters:
    """The writer's side of the accounting; callers count `emitted` and overflow drops."""

    written: int = 0
    bytes_written: int = 0
    dropped_write: int = 0
    errors: int = 0
    notices: int = 0
    substituted: int = 0


class Writer(threading.Thread):
    """One per process. Waits up to `flush_interval` to gather a batch, then writes it in as few
    `write()` calls as possible."""

    def __init__(
        self,
        queue: RecordQueue,
        sink: FdSink,
        encoder: Encoder,
        counters: Counters,
        batch_size: int,
        flush_interval: float,
    ) -> None:
        super().__init__(name="asynclog-writer", daemon=True)
        self.queue = queue
        self.sink = sink
        self.encoder = encoder
        self.counters = counters
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.progress = threading.Condition(threading.Lock())
        self.stopping = False
        self.urgent = False
        self.reopen_requested = False
        self.reported_drops = read_count(queue.dropped)
        self._last_drop_notice = 0.0
        self._last_error_report = 0.0
        self._unreported_errors = 0

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        queue = self.queue
        wake = queue.wake
        while True:
            self._housekeeping()
            # Gather a batch for up to flush_interval unless it is full or someone is waiting.
            waiting = self.urgent or self.stopping
            if queue.items and not waiting and len(queue.items) < self.batch_size:
                wake.wait(self.flush_interval)
                wake.clear()
            urgent, self.urgent = self.urgent or self.stopping, False
            while queue.items:
                batch = queue.take(self.batch_size)
                self._notify_drops(urgent)  # the notice goes before the records after the loss
                self._write_batch(batch)
            self._notify_drops(urgent)
            with self.progress:
                self.progress.notify_all()
            if queue.items or self.urgent:
                continue
            if self.stopping:
                break
            queue.idle = True
            if not queue.items and not self.urgent:
                wake.wait(_IDLE_WAIT)
            wake.clear()
            queue.idle = False

    def processed(self) -> int:
        """Records fully handled: written, or dropped for any reason."""
        c = self.counters
        return c.written + c.dropped_write + read_count(self.queue.dropped) - c.notices

    # --- writing ----------------------------------------------------------------------------

    def _write_batch(self, batch: list[tuple[Any, ...]]) -> None:
        encode = self.encoder.encode
        chunks = [encode(record) for record in batch]
        self._write_chunks(chunks)

    def _write_chunks(self, chunks: list[bytes]) -> None:
        start = 0
        while start < len(chunks):
            # Whole lines, at most _MAX_WRITE bytes per write (a single longer line goes alone).
            end, size = start, 0
            while end < len(chunks) and (end == start or size + len(chunks[end]) <= _MAX_WRITE):
                size += len(chunks[end])
                end += 1
            self._write_lines(chunks[start:end])
            start = end

    def _write_lines(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        counters = self.counters
        try:
            self.sink.write(data)
        except (OSError, SinkTimeout) as exc:
            sent = exc.written if isinstance(exc, SinkTimeout) else 0
            ends = list(itertools.accumulate(map(len, lines)))
            done = bisect.bisect_right(ends, sent)
            counters.written += done
            counters.bytes_written += sent
            counters.dropped_write += len(lines) - done
            counters.errors += 1
            self._report_error(exc, len(lines) - done)
            return
        counters.written += len(lines)
        counters.bytes_written += len(data)

    # --- notices ----------------------------------------------------------------------------

    def _notice(self, level: str, message: str, **fields: Any) -> bytes:
        line = {
            "time": format_time(time.time()),
            "level": level,
            "logger": "asynclog",
            "message": message,
            **fields,
        }
        return encode_line(line)

    def _notify_drops(self, force: bool) -> None:
        """When writing resumes, one line says how many records the full queue cost (at most
        once a second, unless a flush or shutdown is waiting)."""
        dropped = read_count(self.queue.dropped)
        if dropped == self.reported_drops:
            return
        now = time.monotonic()
        if now - self._last_drop_notice < _REPORT_EVERY and not force:
            return
        lost = dropped - self.reported_drops
        self.reported_drops = dropped
        self._last_drop_notice = now
        self.counters.notices += 1
        self._write_lines(
            [
                self._notice(
                    "warning", "records dropped: queue full", dropped=lost, dropped_total=dropped
                )
            ]
        )

    def _report_error(self, exc: BaseException, lost: int) -> None:
        """Write errors go to stderr (not the failing sink), at most once a second."""
        self._unreported_errors += 1
        now = time.monotonic()
        if now - self._last_error_report < _REPORT_EVERY:
            return
        self._last_error_report = now
        line = self._notice(
            "error",
            "write to sink failed",
            sink=self.sink.target,
            error=f"{type(exc).__name__}: {exc}",
            errors=self._unreported_errors,
            dropped_total=self.counters.dropped_write,
        )
        self._unreported_errors = 0
        try:
            os.write(2, line)
        except OSError:
            pass

    def _housekeeping(self) -> None:
        try:
            if self.reopen_requested:
                self.reopen_requested = False
                self.sink.open()
            else:
                self.sink.check_rotation(time.monotonic())
        except OSError as exc:
            self.counters.errors += 1
            self._report_error(exc, 0)
