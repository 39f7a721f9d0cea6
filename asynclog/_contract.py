"""What the C extension assumes about the Python side, declared once.

The extension (`asynclog/_c/contract.h`) compiles its own copy of every name here and compares
the two when it loads: on any difference it raises ImportError naming it, and `_accel` runs
the pure-Python path instead, so a stale build can never read one field as another. Change a
value here and in `contract.h` together; the test suite checks that the Python side has what
both declare (the attributes, the configuration fields).

This module imports nothing of asynclog's: every other module may import it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, NamedTuple

__all__ = [
    "LAST_TIME",
    "LINE_KEYS",
    "LOGGER_ATTRIBUTES",
    "QUEUE_ATTRIBUTES",
    "RECORD_FIELDS",
    "RULE_WORDS",
    "SMALL_OBJECT",
    "CaptureConfig",
    "EncodeConfig",
]

RECORD_FIELDS = (
    "created",  # float, time.time() at the call
    "levelno",  # int
    "logger",  # str
    "msg",  # the message or `%` template, as passed
    "args",  # `%` arguments (tuple or mapping) or None
    "fields",  # call fields (dict), a builder given the writer's Redactor (a span), or None
    "bound",  # fields bound on the logger (mapping)
    "context",  # fields bound with bind_contextvars (mapping)
    "otel",  # the OpenTelemetry context at the call, or None
    "exc_info",  # (type, value, traceback) or None
)
"""The record's layout: one flat tuple per log call, its fields in this order (`_record`)."""

RULE_WORDS = 64
"""Most words `Redactor.json_rule` holds: C keeps one bit per word. A rule with more is None
(every frozen value is then looked at)."""

SMALL_OBJECT = 512
"""Frozen bytes up to this size (pymalloc's limit) are copied out of the oversized buffer
orjson makes them in, so that buffer is freed at once instead of living in the queue."""

LAST_TIME = 253402300800.0
"""10000-01-01: a `time.time()` below this has a four-digit year; the line's time stamp is
written only for 0 <= created < LAST_TIME."""

QUEUE_ATTRIBUTES = ("level", "emitted", "items", "maxsize", "idle", "wake_writer", "overflow")
"""What the C level methods read and call on the RecordQueue (`_queue`)."""

LOGGER_ATTRIBUTES = ("name", "_bound")
"""What the C level methods read on the Logger (`_logger`): its name and its bound fields."""

LINE_KEYS = ("time", "level", "logger", "message", "trace_id", "span_id")
"""The keys C writes ahead of a line's fields, in this order (`Encoder`'s line)."""


class EncodeConfig(NamedTuple):
    """What the C `encode_into(records, buffer, options, config)` works with, fixed for one
    Encoder and built where it is made (`options`, orjson's, can change between calls)."""

    known: set[str]  # field names seen to need neither renaming nor masking
    prefixes: dict[str, bytes]  # known name -> its `,"name":`, filled by C as names are met
    level_names: dict[int, str]  # levelno -> its name in the line
    span_ids: Callable[[Any], tuple[str, str] | None]  # otel context -> (trace_id, span_id)
    dumps: Callable[..., bytes]  # orjson.dumps
    default: Callable[[Any], Any]  # its default hook
    json_rule: tuple[int | None, tuple[tuple[bytes, ...], ...]] | None  # Redactor.json_rule
    fallback: Callable[[tuple[Any, ...]], bytes]  # Encoder.encode: any record C does not take
    max_line: int  # a longer line is rewritten by `shorten`
    shorten: Callable[[bytes, int], bytes]  # shorten_line(line, max_line)


class CaptureConfig(NamedTuple):
    """What every C level method (`LevelMethod(level, name, config)`) keeps: the same for each
    level, built where the level methods are made."""

    queue: Any  # the process's RecordQueue
    context_var: ContextVar[Any]  # _context.bound_fields
    otel_var: ContextVar[Any] | None  # OpenTelemetry's current-context variable, if found
    otel_get: Callable[[], Any]  # else what returns that context
    immutable: set[Any]  # _snapshot.IMMUTABLE_TYPES: types (enum classes join as met)
    dumps: Callable[..., bytes]  # orjson.dumps: freezes a mutable value into JSON bytes
    options: int  # its options for freezing, before numpy is imported
    numpy_options: int  # and after
    snapshot_value: Callable[[Any], Any]  # what freezes the values orjson refuses
    snapshot_args: Callable[[Any], Any]  # what freezes `%` arguments
