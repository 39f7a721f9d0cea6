"""The request's server span when asynclog makes it, and the semantic-convention HTTP fields
that span shares with the access line and the error line."""

from __future__ import annotations

import random
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._asgi import Scope

__all__ = [
    "end_server_span",
    "ids_only_span",
    "method_fields",
    "request_method",
    "route",
    "start_sdk_span",
]

# What semconv's http.request.method says for a method outside the known set.
OTHER_METHOD = "_OTHER"
# Ids need uniqueness, not secrecy: `random` avoids a getrandom() syscall per request, and is
# reseeded in every forked worker.
_random_bits = random.getrandbits


def request_method(method: Any, known: frozenset[str]) -> tuple[Any, bool]:
    """semconv's `http.request.method` for `method`, and whether it is a known one: another is
    `_OTHER`, the client's own then going in `http.request.method_original` (a method per
    client whim would give the metrics a series each)."""
    if method in known:
        return method, True
    return OTHER_METHOD, False


def method_fields(method: Any, known: frozenset[str]) -> dict[str, Any]:
    """`request_method` as fields."""
    name, is_known = request_method(method, known)
    if is_known:
        return {"http.request.method": name}
    return {"http.request.method": name, "http.request.method_original": method}


def route(scope: Scope) -> str | None:
    """The matched route's template (`/items/{item_id}`), None before routing or without one."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


def start_sdk_span(
    tracer: trace.Tracer, method: Any, known: frozenset[str], parent: otel_context.Context | None
) -> trace.Span:
    """The request's server span from the SDK, named by its method until the route is known."""
    name, is_known = request_method(method, known)
    return tracer.start_span(name if is_known else "HTTP", context=parent, kind=SpanKind.SERVER)


def end_server_span(
    span: trace.Span, scope: Scope, status: int | None, peer: str | None, known: frozenset[str]
) -> None:
    """Name the span by its route, set its attributes and status, and end it."""
    # Attributes only for a span that records: an unsampled request pays for none of them.
    if span.is_recording():
        template = route(scope)
        fields = method_fields(scope.get("method"), known)
        if template:
            method = fields["http.request.method"]
            span.update_name(f"{'HTTP' if method == OTHER_METHOD else method} {template}")
        attributes: dict[str, Any] = {
            **fields,
            "url.path": scope.get("path", ""),
            "url.scheme": scope.get("scheme", "http"),
            "http.response.status_code": status or 0,
        }
        if template:
            attributes["http.route"] = template
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        if peer is not None:
            attributes["network.peer.address"] = peer
        span.set_attributes(attributes)
        if status is not None and status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    span.end()


def ids_only_span(parent: otel_context.Context | None) -> trace.Span:
    """A span that only carries ids: the parent's trace (and sampled flag) if one came in, else
    a new trace. It is what the SDK would make for an unsampled request, without the SDK's
    span start, which also looks up meter and logger providers."""
    remote = trace.get_current_span(parent).get_span_context() if parent is not None else None
    if remote is not None and remote.is_valid:
        trace_id, flags, state = remote.trace_id, remote.trace_flags, remote.trace_state
    else:
        trace_id, flags, state = _random_bits(128) or 1, trace.TraceFlags(0), None
    return trace.NonRecordingSpan(
        trace.SpanContext(trace_id, _random_bits(64) or 1, False, flags, state)
    )
