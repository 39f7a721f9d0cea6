"""What the caller captures: one flat tuple per log call, built without formatting or I/O.

Layout (the writer unpacks it in this order):
    0 created     float, time.time() at the call
    1 levelno     int
    2 logger      str
    3 msg         the message or `%` template, as passed
    4 args        `%` arguments (tuple or mapping) or None
    5 fields      call fields (dict), a callable returning them given the writer's Redactor
                  (a finished span), or None
    6 bound       fields bound on the logger (mapping)
    7 context     fields bound with bind_contextvars (mapping)
    8 otel        the OpenTelemetry context at the call, or None
    9 exc_info    (type, value, traceback) or None
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as _otel_context

__all__ = ["OTEL_CONTEXT_VAR", "current_otel_context"]


def _otel_context_var() -> ContextVar[Any] | None:
    # The SDK's default runtime context is a ContextVar; reading it directly costs one C call
    # instead of two Python calls through `context.get_current()`.
    runtime = getattr(_otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    return var if isinstance(var, ContextVar) else None


OTEL_CONTEXT_VAR = _otel_context_var()
current_otel_context: Callable[[], Any] = (
    _otel_context.get_current if OTEL_CONTEXT_VAR is None else OTEL_CONTEXT_VAR.get
)
