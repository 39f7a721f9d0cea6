"""OpenTelemetry for install(app): which backend makes the request's server span (with its
fallbacks), one tracer provider created once, and what its spans are exported as."""

from __future__ import annotations

import os
import weakref
from typing import Any, NamedTuple

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from ._compat import degraded
from ._fastapi_telemetry import has_native_telemetry, native_config
from ._middleware import AccessLogMiddleware
from ._sampling import SwitchableSampler, sampler
from ._settings import AppSettings
from ._spans import LogSpanProcessor

__all__ = [
    "flush_spans",
    "instrumentor_fallback",
    "own_span_tracer",
    "setup_tracing",
    "tracing_disabled",
]


def tracing_disabled() -> bool:
    """OTEL_SDK_DISABLED turns the SDK off; asynclog then creates no provider."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


class _SwitchableProcessor(SpanProcessor):
    """The one processor asynclog adds to its provider; a later install() swaps what it feeds."""

    def __init__(self) -> None:
        self.target: Any = None

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        target = self.target
        if target is not None:
            target.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        target = self.target
        if target is not None:
            target.on_end(span)

    def shutdown(self) -> None:
        target, self.target = self.target, None
        if target is not None:
            target.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        target = self.target
        return True if target is None else bool(target.force_flush(timeout_millis))


def _exporting_processor(spans: str) -> Any:
    if spans == "log":
        return LogSpanProcessor()
    if spans == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ValueError(
                "asynclog: spans='otlp' needs the OTLP exporter: pip install 'asynclog[otlp]'"
            ) from exc
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        return BatchSpanProcessor(OTLPSpanExporter())
    return None


class _OwnProvider(NamedTuple):
    """The tracer provider asynclog created and set globally, with the parts install() swaps."""

    provider: TracerProvider
    processor: _SwitchableProcessor
    sampler: SwitchableSampler


_own_provider: _OwnProvider | None = None
# Apps asynclog gave to FastAPIInstrumentor: instrumented once, whatever install() does again.
_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()


def setup_tracing(app: Any, settings: AppSettings) -> tuple[trace.Tracer | None, bool]:
    """Give `app` one server span per request. Returns the tracer the access middleware should
    make it with (None when something else makes it, or nothing does), and whether ids alone
    will do: asynclog's own provider exporting nothing records nothing.

    Backends: "asynclog" (the default) starts the span in asynclog's own middleware and sets
    attributes only on spans that record; "native" uses FastAPI's built-in telemetry (newer
    FastAPI); "instrumentor" uses the contrib `FastAPIInstrumentor` without its send/receive
    spans. The tracer provider is created once; one the user set is used, never replaced.
    When the chosen backend cannot work, asynclog's own takes over: "native" on a FastAPI whose
    telemetry settings moved (here), "instrumentor" on an app it skips (`instrumentor_fallback`,
    at startup, once the stack is built).
    """
    native = native_config(app)
    if native is not None:  # FastAPI would otherwise trace on its own: one server span only
        native.update(tracing=False, operation_spans=False)
    if not settings.tracing or tracing_disabled():
        return None, False
    provider = _provider(settings)
    backend = settings.tracing_backend
    if backend == "native" and native is None and has_native_telemetry(app):
        backend = "asynclog"  # FastAPI has it, but its settings moved: said by native_config
    if backend == "native":
        if native is None:
            raise ValueError(
                "asynclog: tracing_backend='native' needs a FastAPI with built-in telemetry; "
                "allowed here: asynclog, instrumentor"
            )
        native.update(
            tracing=True, tracer_provider=provider, operation_spans=settings.trace_operations
        )
        return None, False
    if backend == "instrumentor":
        if app not in _instrumented:
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            FastAPIInstrumentor.instrument_app(
                app, tracer_provider=provider, exclude_spans=["send", "receive"]
            )
            _instrumented.add(app)
        return None, False
    return own_span_tracer(provider, settings)


def own_span_tracer(
    provider: trace.TracerProvider, settings: AppSettings
) -> tuple[trace.Tracer, bool]:
    """The tracer asynclog's middleware makes the server span with, and whether ids alone will
    do: asynclog's own provider exporting nothing records nothing."""
    own = _own_provider is not None and provider is _own_provider.provider
    return provider.get_tracer("asynclog"), own and settings.spans == "none"


def instrumentor_fallback(app: Any, settings: AppSettings) -> tuple[trace.Tracer, bool] | None:
    """With tracing_backend="instrumentor", the tracer asynclog's middleware should make the
    server span with after all (as `own_span_tracer`), or None when nothing is amiss.

    FastAPIInstrumentor skips an app whose stack does not start with Starlette's
    ServerErrorMiddleware (it logs an error, nothing more): then asynclog makes the server
    span itself, so lines keep their trace ids. Called once the app has built its stack."""
    if settings.tracing_backend != "instrumentor" or not settings.tracing or tracing_disabled():
        return None
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    stack = getattr(app, "middleware_stack", None)
    for _ in range(100):  # the layers outside asynclog's middleware
        if stack is None or isinstance(stack, AccessLogMiddleware):
            break
        if isinstance(stack, OpenTelemetryMiddleware):
            return None
        stack = getattr(stack, "app", None)
    if stack is None:
        return None  # asynclog's middleware was not found either (added inside): nothing to say
    degraded(
        "opentelemetry-instrumentation-fastapi: FastAPIInstrumentor's middleware stack",
        "asynclog makes the server span itself (as with tracing_backend='asynclog')",
    )
    return own_span_tracer(trace.get_tracer_provider(), settings)


def _provider(settings: AppSettings) -> trace.TracerProvider:
    global _own_provider
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    existing = trace.get_tracer_provider()
    if _own_provider is not None and existing is _own_provider.provider:
        _own_provider.processor.shutdown()
        _own_provider.processor.target = _exporting_processor(settings.spans)
        _own_provider.sampler.inner = sampler(settings)
        return existing
    if not isinstance(existing, trace.ProxyTracerProvider):
        return existing
    attributes = {}
    if settings.service_name:
        attributes[SERVICE_NAME] = settings.service_name
    switchable = SwitchableSampler(sampler(settings))
    sdk_provider = TracerProvider(sampler=switchable, resource=Resource.create(attributes))
    processor = _SwitchableProcessor()
    processor.target = _exporting_processor(settings.spans)
    sdk_provider.add_span_processor(processor)
    trace.set_tracer_provider(sdk_provider)
    _own_provider = _OwnProvider(sdk_provider, processor, switchable)
    return sdk_provider


def flush_spans(timeout: float) -> None:
    """Export what asynclog's provider still holds (spans="otlp" batches): called at lifespan
    shutdown, since a gunicorn worker never reaches the provider's exit hook."""
    if _own_provider is not None:
        try:
            _own_provider.provider.force_flush(int(timeout * 1000))
        except Exception:
            pass
