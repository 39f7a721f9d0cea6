"""The current pipeline of this process: settings, sink, writer; configure, flush, shutdown."""

from __future__ import annotations

import atexit
import enum
import os
import threading
import time
from typing import Any

from ._encoder import Encoder
from ._fallback import notice_line
from ._logger import Logger
from ._queue import QUEUE, read_count
from ._record import Record
from ._redact import Redactor
from ._settings import Settings, resolve_settings
from ._sinks import open_sink, report
from ._stdlib import AsyncLogHandler, StdlibRouting
from ._writer import Counters, Writer

__all__ = [
    "Pipeline",
    "State",
    "configure",
    "current",
    "flush",
    "get_logger",
    "latest",
    "reopen",
    "shutdown",
    "stats",
]


class State(enum.Enum):
    """Where a pipeline is in its life. `_TRANSITIONS` lists every change there is."""

    RUNNING = "running"  # the writer thread drains the queue
    STOPPING = "stopping"  # stop(): new records wait to be written through; the writer drains
    STOPPED = "stopped"  # no writer: each record is written through on the caller's thread
    CLOSED = "closed"  # replaced by a newer pipeline, its sink released


_TRANSITIONS: dict[State | None, set[State]] = {
    None: {State.RUNNING},  # a new pipeline starts
    State.RUNNING: {State.STOPPING},
    State.STOPPING: {State.STOPPED},
    State.STOPPED: {State.CLOSED},
    State.CLOSED: set(),
}
# In a forked child the writer thread, and any stop in progress, stayed in the parent.
_AFTER_FORK = {
    State.RUNNING: State.RUNNING,  # with a new writer
    State.STOPPING: State.STOPPED,
    State.STOPPED: State.STOPPED,
    State.CLOSED: State.CLOSED,
}


