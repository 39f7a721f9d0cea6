"""What the caller captures: one flat tuple per log call, built without formatting or I/O.

The layout is defined here once. Every Python producer builds a record with `make_record`;
readers take fields by the named indices or unpack in `RECORD_FIELDS` order. The C extension
compiles the same layout in and refuses to load when it differs (see `_accel`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as _otel_context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

__all__ = [
    "ARGS",
    "BOUND",
    "CONTEXT",
    "CREATED",
    "EXC_INFO",
    "FIELDS",
    "LEVELNO",
    "LOGGER",
    "MSG",
    "OTEL",
    "OTEL_CONTEXT_VAR",
    "RECORD_FIELDS",
    "Record",
    "current_otel_context",
    "make_record",
]

Record = tuple[Any, ...]

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
CREATED, LEVELNO, LOGGER, MSG, ARGS, FIELDS, BOUND, CONTEXT, OTEL, EXC_INFO = range(
    len(RECORD_FIELDS)
)


def make_record(
    created: float,
    levelno: int,
    logger: str,
    msg: object,
    args: Any,
    fields: Any,
    bound: Any,
    context: Any,
    otel: Any,
    exc_info: Any,
) -> Record:
    """One record, its fields in `RECORD_FIELDS` order (positional: a call costs ~0.1 us)."""
    return (created, levelno, logger, msg, args, fields, bound, context, otel, exc_info)


def _otel_context_var() -> ContextVar[Any] | None:
    """The ContextVar behind OpenTelemetry's default runtime context (private names), or None:
    reading it directly costs one C call instead of two Python calls through the public
    `context.get_current()`, which is what asynclog calls without it. Another runtime context
    (OTEL_PYTHON_CONTEXT) has no such variable: the public call is simply the way then."""
    runtime = getattr(_otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if isinstance(var, ContextVar):
        return var
    if runtime is None or isinstance(runtime, ContextVarsRuntimeContext):
        from ._compat import degraded  # only now: this module must import nothing of asynclog's

        degraded(
            "opentelemetry: context._RUNTIME_CONTEXT._current_context",
            "the OpenTelemetry context is read with context.get_current() (~75 ns more a call)",
        )
    return None


OTEL_CONTEXT_VAR = _otel_context_var()
current_otel_context: Callable[[], Any] = (
    _otel_context.get_current if OTEL_CONTEXT_VAR is None else OTEL_CONTEXT_VAR.get
)
