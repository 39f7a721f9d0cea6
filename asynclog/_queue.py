"""The bounded record queue between callers and the writer thread, with exact counters."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["RecordQueue", "read_count"]


def read_count(counter: itertools.count[int]) -> int:
    """The next value of an `itertools.count` without advancing it."""
    # `next()` on a count is atomic under the GIL, so counting stays exact across threads without a
    # lock; its repr ("count(N)") is the portable way to read the value back.
    return int(repr(counter)[6:-1])


class RecordQueue:
    """A bounded FIFO of captured records.

    `put` never blocks in drop mode: a full queue drops the new record and counts it. In block mode
    it waits up to `block_timeout` for space, then drops. Only the writer thread takes records out.
    """

    def __init__(self, maxsize: int = 20_000, block: bool = False, block_timeout: float = 0.25):
        self.items: deque[tuple[Any, ...]] = deque()
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
        # Set by a stopped pipeline: records are written on the caller's thread instead.
        self.write_through: Callable[[tuple[Any, ...]], None] | None = None

    def put(self, record: tuple[Any, ...]) -> None:
        """Enqueue one record (the caller's side)."""
        next(self.emitted)
        items = self.items
        if len(items) < self.maxsize:
            items.append(record)
            if self.idle:
                # Only the first caller wakes the writer: Event.set takes a lock and notifies,
                # and until the writer gets the GIL every later caller would pay for it again.
                self.idle = False
                self.wake.set()
        else:
            self.overflow(record)

    def overflow(self, record: tuple[Any, ...]) -> None:
        """The queue was full: drop (counted), or in block mode wait for space first. In
        write-through mode `maxsize` is 0, so every record, however it was put, comes here."""
        if self.write_through is not None:
            self.write_through(record)
        elif self.block:
            self._put_blocking(record)
        else:
            next(self.dropped)

    def _put_blocking(self, record: tuple[Any, ...]) -> None:
        deadline = time.monotonic() + self.block_timeout
        self.wake.set()
        with self.space:
            while len(self.items) >= self.maxsize:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    next(self.dropped)
                    return
                self.space.wait(remaining)
            self.items.append(record)

    def take(self, limit: int) -> list[tuple[Any, ...]]:
        """Remove and return up to `limit` records (the writer's side)."""
        items = self.items
        popleft = items.popleft
        batch = [popleft() for _ in range(min(limit, len(items)))]
        if self.block and batch:
            with self.space:
                self.space.notify_all()
        return batch

    def start_writing_through(self, write: Callable[[tuple[Any, ...]], None]) -> None:
        """From now on every record (already counted as emitted) goes to `write`."""
        self.write_through = write
        self.maxsize = 0

    def stop_writing_through(self, maxsize: int) -> None:
        self.write_through = None
        self.maxsize = maxsize

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
        self.wake = threading.Event()
        self.space = threading.Condition(threading.Lock())


# The one queue of this process: loggers and the stdlib handler put into it, the pipeline's writer
# drains it. `configure()` changes its limits in place, so loggers made earlier keep working.
QUEUE = RecordQueue()
