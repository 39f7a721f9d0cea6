"""The background writer thread: drains the queue in batches, encodes, writes, counts."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._encoder import Encoder
from ._fallback import describe_exception, notice_line
from ._queue import RecordQueue, read_count
from ._record import Record
from ._sinks import FdSink, SinkError, report

__all__ = ["Counters", "Writer"]

_IDLE_WAIT = 1.0  # seconds between housekeeping rounds when nothing is logged
_REPORT_EVERY = 1.0  # seconds between reports of write errors and drops
_FINISH_LINE_WAIT = 0.25  # seconds a half-written line may take to complete after a failure


@dataclass
class Counters:
    """The writer's side of the accounting; callers count `emitted` and overflow drops."""

    written: int = 0
    bytes_written: int = 0
    dropped_write: int = 0
    errors: int = 0
    notices: int = 0


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
        on_death: Callable[[], None] | None = None,
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
        # Set when a stop gave up waiting for this thread: it must not take any more records.
        self.abandoned = False
        self.urgent = False
        self.reopen_requested = False
        self.on_death = on_death
        # True once the loop ended as asked; a thread that ends otherwise has died.
        self.finished = False
        # Records taken from the queue and not yet counted as written or dropped.
        self._in_hand = 0
        self.reported_drops = read_count(queue.dropped)
        self._last_drop_notice = 0.0
        self._last_error_report = 0.0
        self._unreported_errors = 0

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """The loop, supervised. Records' own faults are substituted by the encoder; a fault
        of the loop itself (a bug) costs the records in hand, counted as dropped, is reported
        on stderr, and the loop goes on. Should the thread end anyway, the next caller that
        wakes it, or the next flush, starts a new one (`on_death`)."""
        try:
            while not self._loop_once_supervised():
                pass
        finally:
            if not self.finished:
                # Before `idle`: a caller that sees the writer idle must find the reviver.
                self.queue.revive = self.on_death
                self.queue.idle = True

    def _loop_once_supervised(self) -> bool:
        """Run the loop; True when it ended as asked (stop or abandon), False after a fault."""
        try:
            self._loop()
        except BaseException as exc:
            self.counters.dropped_write += self._in_hand
            self._in_hand = 0
            self.counters.errors += 1
            self._report_error(exc, "writer loop failed; it goes on")
            # A fault that repeats must not spin: wait as a batch would.
            self.queue.wake.wait(self.flush_interval)
            return False
        self.finished = True
        return True

    def _loop(self) -> None:
        queue = self.queue
        wake = queue.wake
        busy = False  # the last turn wrote records
        while True:
            self._housekeeping()
            # Gather a batch for up to flush_interval unless it is full or someone is waiting.
            # After a turn that wrote, wait even for an empty queue: under steady load the writer
            # then wakes once per interval on its own, instead of idling after each batch and
            # being woken by the next caller (an Event.set on the event loop, and two extra
            # thread switches to hand the GIL over and back).
            waiting = self.urgent or self.stopping
            if (busy or queue.items) and not waiting and len(queue.items) < self.batch_size:
                wake.wait(self.flush_interval)
                wake.clear()
            urgent, self.urgent = self.urgent or self.stopping, False
            busy = bool(queue.items)
            while queue.items and not self.abandoned:
                batch = queue.take(self.batch_size)
                self._in_hand = len(batch)
                self._notify_drops(urgent)  # the notice goes before the records after the loss
                self._write_batch(batch)
            self._notify_drops(urgent)
            with self.progress:
                self.progress.notify_all()
            if self.abandoned:
                return
            if queue.items or self.urgent:
                continue
            if self.stopping:
                return
            if busy:
                continue
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

    def _write_batch(self, batch: list[Record]) -> None:
        size = self.encoder.slice_size
        for start in range(0, len(batch), size):
            if start:
                # Hand the GIL to the event loop between slices: encoding a whole batch in one
                # go would hold it for the full switch interval (5 ms) and show up in its p99.
                time.sleep(0)
            deadline = self.sink.deadline
            if deadline is not None and time.monotonic() > deadline:
                # Shutting down and out of time: count the rest as lost without encoding it.
                self.counters.dropped_write += len(batch) - start
                self._in_hand = 0
                return
            # One write per slice (~30-150 KB of whole lines).
            records = batch[start : start + size]
            data, ends = self._encode(records)
            self._write_lines(data, ends)
            self._in_hand -= len(ends)

    def _encode(self, records: list[Record]) -> tuple[bytearray, list[int]]:
        data = bytearray()
        try:
            return data, self.encoder.encode_into(records, data)
        except BaseException:
            # The batch encoder itself failed (it never should): one record at a time, through
            # the reference encoder, which substitutes whatever a record throws.
            data = bytearray()
            ends = []
            encode = self.encoder.encode
            for record in records:
                data += encode(record)
                ends.append(len(data))
            return data, ends

    def _write_lines(self, data: bytes | bytearray, ends: list[int]) -> None:
        """Write whole lines; `ends` says where each line of `data` ends."""
        counters = self.counters
        try:
            self.sink.write(data)
        except SinkError as exc:
            sent = exc.written
            done = bisect.bisect_right(ends, sent)
            if sent and self.sink.torn and done < len(ends):  # this write cut a line
                done += self._finish_line(data, sent, ends[done], self.sink.cuts)
            counters.written += done
            counters.bytes_written += sent
            counters.dropped_write += len(ends) - done
            counters.errors += 1
            self._report_error(exc)
            return
        counters.written += len(ends)
        counters.bytes_written += len(data)

    def _finish_line(self, data: bytes | bytearray, sent: int, line_end: int, cut: int) -> int:
        """Part of a line went out before the write failed: try briefly to send the rest of that
        line. Returns 1 if it worked (else the sink ends the line before its next write)."""
        # Even past the shutdown deadline: one line's bytes are worth a short wait, a cut line
        # is a corrupt one.
        deadline = time.monotonic() + _FINISH_LINE_WAIT
        try:
            self.sink.write(data[sent:line_end], deadline=deadline, resume=cut)
        except SinkError as exc:
            self.counters.bytes_written += exc.written
            return 0
        self.counters.bytes_written += line_end - sent
        return 1

    # --- notices ----------------------------------------------------------------------------

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
        notice = notice_line(
            "warning", "records dropped: queue full", dropped=lost, dropped_total=dropped
        )
        self._write_lines(notice, [len(notice)])

    def _report_error(self, exc: BaseException, message: str = "write to sink failed") -> None:
        """Write errors go to stderr (not the failing sink), at most once a second."""
        self._unreported_errors += 1
        now = time.monotonic()
        if now - self._last_error_report < _REPORT_EVERY:
            return
        self._last_error_report = now
        line = notice_line(
            "error",
            message,
            sink=self.sink.target,
            error=describe_exception(exc),
            errors=self._unreported_errors,
            dropped_total=self.counters.dropped_write,
        )
        self._unreported_errors = 0
        report(line)

    def _housekeeping(self) -> None:
        try:
            if self.reopen_requested:
                self.reopen_requested = False
                self.sink.open()
            else:
                self.sink.check_rotation(time.monotonic())
        except OSError as exc:
            self.counters.errors += 1
            self._report_error(exc)
