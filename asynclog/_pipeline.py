"""The current pipeline of this process: settings, sink, writer; configure, flush, shutdown."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

from ._encoder import Encoder, notice_line
from ._logger import Logger
from ._queue import QUEUE, read_count
from ._redact import Redactor
from ._settings import Settings, resolve_settings
from ._sinks import SinkError, open_sink, report
from ._stdlib import AsyncLogHandler
from ._writer import Counters, Writer

__all__ = ["Pipeline", "configure", "current", "flush", "get_logger", "reopen", "shutdown", "stats"]


class Pipeline:
    """One configured pipeline: the handle `configure()` and `install()` return."""

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
        )
        self.handler = AsyncLogHandler()
        self.writer = self._new_writer()
        self._previous_root: tuple[list[logging.Handler], int] | None = None
        self.stopped = False

    def _new_writer(self) -> Writer:
        s = self.settings
        return Writer(QUEUE, self.sink, self.encoder, self.counters, s.batch_size, s.flush_interval)

    def __repr__(self) -> str:
        return f"<asynclog.Pipeline sink={self.settings.sink!r} format={self.format!r}>"

    def start(self) -> None:
        s = self.settings
        QUEUE.maxsize = s.queue_size
        QUEUE.block = s.overflow == "block"
        QUEUE.block_timeout = s.block_timeout
        QUEUE.level = s.level
        if s.capture_stdlib:
            self._route_stdlib()
        self.writer.start()

    def _route_stdlib(self) -> None:
        root = logging.getLogger()
        self._previous_root = (list(root.handlers), root.level)
        if not self.settings.stdlib_caller_info:
            _set_record_options(_LEAN_RECORDS)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(self.handler)
        root.setLevel(self.settings.level)
        for name in self.settings.capture_loggers:
            capture_logger(name)

    def _unroute_stdlib(self) -> None:
        root = logging.getLogger()
        root.removeHandler(self.handler)
        _set_record_options(_STDLIB_RECORDS)
        if self._previous_root is not None:
            handlers, level = self._previous_root
            for handler in handlers:
                if not isinstance(handler, AsyncLogHandler):
                    root.addHandler(handler)
            root.setLevel(level)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record enqueued before the call is written (or dropped)."""
        target = read_count(QUEUE.emitted)
        drops = read_count(QUEUE.dropped)
        writer = self.writer
        deadline = None if timeout is None else time.monotonic() + timeout
        with writer.progress:
            while writer.processed() < target or writer.reported_drops < drops:
                if not writer.is_alive():
                    return False
                writer.urgent = True
                QUEUE.wake.set()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                writer.progress.wait(0.05 if remaining is None else min(0.05, remaining))
        return True

    def stop(self, timeout: float | None = None, restore: bool = True) -> bool:
        """Flush and stop the writer; True if everything was written in time.

        `restore` gives the root logger its previous handlers back; without it, stdlib records
        keep coming here and are written through synchronously.
        """
        if self.stopped:
            return True
        self.stopped = True
        wait = self.settings.shutdown_timeout if timeout is None else timeout
        lost_before = self.counters.dropped_write
        self.sink.deadline = time.monotonic() + wait
        self.writer.stopping = True
        QUEUE.wake.set()
        self.writer.join(wait + 0.5)
        self.writer.abandoned = True  # a writer stuck past this point takes nothing more
        if not self.writer.is_alive() and QUEUE.items:
            # Nothing will take these now (later records are written through): count them.
            self.counters.dropped_write += len(QUEUE.take(len(QUEUE.items)))
        drained = (
            not self.writer.is_alive()
            and not QUEUE.items
            and self.counters.dropped_write == lost_before
        )
        self._report_losses()
        if self.settings.capture_stdlib and restore:
            self._unroute_stdlib()
        self._write_through()
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

    def _write_through(self) -> None:
        """After the writer stops, records are written on the caller's thread: the process is
        ending, and the server's last lines (after the lifespan shutdown) must not be lost. A
        writer that missed the stop deadline takes no more records; the sink keeps its last
        write and these from interleaving."""
        lock = threading.Lock()
        counters, encoder, sink = self.counters, self.encoder, self.sink

        def write(record: tuple[Any, ...]) -> None:
            with lock:
                data = encoder.encode(record)
                try:
                    sink.write(data, deadline=time.monotonic() + _WRITE_THROUGH_WAIT)
                except SinkError:
                    counters.dropped_write += 1
                    counters.errors += 1
                    return
                counters.written += 1
                counters.bytes_written += len(data)

        QUEUE.start_writing_through(write)

    def close(self) -> None:
        """Release the sink of a stopped pipeline."""
        QUEUE.stop_writing_through(self.settings.queue_size)
        self.sink.close()

    def stats(self) -> dict[str, Any]:
        return _collect(self.counters)

    def after_fork_in_child(self, counters: Counters) -> None:
        """A forked child gets its own empty queue and a fresh writer; nothing is written twice."""
        self.counters = counters
        self.sink.reset_after_fork()
        self.writer = self._new_writer()
        if not self.stopped:
            self.writer.start()


