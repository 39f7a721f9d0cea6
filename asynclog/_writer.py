"""The background writer thread: drains the queue in batches, encodes, writes, counts."""

from __future__ import annotations

import bisect
import enum
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
_STOP_GRACE = 0.5  # seconds past its deadline a stop waits for a write in progress to give up
_WRITE_THROUGH_WAIT = 0.5  # seconds a record written through may wait for the sink


@dataclass
class Counters:
    """The writer's side of the accounting; callers count `emitted` and overflow drops."""

    written: int = 0
    bytes_written: int = 0
    dropped_write: int = 0
    errors: int = 0
    notices: int = 0


class _Phase(enum.Enum):
    """What the writer thread was asked to do; only `request_stop` and `stop` change it."""

    RUNNING = "running"  # gather batches and write them
    STOPPING = "stopping"  # write what is queued, then end
    ABANDONED = "abandoned"  # a stop gave up waiting: take no more records, end


class Writer(threading.Thread):
    """One per process. Waits up to `flush_interval` to gather a batch, then writes it in as few
    `write()` calls as possible.

    The pipeline talks to it through `request_flush`, `wait_processed`, `request_reopen` and
    `stop`; its state is its own. `write_now` is the same write-and-count path the thread uses,
    for records written on the caller's thread once the thread is stopped.
    """

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
        self.on_death = on_death
        self._phase = _Phase.RUNNING
        # One-shot requests, cleared when served: someone waits for what is queued (a flush),
        # the sink is to be reopened.
        self._urgent = False
        self._reopen = False
        # Notified after each round: `wait_processed` waits on it.
        self._progress = threading.Condition(threading.Lock())
        # Records taken from the queue and not yet counted as written or dropped.
        self._in_hand = 0
        self._reported_drops = read_count(queue.dropped)
        self._last_drop_notice = 0.0
        self._last_error_report = 0.0
        self._unreported_errors = 0

    # --- what the pipeline asks ---------------------------------------------------------------

    def request_flush(self) -> None:
        """Write what is queued now, without waiting for a batch to fill."""
        self._urgent = True
        self.queue.wake.set()

    def request_reopen(self) -> None:
        """Reopen the sink (after external log rotation) at the next round."""
        self._reopen = True
        self.queue.wake.set()

    def processed(self) -> int:
        """Records fully handled: written, or dropped for any reason."""
        c = self.counters
        return c.written + c.dropped_write + read_count(self.queue.dropped) - c.notices

    def wait_processed(self, emitted: int, dropped: int, timeout: float) -> bool:
        """Whether the first `emitted` records are handled and the first `dropped` overflow
        drops reported in the stream, waiting up to `timeout` (one round) for it."""
        with self._progress:
            if self._has_processed(emitted, dropped):
                return True
            self.request_flush()
            self._progress.wait(timeout)
            return self._has_processed(emitted, dropped)

    def _has_processed(self, emitted: int, dropped: int) -> bool:
        return self.processed() >= emitted and self._reported_drops >= dropped

    def stop(self, deadline: float) -> None:
        """Write what is queued and end, no write waiting for the sink past `deadline`. A
        thread still stuck in a write after that (its sink stuck too) is abandoned: it takes
        nothing more, and what is still queued is counted as lost."""
        # On the sink, not passed to each write: a write already waiting gives up by it too.
        self.sink.deadline = deadline
        self._phase = _Phase.STOPPING
        self.queue.wake.set()
        self.join(max(0.0, deadline - time.monotonic()) + _STOP_GRACE)
        if self.is_alive():
            self._phase = _Phase.ABANDONED
            self.counters.dropped_write += len(self.queue.take(len(self.queue.items)))

    def write_now(self, records: list[Record]) -> None:
        """Write `records` on the calling thread, waiting at most `_WRITE_THROUGH_WAIT` for the
        sink (the thread is stopped: the pipeline writes through). Counted like the thread's;
        an exception that escapes (KeyboardInterrupt on the main thread) counts them as lost."""
        try:
            self._write(records, time.monotonic() + _WRITE_THROUGH_WAIT)
        except BaseException:
            self.counters.dropped_write += len(records)
            self.counters.errors += 1
            raise

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """The loop, supervised. Records' own faults are substituted by the encoder; a fault
        of the loop itself (a bug) costs the records in hand, counted as dropped, is reported
        on stderr, and the loop goes on. Should the thread end anyway, the next caller that
        wakes it, or the next flush, starts a new one (`on_death`)."""
        finished = False  # the loop ended as asked; a thread that ends otherwise has died
        try:
            while not finished:
                finished = self._loop_once_supervised()
        finally:
            if not finished:
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
        return True

    def _loop(self) -> None:
        """Rounds of: housekeeping, gather a batch, write everything queued, say so; then end
        if asked, go round again if there is more, or sleep until a caller wakes it."""
        queue = self.queue
        busy = False  # the last round wrote records
        while True:
            self._housekeeping()
            if busy or queue.items:
                self._gather()
            hurry = self._urgent or self._phase is not _Phase.RUNNING
            self._urgent = False
            busy = bool(queue.items)
            self._drain(hurry)
            if self._phase is _Phase.ABANDONED:
                return
            if queue.items or self._urgent:
                continue
            if self._phase is _Phase.STOPPING:
                return
            if not busy:
                self._sleep()

    def _gather(self) -> None:
        """Wait up to flush_interval for a batch to fill, unless it is full or someone waits.
        The loop gathers after a round that wrote even when the queue is empty: under steady
        load the writer then wakes once per interval on its own, instead of idling after each
        batch and being woken by the next caller (an Event.set on the event loop, and two extra
        thread switches to hand the GIL over and back)."""
        if self._urgent or self._phase is not _Phase.RUNNING:
            return
        if len(self.queue.items) < self.batch_size:
            self.queue.wake.wait(self.flush_interval)
            self.queue.wake.clear()

    def _drain(self, hurry: bool) -> None:
        """Write batches until the queue is empty, then tell whoever waits in `wait_processed`.
        `hurry`: someone waits, so a drop notice is not held back."""
        queue = self.queue
        while queue.items and self._phase is not _Phase.ABANDONED:
            batch = queue.take(self.batch_size)
            self._in_hand = len(batch)
            self._notify_drops(hurry)  # the notice goes before the records after the loss
            self._write_batch(batch)
        self._notify_drops(hurry)
        with self._progress:
            self._progress.notify_all()

    def _sleep(self) -> None:
        """Nothing to do: sleep until a caller wakes the writer (`queue.idle` tells callers to),
        or the next housekeeping round."""
        queue = self.queue
        queue.idle = True
        if not queue.items and not self._urgent:
            queue.wake.wait(_IDLE_WAIT)
        queue.wake.clear()
        queue.idle = False

    # --- writing ----------------------------------------------------------------------------

    def _write_batch(self, batch: list[Record]) -> None:
        """The thread's batch, one slice per write."""
        size = self.encoder.slice_size
        for start in range(0, len(batch), size):
            if start:
                # Hand the GIL to the event loop between slices: encoding a whole batch in one
                # go would hold it for the full switch interval (5 ms) and show up in its p99.
                time.sleep(0)
            records = batch[start : start + size]
            self._write(records, self.sink.deadline)
            self._in_hand -= len(records)

    def _write(self, records: list[Record], deadline: float | None) -> None:
        """The one path from records to lines: encode, write in one call, count each record as
        written or dropped_write. Past `deadline` (shutting down, out of time) the records are
        counted as lost without being encoded."""
        if deadline is not None and time.monotonic() > deadline:
            self.counters.dropped_write += len(records)
            return
        data, ends = self._encode(records)
        self._write_lines(data, ends, deadline)

    def _encode(self, records: list[Record]) -> tuple[bytearray, list[int]]:
        data = bytearray()
        try:
            return data, self.encoder.encode_into(records, data)
        except KeyboardInterrupt:  # on a caller writing through: the caller's, not ours
            raise
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

    def _write_lines(
        self, data: bytes | bytearray, ends: list[int], deadline: float | None = None
    ) -> None:
        """Write whole lines and count them; `ends` says where each line of `data` ends, and
        `deadline` overrides the sink's."""
        counters = self.counters
        try:
            self.sink.write(data, deadline)
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
        if dropped == self._reported_drops:
            return
        now = time.monotonic()
        if now - self._last_drop_notice < _REPORT_EVERY and not force:
            return
        lost = dropped - self._reported_drops
        self._reported_drops = dropped
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
            if self._reopen:
                self._reopen = False
                self.sink.open()
            else:
                self.sink.check_rotation(time.monotonic())
        except OSError as exc:
            self.counters.errors += 1
            self._report_error(exc)