class Pipeline:
    """One configured pipeline: the handle `configure()` and `install()` return.

    Its state changes only through `_enter`; the queue's mode follows the state: queued while
    running, written through from the moment a stop begins.
    """

    def __init__(self, settings: Settings, counters: Counters) -> None:
        self.settings = settings
        self.counters = counters
        self.sink = open_sink(settings.sink)
        console = settings.format == "console" or (settings.format == "auto" and self.sink.isatty)
        self.format = "console" if console else "json"
        self.encoder = Encoder(
            Redactor(settings.redact_keys, settings.redact_depth),
            console=console,
            color=console and self.sink.isatty,
            on_fault=self._count_fault,
            max_line_bytes=settings.max_line_bytes,
        )
        self.handler = AsyncLogHandler()
        self.writer = self._new_writer()
        # What this pipeline (and the ones it replaced) changed in `logging`.
        self.routing = StdlibRouting()
        self.state: State | None = None
        # Held while a record is written through, and through a whole stop: callers that log
        # while the writer drains wait their turn, so each thread's lines stay in order.
        self._through_lock = threading.Lock()
        self._state_lock = threading.Lock()

    def _new_writer(self) -> Writer:
        s = self.settings
        return Writer(
            QUEUE,
            self.sink,
            self.encoder,
            self.counters,
            s.batch_size,
            s.flush_interval,
            on_death=self._revive_writer,
        )

    def __repr__(self) -> str:
        state = self.state.value if self.state is not None else "new"
        return f"<asynclog.Pipeline sink={self.settings.sink!r} format={self.format!r} {state}>"

    @property
    def running(self) -> bool:
        return self.state is State.RUNNING

    def _enter(self, state: State) -> None:
        """The one place a pipeline changes state (a fork aside: see `after_fork_in_child`)."""
        with self._state_lock:
            if state not in _TRANSITIONS[self.state]:
                raise RuntimeError(f"asynclog: pipeline cannot go from {self.state} to {state}")
            self.state = state

    def start(self) -> None:
        s = self.settings
        self._enter(State.RUNNING)
        QUEUE.queued_mode(s.queue_size, s.overflow == "block", s.block_timeout, s.level)
        if s.capture_stdlib:
            self._route_stdlib()
        self.writer.start()

    def _route_stdlib(self) -> None:
        s = self.settings
        self.routing.route_root(self.handler, s.level)
        for name in s.capture_loggers:
            self.routing.capture(name)
        self.set_record_switches()

    def set_record_switches(self) -> None:
        """With `stdlib_caller_info=False`, skip what no other handler reads (see _stdlib);
        with the default, the record switches are the application's (again, after a lean
        pipeline this one replaced)."""
        if not self.settings.capture_stdlib:
            return
        if self.settings.stdlib_caller_info:
            self.routing.full_records()
        else:
            self.routing.lean_records()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record enqueued before the call is written (or dropped)."""
        target = read_count(QUEUE.emitted)
        drops = read_count(QUEUE.dropped)
        deadline = None if timeout is None else time.monotonic() + timeout
        revived = False
        while self.running:
            writer = self.writer
            if not writer.is_alive():
                if revived:
                    return False  # it died again at once: never wait on a dead writer
                self._revive_writer()
                revived = True
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            step = _FLUSH_STEP if remaining is None else max(0.0, min(_FLUSH_STEP, remaining))
            if writer.wait_processed(target, drops, step):
                return True
            if remaining is not None and remaining <= step:
                return False
        # Stopping or stopped: records are written through; a stop in progress is waited for,
        # and records a mode change left in the queue are written now.
        remaining = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._through_lock.acquire(timeout=remaining):
            return False
        try:
            if self.state is State.STOPPED:
                self._write_left_behind()
        finally:
            self._through_lock.release()
        return True

    def stop(self, timeout: float | None = None, restore: bool = True) -> bool:
        """Drain the queue, stop the writer and write later records through; True if
        everything was written in time.

        New records are written through from the moment the stop begins; callers wait (at most
        `timeout`) while the writer drains what was queued before, so nothing is left in the
        queue and each thread's lines stay in order. `restore` gives back what was changed in
        `logging` (see `StdlibRouting`); without it, stdlib records keep coming here too.
        """
        wait = self.settings.shutdown_timeout if timeout is None else timeout
        lost_before = self.counters.dropped_write
        with self._through_lock:  # a stop already in progress is waited for
            if self.state is not State.RUNNING:
                if restore:  # stopped by the lifespan drain, now by shutdown(): give it back
                    self.routing.restore()
                return True
            self._enter(State.STOPPING)
            QUEUE.write_through_mode(self._write_through)
            self.writer.stop(time.monotonic() + wait)
            self._write_left_behind()
            self._enter(State.STOPPED)
        drained = not self.writer.is_alive() and self.counters.dropped_write == lost_before
        self._report_losses()
        if restore:
            self.routing.restore()
        return drained

    def _report_losses(self) -> None:
        """At stop, anything lost is said once on stderr: the sink may be what failed, and the
        in-stream drop notices may not have made it out."""
        stats = self.stats()
        unwritten = len(QUEUE.items)
        if not stats["dropped"] and not unwritten:
            return
        keys = ("dropped", "dropped_overflow", "dropped_write", "emitted", "written")
        line = notice_line(
            "error" if stats["dropped_write"] or unwritten else "warning",
            "records lost before shutdown",
            sink=self.settings.sink,
            unwritten=unwritten,
            **{key: stats[key] for key in keys},
        )
        report(line)

    def _write_through(self, record: Record) -> None:
        """A stopped pipeline writes each record on the caller's thread: the process is
        ending, and the server's last lines (after the lifespan shutdown) must not be lost.
        The sink keeps these and an abandoned writer's last write from interleaving."""
        if not self._through_lock.acquire(timeout=self.settings.shutdown_timeout + 1.0):
            # A stop that never ends (a writer blocked on its own log call): lost, counted.
            self.counters.dropped_write += 1
            self.counters.errors += 1
            return
        try:
            self._write_left_behind()
            self.writer.write_now([record])
        finally:
            self._through_lock.release()

    def _write_left_behind(self) -> None:
        """Records a caller appended while the mode changed under it (held by the caller)."""
        while QUEUE.items:
            self.writer.write_now(QUEUE.take(len(QUEUE.items)))

    def _count_fault(self) -> None:
        self.counters.errors += 1

    def _revive_writer(self) -> None:
        """The writer thread ended without being stopped (a bug): say so once, start another."""
        with self._state_lock:
            if self.state is not State.RUNNING or self.writer.is_alive():
                return
            report(
                notice_line(
                    "error",
                    "writer thread died; a new one was started",
                    written=self.counters.written,
                    dropped_write=self.counters.dropped_write,
                )
            )
            self.writer = self._new_writer()
            self.writer.start()

    def close(self) -> None:
        """Release the sink of a stopped pipeline. `configure()` closes the pipeline it
        replaces; closing the latest one (after `shutdown()`) takes the process back to where
        it started: no pipeline, the queue at its defaults (records wait there for the next
        one), and the next `get_logger()` starts afresh from the environment."""
        global _current
        with _lock:
            with self._through_lock:
                self._enter(State.CLOSED)
                self.sink.close()
            if _current is self:
                defaults = Settings()
                QUEUE.queued_mode(
                    defaults.queue_size, False, defaults.block_timeout, defaults.level
                )
                _current = None

    def stats(self) -> dict[str, Any]:
        return _collect(self.counters)

    def after_fork_in_child(self, counters: Counters) -> None:
        """A forked child gets its own empty queue, fresh locks and, if running, a new
        writer; nothing is written twice. The locks may have been held by a thread that did
        not come along (the writer inside a write, a caller writing through, a stop)."""
        self.counters = counters
        self._through_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self.sink.reset_after_fork()
        if self.state is not None:
            self.state = _AFTER_FORK[self.state]
        self.writer = self._new_writer()
        if self.state is State.RUNNING:
            self.writer.start()
        elif self.state is State.STOPPED:
            QUEUE.write_through_mode(self._write_through)


