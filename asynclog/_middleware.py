"""The access-log middleware (pure ASGI): a request id bound to every line of the request and
echoed in the response, the server span, one access line per request, and the one line for an
unhandled exception. Lifespan scopes go to the hooks in `_lifespan`."""

from __future__ import annotations

import random
import re
import time
from contextvars import Token
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Status, StatusCode

from ._accel import make_record
from ._asgi import ASGIApp, Message, Receive, Scope, Send
from ._compat import current_otel_context
from ._context import bound_fields
from ._fallback import describe_exception
from ._lifespan import LifespanHooks, run_lifespan
from ._logger import Logger
from ._proxies import TrustedProxies, apply_forwarded, apply_forwarded_headers
from ._queue import QUEUE
from ._redact import Redactor
from ._server_span import (
    end_server_span,
    ids_only_span,
    method_fields,
    request_method,
    route,
    start_sdk_span,
)
from ._settings import AppSettings

__all__ = ["AccessLogMiddleware", "RequestLogConfig"]

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# uuid4() reads os.urandom, a getrandom() syscall per request. Request ids need uniqueness, not
# secrecy; `random` is reseeded in every forked worker.
_random_bits = random.getrandbits
# nginx's code for "client closed the connection before the response started".
_CLIENT_CLOSED = 499
_NO_FIELDS: dict[str, Any] = {}
_errors = Logger("asynclog.error")
# Bound once: read on every request.
_perf_counter = time.perf_counter
_now = time.time
_bound_get = bound_fields.get


