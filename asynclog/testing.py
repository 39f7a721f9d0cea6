"""Helpers for testing code that logs with asynclog.

from asynclog.testing import capture_logs

def test_payment_is_logged() -> None:
    with capture_logs() as logs:
        pay(order_id=7)
    assert logs[-1]["message"] == "paid" and logs[-1]["order_id"] == 7
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from . import _pipeline
from ._encoder import Encoder
from ._queue import QUEUE
from ._record import Record
from ._redact import Redactor
from ._settings import Settings

__all__ = ["capture_logs"]


@contextmanager
def capture_logs() -> Iterator[list[dict[str, Any]]]:
    """Collect what is logged while the block runs, each record as a dict keyed like its JSON
    line: `time`, `level`, `logger`, `message`, `trace_id`/`span_id`, every field (context,
    bound, call), `exception`, `asynclog.substituted`...

    A dict is the line itself, parsed: redaction, renamed fields and substitutions are as
    written, and values are what JSON made of them (a datetime is its ISO string). Each is
    captured on the thread that logged, before the call returns: no flush is needed. The
    records still take their usual way (to the sink, or dropped by a full queue and counted),
    so the counters stay exact.

    Captured: native calls at or above the level; stdlib records once asynclog routes the
    stdlib (after `configure()` or `install()`; an implicit start leaves the stdlib to its
    own handlers, and to pytest's `caplog`). Blocks can nest. `configure()`, `install()`,
    an app's lifespan or `shutdown()` inside the block do not stop the capture.
    """
    logs: list[dict[str, Any]] = []
    with _tap(_LineBuilder(logs.append)):
        yield logs


@contextmanager
def _tap(see: Callable[[Record], None]) -> Iterator[None]:
    """While the block runs, hand every record put on the queue to `see` as well, on the
    caller's thread, before it takes its usual way (queued, dropped or written through)."""
    QUEUE.add_tap(see)
    try:
        yield
    finally:
        QUEUE.remove_tap(see)


class _LineBuilder:
    """Turns a record into its JSON line's dict with the encoder the pipeline writes with."""

    def __init__(self, append: Callable[[dict[str, Any]], None]) -> None:
        self.append = append
        self._lock = threading.Lock()  # an Encoder is not thread-safe; callers may be many
        self._encoder: Encoder | None = None
        self._redaction: tuple[frozenset[str], int] | None = None

    def __call__(self, record: Record) -> None:
        try:
            with self._lock:
                line = orjson.loads(self._encoder_now().encode(record))
        except Exception as exc:  # never raise into the logging call
            line = {"message": "<capture failed>", "error": f"{type(exc).__name__}: {exc}"}
        self.append(line)

    def _encoder_now(self) -> Encoder:
        # The redaction of the pipeline that writes the line, running or stopped (writing
        # through); configure() may change it within the block.
        pipeline = _pipeline.latest()
        settings = pipeline.settings if pipeline is not None else Settings()
        redaction = (settings.redact_keys, settings.redact_depth)
        if self._encoder is None or redaction != self._redaction:
            self._encoder = Encoder(Redactor(*redaction))
            self._redaction = redaction
        return self._encoder