# The latest pipeline of this process, running or stopped (a stopped one writes late records
# through until the next configure()).
_current: Pipeline | None = None
_FLUSH_STEP = 0.05  # seconds between a flush's checks that the pipeline still runs
# Counters outlive a pipeline: reconfiguring carries them over, and stats() still reads them after
# shutdown.
_last_counters = Counters()
_lock = threading.RLock()


def current() -> Pipeline | None:
    """The running pipeline, if any."""
    pipeline = _current
    return pipeline if pipeline is not None and pipeline.running else None


def latest() -> Pipeline | None:
    """The latest pipeline, running or stopped (writing late records through), if any."""
    return _current


def configure(**settings: Any) -> Pipeline:
    """Route logging (native and stdlib) through a non-blocking pipeline; see the README.

    Idempotent: a second call drains and replaces the first pipeline, handlers never duplicate.
    Settings not given come from ASYNCLOG_* variables, then defaults. Returns the handle.
    """
    core, _ = resolve_settings(settings, core_only=True)
    return start_pipeline(core)


# True while a pipeline is made (under _lock): the AsyncLogHandler it makes must not start
# another one.
_building = False


def start_pipeline(core: Settings) -> Pipeline:
    global _current, _last_counters, _building
    with _lock:
        previous = _current
        if previous is None or not previous.running:
            # A fresh start after shutdown (or the first one) counts from zero.
            _last_counters = Counters()
            QUEUE.reset_counters()
        _building = True
        try:
            # Opens the sink: fails before changing anything.
            pipeline = Pipeline(core, _last_counters)
        finally:
            _building = False
        if previous is not None:
            previous.stop(restore=False)
            # What to give back stays what it was at first, and is the new pipeline's to give
            # back: stopping the old handle later must not undo the running one's routing.
            pipeline.routing, previous.routing = previous.routing, StdlibRouting()
        pipeline.start()  # the queue is queued again: records wait for the new writer
        _current = pipeline
        if previous is not None:
            previous.close()
        return pipeline


def get_logger(name: str | None = None) -> Logger:
    """A native logger. If asynclog was never configured in this process, this starts it from
    the environment for native lines only: the stdlib's configuration is left as it is (only
    `configure()` and `install()` capture it). After `shutdown()`, records are written through."""
    ensure_started()
    return Logger(name or "root")


def ensure_started() -> None:
    """Start asynclog from the environment for native lines only, if this process never
    configured it (the stdlib's configuration is left as it is)."""
    if _current is None:
        with _lock:  # another thread's configure() under way is waited for
            if _current is None and not _building:  # _building: this thread is making one
                configure(capture_stdlib=False)


def flush(timeout: float | None = None) -> bool:
    """Write everything enqueued before this call; False if `timeout` passed first."""
    pipeline = _current
    return True if pipeline is None else pipeline.flush(timeout)


def shutdown(timeout: float | None = None) -> bool:
    """Flush, stop the writer thread and give back what was changed in `logging`."""
    with _lock:
        pipeline = _current
        return True if pipeline is None else pipeline.stop(timeout)


def reopen() -> None:
    """Reopen a file sink (after external log rotation) at the writer's next round."""
    pipeline = current()
    if pipeline is not None:
        pipeline.writer.request_reopen()


def stats() -> dict[str, Any]:
    """Counters since the process (or forked child) started: emitted == written + dropped after a
    flush."""
    return _collect(_last_counters)


def _collect(c: Counters) -> dict[str, Any]:
    overflow = read_count(QUEUE.dropped)
    return {
        "emitted": read_count(QUEUE.emitted) + c.notices,
        "written": c.written,
        "dropped": overflow + c.dropped_write,
        "dropped_overflow": overflow,
        "dropped_write": c.dropped_write,
        "errors": c.errors,
        "queue_depth": len(QUEUE.items),
        "queue_size": QUEUE.limit,
        "bytes_written": c.bytes_written,
        "notices": c.notices,
    }


def _after_fork_in_child() -> None:
    global _lock, _last_counters
    _lock = threading.RLock()
    QUEUE.reset_after_fork()
    _last_counters = Counters()
    if _current is not None:
        _current.after_fork_in_child(_last_counters)


def _at_exit() -> None:
    shutdown()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