# The logging module's documented switches for what a LogRecord collects ("Optimization" in the
# logging HOWTO); `_srcfile = None` turns off findCaller's stack walk.
_RECORD_OPTIONS = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")
_STDLIB_RECORDS = {name: getattr(logging, name) for name in _RECORD_OPTIONS}
_LEAN_RECORDS = {
    "_srcfile": None,
    "logThreads": False,
    "logProcesses": False,
    "logMultiprocessing": False,
}


def capture_logger(name: str) -> None:
    """Remove a named logger's own handlers so it propagates to asynclog (on the root)."""
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True


def _set_record_options(options: dict[str, Any]) -> None:
    for name, value in options.items():
        setattr(logging, name, value)


_current: Pipeline | None = None
# A pipeline stopped by shutdown() keeps writing late records through until the next configure().
_stopped: Pipeline | None = None
_WRITE_THROUGH_WAIT = 0.5
# Counters outlive a pipeline: reconfiguring carries them over, and stats() still reads them after
# shutdown.
_last_counters = Counters()
_lock = threading.RLock()


def current() -> Pipeline | None:
    """The running pipeline, if any."""
    return _current


def configure(**settings: Any) -> Pipeline:
    """Route logging (native and stdlib) through a non-blocking pipeline; see the README.

    Idempotent: a second call drains and replaces the first pipeline, handlers never duplicate.
    Settings not given come from ASYNCLOG_* variables, then defaults. Returns the handle.
    """
    core, _ = resolve_settings(settings, core_only=True)
    return start_pipeline(core)


def start_pipeline(core: Settings) -> Pipeline:
    global _current, _last_counters, _stopped
    with _lock:
        previous = _current
        if previous is None:
            # A fresh start after shutdown (or the first one) counts from zero.
            _last_counters = Counters()
            QUEUE.reset_counters()
        pipeline = Pipeline(core, _last_counters)  # opens the sink: fails before changing anything
        if previous is not None:
            previous.stop(restore=False)
            pipeline._previous_root = previous._previous_root
        if _stopped is not None:
            _stopped.close()
            _stopped = None
        if previous is not None:
            previous.close()
        pipeline.start()
        _current = pipeline
        return pipeline


def get_logger(name: str | None = None) -> Logger:
    """A native logger. If asynclog was never configured in this process, this configures it
    from the environment (after `shutdown()`, records are written through instead)."""
    if _current is None and _stopped is None:
        with _lock:
            if _current is None and _stopped is None:
                configure()
    return Logger(name or "root")


def flush(timeout: float | None = None) -> bool:
    """Write everything enqueued before this call; False if `timeout` passed first."""
    pipeline = _current
    return True if pipeline is None else pipeline.flush(timeout)


def shutdown(timeout: float | None = None) -> bool:
    """Flush, stop the writer thread and restore the root logger's handlers."""
    global _current, _stopped
    with _lock:
        pipeline, _current = _current, None
        if pipeline is None:
            return True
        _stopped = pipeline
        return pipeline.stop(timeout)


def reset() -> None:
    """Shut down and forget every pipeline: back to the never-configured state (for tests)."""
    global _stopped
    shutdown()
    with _lock:
        if _stopped is not None:
            _stopped.close()
            _stopped = None


def reopen() -> None:
    """Reopen a file sink (after external log rotation) at the writer's next round."""
    pipeline = _current
    if pipeline is not None:
        pipeline.writer.reopen_requested = True
        QUEUE.wake.set()


def stats() -> dict[str, Any]:
    """Counters since the process (or forked child) started: emitted == written + dropped after a
    flush."""
    pipeline = _current
    return _collect(pipeline.counters if pipeline is not None else _last_counters)


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
        "queue_size": QUEUE.maxsize,
        "bytes_written": c.bytes_written,
        "notices": c.notices,
    }


def _after_fork_in_child() -> None:
    global _lock, _last_counters
    _lock = threading.RLock()
    QUEUE.reset_after_fork()
    _last_counters = Counters()
    # A stopped pipeline still writes late lines through its sink, under the same lock.
    for pipeline in (_current, _stopped):
        if pipeline is not None:
            pipeline.after_fork_in_child(_last_counters)


def _at_exit() -> None:
    shutdown()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
