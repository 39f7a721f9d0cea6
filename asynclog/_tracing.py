"""OpenTelemetry for install(app): one tracer provider, a cheap sampler, spans out as lines."""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult

from ._accel import make_record
from ._compat import degraded
from ._queue import QUEUE
from ._redact import Redactor

if TYPE_CHECKING:
    from opentelemetry.trace import Link, SpanKind
    from opentelemetry.util.types import Attributes

    from ._settings import AppSettings

__all__ = ["LogSpanProcessor", "flush_spans", "setup_tracing", "span_fields", "tracing_disabled"]

_EMPTY: dict[str, Any] = {}


def tracing_disabled() -> bool:
    """OTEL_SDK_DISABLED turns the SDK off; asynclog then creates no provider."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


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


class _SwitchableSampler(Sampler):
    """Tracers copy their provider's sampler when created; this lets install() change it later."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        return self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"asynclog({self.inner.get_description()})"


def _ratio_from_env() -> float:
    try:
        return float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", ""))
    except ValueError:
        return 1.0  # as the SDK does with a missing or bad argument


# The values of OTEL_TRACES_SAMPLER the SDK knows, built from its public sampler classes.
_ENV_SAMPLERS: dict[str, Callable[[], Sampler]] = {
    "always_on": lambda: sampling.ALWAYS_ON,
    "always_off": lambda: sampling.ALWAYS_OFF,
    "parentbased_always_on": lambda: sampling.ParentBased(sampling.ALWAYS_ON),
    "parentbased_always_off": lambda: sampling.ParentBased(sampling.ALWAYS_OFF),
    "traceidratio": lambda: sampling.TraceIdRatioBased(_ratio_from_env()),
    "parentbased_traceidratio": lambda: sampling.ParentBasedTraceIdRatio(_ratio_from_env()),
}


def _sampler_from_env(name: str) -> Sampler:
    """OTEL_TRACES_SAMPLER as the SDK reads it (an unknown name means parentbased_always_on)."""
    make = _ENV_SAMPLERS.get(name.strip().lower(), _ENV_SAMPLERS["parentbased_always_on"])
    return make()


def _sampler(settings: AppSettings) -> Sampler:
    if settings.trace_ratio is not None:
        return sampling.ParentBased(sampling.TraceIdRatioBased(settings.trace_ratio))
    from_env = os.environ.get("OTEL_TRACES_SAMPLER")
    if from_env:
        return _sampler_from_env(from_env)
    if settings.spans == "none":
        # Nothing is exported, so record nothing: ids are still generated (and logged) for
        # every request, and an upstream's sampled flag is still honoured.
        return sampling.ParentBased(sampling.ALWAYS_OFF)
    return sampling.ParentBased(sampling.ALWAYS_ON)


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


_ours: tuple[TracerProvider, _SwitchableProcessor, _SwitchableSampler] | None = None
# Apps asynclog gave to FastAPIInstrumentor: instrumented once, whatever install() does again.
_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()


def _has_native_telemetry(app: Any) -> bool:
    """Whether this FastAPI has built-in telemetry (its public `telemetry=` argument)."""
    try:
        return "telemetry" in inspect.signature(type(app).__init__).parameters
    except (TypeError, ValueError):
        return False


def _native_config(app: Any) -> dict[str, Any] | None:
    """FastAPI's own telemetry settings (`app._telemetry`, FastAPI >= 0.16x; private), None on
    versions without it. Set only through `FastAPI(telemetry=...)` publicly."""
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict) and "operation_spans" in config:
        return config
    if _has_native_telemetry(app):
        degraded(
            "fastapi: FastAPI._telemetry",
            "FastAPI's built-in telemetry is left as the app configured it (a second server "
            "span if it traces; FastAPI(telemetry={'tracing': False}) avoids it); "
            "tracing_backend='native' falls back to 'asynclog'",
        )
    return None


