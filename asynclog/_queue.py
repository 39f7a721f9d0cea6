"""The bounded record queue between callers and the writer thread, with exact counters."""

from __future__ import annotations

import enum
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the record module's guard (_compat) imports this one
    from ._record import Record

__all__ = ["QUEUE", "Mode", "RecordQueue", "read_count"]


def read_count(counter: itertools.count[int]) -> int:
    """The next value of an `itertools.count` without advancing it."""
    # `next()` on a count is atomic under the GIL, so counting stays exact across threads without a
    # lock; its repr ("count(N)") is the portable way to read the value back.
    return int(repr(counter)[6:-1])


class Mode(enum.Enum):
    """Where a put that finds no room (`len(items) >= maxsize`) sends its record."""

    QUEUED = "queued"  # the queue is full: drop the record, or wait for space in block mode
    TAPPED = "tapped"  # `maxsize` is 0: every record reaches the taps, then the queue
    WRITE_THROUGH = "write-through"  # `maxsize` is 0: every record is written on its caller


class RecordQueue:
    """A bounded FIFO of captured records; only the writer thread takes them out.

    The fast path of a put, inlined by the level methods (in C and in Python), is: count it in
    `emitted`; if `len(items) < maxsize`, append it, and if the writer is `idle`, call
    `wake_writer()`; otherwise call `overflow(record)`. C reads these attributes by name, so
    they keep their names and meanings. Everything else happens in `overflow`, by `mode`:

    - `Mode.QUEUED`: `maxsize` is `limit`, the configured bound, so `overflow` means full: the
      record is dropped and counted in `dropped`, or in block mode (`block`) waits up to
      `block_timeout` for space first.
    - `Mode.TAPPED` (`asynclog.testing.capture_logs`): `maxsize` is 0, so every record reaches
      `overflow`, which hands it to each tap, then queues it as `Mode.QUEUED` would have.
    - `Mode.WRITE_THROUGH` (a pipeline stopping or stopped): `maxsize` is 0 and every record goes
      to the taps, if any, then to the pipeline's `write_through` on the caller's thread.

    The pipeline changes the mode with `queued_mode`/`write_through_mode`; taps come and go
    with `add_tap`/`remove_tap`, whatever the mode.
    """

    def __init__(self, maxsize: int = 20_000, block: bool = False, block_timeout: float = 0.25):
        self.items: deque[Record] = deque()
        self.limit = maxsize
        self.maxsize = maxsize
        self.block = block
        self.block_timeout = block_timeout
        self.level = 20
        self.emitted = itertools.count()
        self.dropped = itertools.count()
        # The writer sets `idle` before sleeping without a deadline; only then do callers wake it.
        self.idle = False
        self.wake = threading.Event()
        self.space = threading.Condition(threading.Lock())
        self.mode = Mode.QUEUED
        # The mode's case of `overflow`: `_when_full`, `_when_tapped` or `_write_through`.
        self._route_overflow: Callable[[Record], None] = self._when_full
        # In write-through mode: writes a record on the caller's thread.
        self._write_through: Callable[[Record], None] | None = None
        # Callables that see every record on the caller's thread before it goes on its way.
        self.taps: tuple[Callable[[Record], None], ...] = ()
        # Left by a writer thread that died: the next wake starts a new one instead.
        self.revive: Callable[[], None] | None = None

    def put(self, record: Record) -> None:
        """Enqueue one record (the caller's side)."""
        next(self.emitted)
        items = self.items
        if len(items) < self.maxsize:
            items.append(record)
            if self.idle:
                self.wake_writer()
        else:
            self.overflow(record)

    def wake_writer(self) -> None:
        """Wake the idle writer. Only the first caller after it went idle does: Event.set takes
        a lock and notifies, and until the writer gets the GIL every later caller would pay for
        it again. A writer that died (it only does through a bug) is replaced here."""
        self.idle = False
        revive, self.revive = self.revive, None
        if revive is not None:
            revive()
        else:
            self.wake.set()

    def overflow(self, record: Record) -> None:
        """A put found no room under `maxsize`: the taps see the record, then the mode's case
        (see the class docstring) takes it."""
        for tap in self.taps:
            tap(record)
        self._route_overflow(record)

    def _when_full(self, record: Record) -> None:
        """Queued mode, no room: drop (counted), or in block mode wait for space first."""
        if self.block:
            self._put_blocking(record)
        else:
            next(self.dropped)

    def _when_tapped(self, record: Record) -> None:
        """Tapped mode: the record takes the way a put in queued mode would have."""
        if len(self.items) < self.limit:
            self.items.append(record)
            if self.idle:
                self.wake_writer()
        else:
            self._when_full(record)

    def _put_blocking(self, record: Record) -> None:
        deadline = time.monotonic() + self.block_timeout
        self.wake.set()
        with self.space:
            while len(self.items) >= self.limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    next(self.dropped)
                    return
                self.space.wait(remaining)
            self.items.append(record)

    def take(self, limit: int) -> list[Record]:
        """Remove and return up to `limit` records (the writer's side)."""
        items = self.items
        popleft = items.popleft
        batch = [popleft() for _ in range(min(limit, len(items)))]
        if self.block and batch:
            with self.space:
                self.space.notify_all()
        return batch

    def queued_mode(self, maxsize: int, block: bool, block_timeout: float, level: int) -> None:
        """Records wait here for the writer thread, at most `maxsize` of them."""
        self.block = block
        self.block_timeout = block_timeout
        self.level = level
        self._write_through = None
        self.limit = maxsize
        self._route()

    def write_through_mode(self, write: Callable[[Record], None]) -> None:
        """Every record from now on (already counted as emitted) goes to `write`."""
        self._write_through = write
        self._route()

    def add_tap(self, tap: Callable[[Record], None]) -> None:
        """Hand every record put from now on to `tap` too, on the caller's thread, before it
        goes on its way; whatever the mode, which may change meanwhile. A tap must not raise."""
        self.taps = (*self.taps, tap)
        self._route()

    def remove_tap(self, tap: Callable[[Record], None]) -> None:
        self.taps = tuple(t for t in self.taps if t is not tap)
        self._route()

    def _route(self) -> None:
        """Set `mode`, its case of `overflow`, and the `maxsize` that sends puts there."""
        if self._write_through is not None:
            self.mode, self._route_overflow = Mode.WRITE_THROUGH, self._write_through
        elif self.taps:
            self.mode, self._route_overflow = Mode.TAPPED, self._when_tapped
        else:
            self.mode, self._route_overflow = Mode.QUEUED, self._when_full
        self.maxsize = self.limit if self.mode is Mode.QUEUED else 0

    def reset_counters(self) -> None:
        """Count from zero; records still queued count as emitted."""
        self.emitted = itertools.count(len(self.items))
        self.dropped = itertools.count()

    def reset_after_fork(self) -> None:
        """Give a forked child an empty queue, fresh counters and unheld locks."""
        self.items = deque()
        self.emitted = itertools.count()
        self.dropped = itertools.count()
        self.idle = False
        self.revive = None
        self.wake = threading.Event()
        self.space = threading.Condition(threading.Lock())


# The one queue of this process: loggers and the stdlib handler put into it, the pipeline's writer
# drains it. The pipeline changes its limits and mode in place, so loggers made earlier keep
# working.
QUEUE = RecordQueue()
