"""Spans as log lines (spans="log"): each finished span becomes one JSON line on the queue."""

from __future__ import annotations

import functools
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ._accel import make_record
from ._queue import QUEUE
from ._redact import Redactor

__all__ = ["LogSpanProcessor", "span_fields"]

_EMPTY: dict[str, Any] = {}
# Attributes (OpenTelemetry semantic conventions, old and new) that hold a URL or a query string:
# their secret-named query parameters are masked like the access line's `url.query`.
_URL_ATTRIBUTES = frozenset({"url.full", "url.query", "http.url", "http.target"})


def span_fields(span: ReadableSpan, redactor: Redactor) -> dict[str, Any]:
    """The fields of a finished span's line (built on the writer thread)."""
    ctx = span.get_span_context()
    parent = span.parent
    start, end = span.start_time or 0, span.end_time or 0
    fields: dict[str, Any] = {
        "span.name": span.name,
        "span.kind": span.kind.name.lower(),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "duration_ms": round((end - start) / 1e6, 3),
        "start_time_unix_nano": start,
        "status": span.status.status_code.name.lower(),
        "sampled": ctx is not None and ctx.trace_flags.sampled,
    }
    if span.status.description:
        fields["status.description"] = span.status.description
    if span.attributes:
        attributes = fields["attributes"] = dict(span.attributes)
        for key in _URL_ATTRIBUTES.intersection(attributes):
            value = attributes[key]
            if isinstance(value, str):
                mask = redactor.mask_query if key == "url.query" else redactor.mask_url
                attributes[key] = mask(value)
    if span.events:
        fields["events"] = [
            {"name": e.name, "time_unix_nano": e.timestamp, "attributes": dict(e.attributes or {})}
            for e in span.events
        ]
    service = span.resource.attributes.get("service.name") if span.resource else None
    if service:
        fields["service.name"] = service
    return fields


class LogSpanProcessor(SpanProcessor):
    """Writes each finished span as one JSON line through asynclog's queue.

    `on_end` runs on the thread that ended the span (the event loop): it only enqueues the span;
    the writer thread turns it into fields.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        end = span.end_time or 0
        QUEUE.put(
            make_record(
                end / 1e9,
                20,
                "asynclog.span",
                span.name,
                None,
                functools.partial(span_fields, span),
                _EMPTY,
                _EMPTY,
                trace.set_span_in_context(trace.NonRecordingSpan(span.context)),
                None,
            )
        )

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