def setup_tracing(app: Any, settings: AppSettings) -> tuple[trace.Tracer | None, bool]:
    """Give `app` one server span per request. Returns the tracer the access middleware should
    make it with (None when something else makes it, or nothing does), and whether ids alone
    will do: asynclog's own provider exporting nothing records nothing.

    Backends: "asynclog" (the default) starts the span in asynclog's own middleware and sets
    attributes only on spans that record; "native" uses FastAPI's built-in telemetry (newer
    FastAPI); "instrumentor" uses the contrib `FastAPIInstrumentor` without its send/receive
    spans. The tracer provider is created once; one the user set is used, never replaced.
    """
    native = _native_config(app)
    if native is not None:  # FastAPI would otherwise trace on its own: one server span only
        native.update(tracing=False, operation_spans=False)
    if not settings.tracing or tracing_disabled():
        return None, False
    provider = _provider(settings)
    backend = settings.tracing_backend
    if backend == "native" and native is None and _has_native_telemetry(app):
        backend = "asynclog"  # FastAPI has it, but its settings moved: said by _native_config
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
    ours = _ours is not None and provider is _ours[0]
    return provider.get_tracer("asynclog"), ours and settings.spans == "none"


# The OpenTelemetry API's stand-ins for a provider nobody has set (private classes; the same
# test FastAPI makes): the API has no public "is a provider set" query.
_UNSET_PROVIDERS = (
    ("opentelemetry.metrics._internal", "_ProxyMeterProvider"),
    ("opentelemetry._logs._internal", "ProxyLoggerProvider"),
)


_KEEPS_LOOKING = (
    "FastAPI's built-in telemetry keeps looking for meter and logger providers on every "
    "request (~10 us each)"
)


def _unset_provider_types() -> tuple[type, ...] | None:
    found = []
    for module, name in _UNSET_PROVIDERS:
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
        if not isinstance(cls, type):
            degraded(f"opentelemetry: {module}.{name}", _KEEPS_LOOKING)
            return None
        found.append(cls)
    return tuple(found)


def skip_unused_native_telemetry(app: Any) -> None:
    """FastAPI's built-in telemetry asks on every request whether a meter or logger provider
    has been set (~10 us here: it reads the environment each time). Called once the app has
    started: a provider still unset then means nothing would receive those metrics or logs."""
    native = _native_config(app)
    if native is None:
        return
    unset = _unset_provider_types()
    if unset is None:
        return
    from opentelemetry import metrics

    try:  # the logs API is still a private module of OpenTelemetry
        from opentelemetry import _logs

        logger_provider = _logs.get_logger_provider()
    except (ImportError, AttributeError):
        degraded("opentelemetry: _logs.get_logger_provider", _KEEPS_LOOKING)
        return
    if native.get("meter_provider") is None and isinstance(metrics.get_meter_provider(), unset):
        native["metrics"] = False
    if native.get("logger_provider") is None and isinstance(logger_provider, unset):
        native["logs"] = False


def _provider(settings: AppSettings) -> trace.TracerProvider:
    global _ours
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    existing = trace.get_tracer_provider()
    if _ours is not None and existing is _ours[0]:
        provider, processor, sampler = _ours
        processor.shutdown()
        processor.target = _exporting_processor(settings.spans)
        sampler.inner = _sampler(settings)
        return provider
    if not isinstance(existing, trace.ProxyTracerProvider):
        return existing
    attributes = {}
    if settings.service_name:
        attributes[SERVICE_NAME] = settings.service_name
    sampler = _SwitchableSampler(_sampler(settings))
    sdk_provider = TracerProvider(sampler=sampler, resource=Resource.create(attributes))
    processor = _SwitchableProcessor()
    processor.target = _exporting_processor(settings.spans)
    sdk_provider.add_span_processor(processor)
    trace.set_tracer_provider(sdk_provider)
    _ours = (sdk_provider, processor, sampler)
    return sdk_provider


def flush_spans(timeout: float) -> None:
    """Export what asynclog's provider still holds (spans="otlp" batches): called at lifespan
    shutdown, since a gunicorn worker never reaches the provider's exit hook."""
    if _ours is not None:
        try:
            _ours[0].force_flush(int(timeout * 1000))
        except Exception:
            pass
