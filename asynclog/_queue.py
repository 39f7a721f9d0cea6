"""The bounded record queue between callers and the writer thread, with exact counters."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the record module's guard (_compat) imports this one
    from ._record import Record

__all__ = ["QUEUE", "RecordQueue", "read_count"]


def read_count(counter: itertools.count[int]) -> int:
    """The next value of an `itertools.count` without advancing it."""
    # `next()` on a count is atomic under the GIL, so counting stays exact across threads without a
    # lock; its repr ("count(N)") is the portable way to read the value back.
    return int(repr(counter)[6:-1])


class RecordQueue:
    """A bounded FIFO of captured records.

    `put` never blocks in drop mode: a full queue drops the new record and counts it. In block mode
    it waits up to `block_timeout` for space, then drops. Only the writer thread takes records out.

    Two modes, switched only by the pipeline's state changes (see `_pipeline.State`): queued, and
    write-through, where `maxsize` is 0 so that every record, however it was put (the level
    methods inline `put`), reaches `overflow()` and from there `write_through`. `limit` is the
    configured bound; `maxsize`, what a put compares with, is also 0 while taps are set
    (`asynclog.testing.capture_logs`): `overflow()` hands each record to them, then on its way.
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
        # In write-through mode: writes a record on the caller's thread.
        self.write_through: Callable[[Record], None] | None = None
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
        """The queue was full: drop (counted), or in block mode wait for space first. In
        write-through mode, and while tapped, every record comes here."""
        for tap in self.taps:
            tap(record)
        if self.write_through is not None:
            self.write_through(record)
        elif self.taps and len(self.items) < self.limit:
            self.items.append(record)
            if self.idle:
                self.wake_writer()
        elif self.block:
            self._put_blocking(record)
        else:
            next(self.dropped)

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
        """Records wait here for the writer thread."""
        self.block = block
        self.block_timeout = block_timeout
        self.level = level
        self.write_through = None
        self.limit = maxsize
        self._route()

    def write_through_mode(self, write: Callable[[Record], None]) -> None:
        """Every record from now on (already counted as emitted) goes to `write`."""
        self.write_through = write
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
        self.maxsize = 0 if self.write_through is not None or self.taps else self.limit

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