@dataclass
class RequestLogConfig:
    """What the middleware reads on every request; `install()` may replace its parts."""

    settings: AppSettings
    redactor: Redactor
    # A tracer when asynclog makes the server span itself (tracing_backend="asynclog", or the
    # instrumentor's fallback).
    tracer: trace.Tracer | None = None
    # True when no span would ever be recorded or exported (spans="none" with asynclog's own
    # provider and sampler): the request then gets ids only, without an SDK span.
    ids_only: bool = False
    request_id_header: bytes = field(init=False)
    trusted_proxies: TrustedProxies = field(init=False)
    # Header names the global propagator reads (W3C trace context and baggage by default).
    propagation_headers: frozenset[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.request_id_header = self.settings.request_id_header.encode("latin-1")
        self.trusted_proxies = TrustedProxies(self.settings.forwarded_allow_ips)
        self.propagation_headers = frozenset(
            name.encode("latin-1") for name in propagate.get_global_textmap().fields
        )


class _Request:
    """Per-request state shared by the middleware and its `send` wrapper."""

    __slots__ = (
        "context_token",
        "finished",
        "logged",
        "otel_token",
        "peer",
        "request_id",
        "span",
        "start",
        "status",
        "user_agent",
    )

    def __init__(self, request_id: str, user_agent: str | None, peer: str | None) -> None:
        self.request_id = request_id
        self.user_agent = user_agent
        self.peer = peer
        self.start = _perf_counter()
        self.status: int | None = None
        self.finished = 0.0
        self.logged = False
        self.span: trace.Span | None = None
        self.context_token: Token[Any] | None = None
        self.otel_token: Token[Any] | None = None


class AccessLogMiddleware:
    """Binds a request id for every line of the request and echoes it in the response; with a
    tracer, makes the request's server span; writes one access line when the response completes
    (or the request ends without one).

    It wraps the whole Starlette stack, outside `ServerErrorMiddleware`: an unhandled exception
    is answered by the app's own 500 handler (or the plain 500) through this middleware, so the
    response carries the request id and the handler's lines the trace ids; this middleware
    writes the one error line and re-raises the exception to the server, as Starlette does.
    """

    def __init__(
        self, app: ASGIApp, config: RequestLogConfig, lifespan: LifespanHooks | None = None
    ) -> None:
        self.app = app
        self.config = config
        self.lifespan = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.lifespan is not None:
                await run_lifespan(self.app, self.lifespan, scope, receive, send)
                return
            if scope["type"] == "websocket":
                # No line for a websocket, but the client and scheme a trusted proxy forwarded.
                apply_forwarded_headers(scope, self.config.trusted_proxies)
            await self.app(scope, receive, send)
            return
        request = self._begin(scope)
        header = (self.config.request_id_header, request.request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                request.status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                request.finished = _perf_counter()
            await send(message)
            if request.finished and not request.logged:
                self._log(scope, request)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if request.status is None:
                request.status = 500  # what the server (or ServerErrorMiddleware) answers
            self._log_exception(scope, request, exc)
            raise
        except BaseException:
            if request.status is None:
                request.status = _CLIENT_CLOSED  # cancelled: the client went away
            raise
        finally:
            self._end(scope, request)

    def _begin(self, scope: Scope) -> _Request:
        """Read the headers once, choose the request id, bind it, take the client from a
        trusted proxy's headers, start the span."""
        config = self.config
        wanted, propagation = config.request_id_header, config.propagation_headers
        incoming = user_agent = forwarded_for = forwarded_proto = None
        carrier: dict[str, str] | None = None
        for key, value in scope.get("headers") or ():
            if key == wanted:
                incoming = value.decode("latin-1")
            elif key == b"user-agent":
                user_agent = value.decode("latin-1")
            elif key == b"x-forwarded-for":
                # Repeated headers are one list (RFC 9110, section 5.3).
                text = value.decode("latin-1")
                forwarded_for = text if forwarded_for is None else f"{forwarded_for},{text}"
            elif key == b"x-forwarded-proto":
                forwarded_proto = value.decode("latin-1").strip().lower()
            elif key in propagation:
                carrier = carrier or {}
                carrier[key.decode("latin-1")] = value.decode("latin-1")
        client = scope.get("client")
        peer = client[0] if client else None
        if (forwarded_for is not None or forwarded_proto is not None) and (
            peer in config.trusted_proxies
        ):
            apply_forwarded(scope, config.trusted_proxies, forwarded_for, forwarded_proto)
        request_id = (
            incoming
            if incoming is not None and _SAFE_REQUEST_ID.fullmatch(incoming)
            # 32 hex digits; cheaper than f"{bits:032x}"
            else _random_bits(128).to_bytes(16, "big").hex()
        )
        request = _Request(request_id, user_agent, peer)
        request.context_token = bound_fields.set({**_bound_get(), "request_id": request_id})
        if config.tracer is not None:
            parent = propagate.extract(carrier) if carrier is not None else None
            if config.ids_only:
                span: trace.Span = ids_only_span(parent)
            else:
                method, known = scope.get("method"), config.settings.http_known_methods
                span = request.span = start_sdk_span(config.tracer, method, known, parent)
            request.otel_token = otel_context.attach(trace.set_span_in_context(span, parent))
        return request

    def _end(self, scope: Scope, request: _Request) -> None:
        if not request.logged:
            if request.status is None:
                request.status = _CLIENT_CLOSED
            self._log(scope, request)
        if request.span is not None:
            end_server_span(
                request.span,
                scope,
                request.status,
                request.peer,
                self.config.settings.http_known_methods,
            )
        if request.otel_token is not None:
            otel_context.detach(request.otel_token)
        if request.context_token is not None:
            bound_fields.reset(request.context_token)

    def _log_exception(self, scope: Scope, request: _Request, exc: Exception) -> None:
        # Called in the `except` block. Logged here, inside the request's span, so it carries
        # the trace ids; the exception is marked so the server's own "Exception in ASGI
        # application" line is not written again.
        try:
            exc.__asynclog_logged__ = True  # type: ignore[attr-defined]
        except Exception:
            pass
        span = request.span if request.span is not None else trace.get_current_span()
        if span.is_recording():
            # An exception whose __str__ raises must not replace this one on its way to the
            # server: the SDK's event reads str(exc), so the span then goes without it.
            try:
                span.record_exception(exc)
            except Exception:
                pass
            span.set_status(Status(StatusCode.ERROR, describe_exception(exc)))
        fields = {
            **method_fields(scope.get("method"), self.config.settings.http_known_methods),
            "url.path": scope.get("path"),
            "http.route": route(scope),
            "request_id": request.request_id,
        }
        _errors.exception("unhandled exception", **fields)

    def _log(self, scope: Scope, request: _Request) -> None:
        request.logged = True
        settings = self.config.settings
        path = scope.get("path", "")
        if not settings.access_log or path in settings.exclude_paths:
            return
        status = request.status or 0
        level = 40 if status >= 500 else 30 if status >= 400 else 20
        queue = QUEUE
        if queue.level > level:
            return  # nothing to build for a line the level turns away
        end = request.finished or _perf_counter()
        # Whole microseconds, then divided: round(x, 3) goes through a decimal string.
        micros = round((end - request.start) * 1_000_000)
        duration_ms = micros / 1000
        if (
            settings.sample_rate < 1.0
            and status < 400
            and duration_ms < settings.slow_threshold_ms
            and random.random() >= settings.sample_rate
        ):
            return
        method = scope.get("method")
        name, known = request_method(method, settings.http_known_methods)
        fields: dict[str, Any] = {
            "http.request.method": name,
            "url.path": path,
            "http.route": route(scope),
            "http.response.status_code": status,
            "duration_ms": duration_ms,
            # Seconds, the unit of the semconv metric the sidecar derives from this line.
            "duration_s": micros / 1_000_000,
            "client.address": (scope.get("client") or (None,))[0],
            # The connection's other end: the proxy, when one forwarded the client's address.
            "network.peer.address": request.peer,
            "url.scheme": scope.get("scheme", "http"),
            "user_agent.original": request.user_agent,
            "request_id": request.request_id,
        }
        if not known:
            fields["http.request.method_original"] = method
        query = scope.get("query_string")
        if query:
            fields["url.query"] = self.config.redactor.mask_query(query.decode("latin-1"))
        # The record is put as a level method puts one, without the snapshot step: every value
        # here is a str, a number or None. The message is rendered on the writer thread.
        queue.put(
            make_record(
                _now(),
                level,
                "asynclog.access",
                "%s %s %s",
                (method, path, status),
                fields,
                _NO_FIELDS,
                _bound_get(),
                current_otel_context(),
                None,
            )
        )
