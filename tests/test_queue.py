"""RecordQueue on its own: the fast path's attributes, its three modes, taps and counters."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from asynclog._queue import Mode, RecordQueue, read_count

Record = Any  # the queue never looks inside a record: strings stand in for them here


def _queue(maxsize: int = 3, **options: Any) -> RecordQueue:
    """A queue of its own: the process's QUEUE belongs to the pipeline."""
    return RecordQueue(maxsize, **options)


def test_read_count_reads_without_advancing() -> None:
    counter = itertools.count(41)
    assert read_count(counter) == 41
    assert next(counter) == 41
    assert read_count(counter) == 42
    assert read_count(itertools.count()) == 0


def test_queued_mode_keeps_records_in_order_up_to_the_bound_then_drops_and_counts() -> None:
    queue = _queue(3)
    assert queue.mode is Mode.QUEUED and queue.maxsize == queue.limit == 3
    for record in "abcde":
        queue.put(record)
    assert list(queue.items) == ["a", "b", "c"]
    assert (read_count(queue.emitted), read_count(queue.dropped)) == (5, 2)
    assert queue.take(2) == ["a", "b"]
    assert queue.take(10) == ["c"]
    assert queue.take(10) == []


def test_a_put_wakes_an_idle_writer_once() -> None:
    queue = _queue(10)
    queue.idle = True
    queue.put("a")
    assert queue.wake.is_set() and not queue.idle
    queue.wake.clear()
    queue.put("b")  # the writer is awake: no caller pays for another Event.set
    assert not queue.wake.is_set()


def test_a_wake_after_the_writer_died_revives_it_instead() -> None:
    queue = _queue(10)
    revived: list[int] = []
    queue.revive = lambda: revived.append(1)
    queue.idle = True
    queue.put("a")
    queue.put("b")
    assert revived == [1] and queue.revive is None
    assert not queue.wake.is_set()


def test_block_mode_waits_for_space_the_writer_makes() -> None:
    queue = _queue(1, block=True, block_timeout=5.0)
    queue.put("a")
    taker = threading.Timer(0.1, lambda: queue.take(1))
    taker.start()
    started = time.monotonic()
    queue.put("b")  # waits until the timer takes "a"
    taker.join()
    assert time.monotonic() - started >= 0.05
    assert list(queue.items) == ["b"]
    assert read_count(queue.dropped) == 0


def test_block_mode_drops_after_block_timeout() -> None:
    queue = _queue(1, block=True, block_timeout=0.05)
    queue.put("a")
    started = time.monotonic()
    queue.put("b")
    assert 0.04 <= time.monotonic() - started < 2.0
    assert list(queue.items) == ["a"]
    assert (read_count(queue.emitted), read_count(queue.dropped)) == (2, 1)


def test_tapped_mode_shows_every_record_to_the_taps_then_queues_it_within_the_bound() -> None:
    queue = _queue(2)
    seen: list[Record] = []
    tap = seen.append  # remove_tap compares by identity: one bound method for both calls
    queue.add_tap(tap)
    assert queue.mode is Mode.TAPPED and queue.maxsize == 0 and queue.limit == 2
    for record in "abc":
        queue.put(record)
    assert seen == ["a", "b", "c"]  # the dropped one too: the tap sees what was logged
    assert list(queue.items) == ["a", "b"]
    assert read_count(queue.dropped) == 1
    queue.remove_tap(tap)
    assert queue.mode is Mode.QUEUED and queue.maxsize == 2 and queue.taps == ()


def test_taps_nest_and_leave_in_any_order() -> None:
    queue = _queue(10)
    first: list[Record] = []
    second: list[Record] = []
    tap_first, tap_second = first.append, second.append
    queue.add_tap(tap_first)
    queue.put("a")
    queue.add_tap(tap_second)
    queue.put("b")
    queue.remove_tap(tap_first)
    queue.put("c")
    assert (first, second) == (["a", "b"], ["b", "c"])
    assert queue.mode is Mode.TAPPED
    queue.remove_tap(tap_second)
    assert queue.mode is Mode.QUEUED


def test_write_through_mode_hands_every_record_to_the_writer_of_the_mode() -> None:
    queue = _queue(10)
    written: list[Record] = []
    queue.write_through_mode(written.append)
    assert queue.mode is Mode.WRITE_THROUGH and queue.maxsize == 0
    queue.put("a")
    assert written == ["a"] and not queue.items
    assert read_count(queue.emitted) == 1


def test_write_through_while_tapped_shows_the_tap_first() -> None:
    queue = _queue(10)
    order: list[str] = []
    queue.write_through_mode(lambda r: order.append(f"write {r}"))
    queue.add_tap(lambda r: order.append(f"tap {r}"))
    queue.put("a")
    assert order == ["tap a", "write a"]
    assert queue.mode is Mode.WRITE_THROUGH  # taps do not change where records go


def test_queued_mode_again_applies_the_new_bound_and_level() -> None:
    queue = _queue(10)
    queue.write_through_mode(lambda r: None)
    queue.queued_mode(5, True, 0.5, 30)
    assert queue.mode is Mode.QUEUED
    assert (queue.maxsize, queue.limit, queue.block, queue.block_timeout, queue.level) == (
        5, 5, True, 0.5, 30,
    )  # fmt: skip


def test_reset_counters_counts_records_still_queued_as_emitted() -> None:
    queue = _queue(2)
    for record in "abc":
        queue.put(record)
    queue.reset_counters()
    assert (read_count(queue.emitted), read_count(queue.dropped)) == (2, 0)


def test_reset_after_fork_empties_the_queue_and_its_counters() -> None:
    queue = _queue(2)
    queue.put("a")
    queue.idle = True
    queue.revive = lambda: None
    with queue.space:  # a lock another thread held at the fork
        queue.reset_after_fork()
    assert not queue.items and not queue.idle and queue.revive is None
    assert (read_count(queue.emitted), read_count(queue.dropped)) == (0, 0)
    assert queue.space.acquire(timeout=0)
