"""A pure ASGI middleware: request ids, the server span, one access line per request, the one
line for an unhandled exception, and hooks on the ASGI lifespan."""

from __future__ import annotations

import ipaddress
import random
import re
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import Token
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._accel import make_record
from ._compat import current_otel_context
from ._context import bound_fields
from ._fallback import describe_exception
from ._logger import Logger
from ._queue import QUEUE
from ._redact import Redactor
from ._settings import AppSettings

__all__ = ["AccessLogMiddleware", "LifespanHooks", "RequestLogConfig"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# uuid4() reads os.urandom: a getrandom() syscall per request (~15 us on a VM here). Request ids
# need uniqueness, not secrecy; `random` is reseeded in every forked worker.
_random_bits = random.getrandbits
# nginx's code for "client closed the connection before the response started".
_CLIENT_CLOSED = 499
_NO_FIELDS: dict[str, Any] = {}
# What semconv's http.request.method says for a method outside the known set.
_OTHER_METHOD = "_OTHER"
_errors = Logger("asynclog.error")


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


_PARSED_HOSTS_KEPT = 1024


class TrustedProxies:
    """The peers whose X-Forwarded-For and X-Forwarded-Proto are believed (read as uvicorn's
    proxy-headers middleware reads them, so the app sees the same client)."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.any = "*" in entries
        networks = [ipaddress.ip_network(e, strict=False) for e in entries if e != "*"]
        self.addresses = frozenset(str(n.network_address) for n in networks if n.num_addresses == 1)
        self.networks = tuple(n for n in networks if n.num_addresses > 1)
        # Verdicts on hosts that needed a parse: a proxy's address (a pod network's, say) comes
        # back on every request, and ipaddress parses in Python. Cleared when full, so forged
        # hops cannot grow it without bound.
        self._parsed: dict[str, bool] = {}

    def __contains__(self, host: str | None) -> bool:
        if self.any or host in self.addresses:
            return True  # "*" trusts a peer with no address too (a unix socket), as uvicorn's
        if host is None:
            return False
        verdict = self._parsed.get(host)
        if verdict is None:
            if len(self._parsed) >= _PARSED_HOSTS_KEPT:
                self._parsed.clear()
            verdict = self._parsed[host] = self._parse(host)
        return verdict

    def _parse(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        # One address has many spellings in IPv6: compare the canonical one.
        return str(address) in self.addresses or any(address in n for n in self.networks)

    def client(self, forwarded_for: str) -> tuple[str, int]:
        """The client a trusted peer forwarded for: the rightmost address that is not a
        trusted proxy, as every trusted hop appends the one it received from; entries further
        left came from the client and may be forged. All trusted: the leftmost, as uvicorn."""
        if "," not in forwarded_for:  # one hop, as an edge proxy sends: the client
            return _host_port(forwarded_for.strip())
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        if not self.any:
            for hop in reversed(hops):
                host, port = _host_port(hop)
                if host not in self:
                    return host, port
        return _host_port(hops[0])


def _apply_forwarded(
    scope: Scope, trusted: TrustedProxies, forwarded_for: str | None, forwarded_proto: str | None
) -> None:
    """A trusted peer's forwarded client and scheme, written into the scope as uvicorn's
    proxy-headers middleware does, so the app's request.client and url_for() see them too."""
    if forwarded_for is not None:
        original = trusted.client(forwarded_for)
        if original[0]:  # an empty header names no one
            scope["client"] = original
    if forwarded_proto in ("http", "https"):
        # A websocket's scheme is ws or wss.
        websocket = scope["type"] == "websocket"
        scope["scheme"] = forwarded_proto.replace("http", "ws") if websocket else forwarded_proto


def _host_port(value: str) -> tuple[str, int]:
    """`host`, `host:port` or `[v6]:port` as (host, port), port 0 when absent or malformed.
    The port is whatever int() reads, as uvicorn's: str.isdigit() would pass "²", which int()
    rejects, and a forged hop would then raise out of the middleware."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return value, 0
        return host, _port(rest[1:])
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        try:
            return host, int(port)
        except ValueError:
            return value, 0
    return value, 0


def _port(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


class LifespanHooks(Protocol):
    """What runs around the app's own lifespan (the ASGI lifespan protocol, so it holds for any
    server and any lifespan style the app uses)."""

    def starting(self) -> None:
        """The server asked the app to start; the app's own startup code has not run yet."""

    def started(self) -> None:
        """The app's own startup code has run."""

    def stopped(self) -> None:
        """The app's own shutdown code has run, or its startup failed: the server is ending."""


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
        self.start = time.perf_counter()
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
                await _run_lifespan(self.app, self.lifespan, scope, receive, send)
                return
            if scope["type"] == "websocket":
                self._forwarded_websocket(scope)
            await self.app(scope, receive, send)
            return
        request = self._begin(scope)
        header = (self.config.request_id_header, request.request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                request.status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                request.finished = time.perf_counter()
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
        wanted = config.request_id_header
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
            elif key in config.propagation_headers:
                carrier = carrier or {}
                carrier[key.decode("latin-1")] = value.decode("latin-1")
        client = scope.get("client")
        peer = client[0] if client else None
        if (forwarded_for is not None or forwarded_proto is not None) and (
            peer in config.trusted_proxies
        ):
            _apply_forwarded(scope, config.trusted_proxies, forwarded_for, forwarded_proto)
        request_id = (
            incoming
            if incoming is not None and _SAFE_REQUEST_ID.fullmatch(incoming)
            # 32 hex digits, at half the cost of f"{bits:032x}"
            else _random_bits(128).to_bytes(16, "big").hex()
        )
        request = _Request(request_id, user_agent, peer)
        request.context_token = bound_fields.set({**bound_fields.get(), "request_id": request_id})
        if config.tracer is not None:
            parent = propagate.extract(carrier) if carrier is not None else None
            if config.ids_only:
                span: trace.Span = _ids_only_span(parent)
            else:
                method = scope.get("method")
                span = request.span = config.tracer.start_span(
                    method if method in config.settings.http_known_methods else "HTTP",
                    context=parent,
                    kind=SpanKind.SERVER,
                )
            request.otel_token = otel_context.attach(trace.set_span_in_context(span, parent))
        return request

    def _forwarded_websocket(self, scope: Scope) -> None:
        """No line for a websocket, but the client and scheme a trusted proxy forwarded:
        gunicorn.conf.py turns uvicorn's proxy headers off for every scope, not only http."""
        forwarded_for = forwarded_proto = None
        for key, value in scope.get("headers") or ():
            if key == b"x-forwarded-for":
                text = value.decode("latin-1")
                forwarded_for = text if forwarded_for is None else f"{forwarded_for},{text}"
            elif key == b"x-forwarded-proto":
                forwarded_proto = value.decode("latin-1").strip().lower()
        client = scope.get("client")
        trusted = self.config.trusted_proxies
        if (forwarded_for is not None or forwarded_proto is not None) and (
            (client[0] if client else None) in trusted
        ):
            _apply_forwarded(scope, trusted, forwarded_for, forwarded_proto)

    def _end(self, scope: Scope, request: _Request) -> None:
        if not request.logged:
            if request.status is None:
                request.status = _CLIENT_CLOSED
            self._log(scope, request)
        if request.span is not None:
            _end_span(request.span, scope, request.status, request.peer, self.config.settings)
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
            **_method_fields(scope.get("method"), self.config.settings.http_known_methods),
            "url.path": scope.get("path"),
            "http.route": _route(scope),
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
        end = request.finished or time.perf_counter()
        # Whole microseconds: round(x, 3) takes ~0.25 us, through a decimal string.
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
        known = method in settings.http_known_methods
        fields: dict[str, Any] = {
            "http.request.method": method if known else _OTHER_METHOD,
            "url.path": path,
            "http.route": _route(scope),
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
            # A method outside the known set would give the metrics a series per client whim.
            fields["http.request.method_original"] = method
        query = scope.get("query_string")
        if query:
            fields["url.query"] = self.config.redactor.mask_query(query.decode("latin-1"))
        # The record is put as a level method puts one, without the snapshot step: every value
        # here is a str, a number or None. The message is rendered on the writer thread.
        queue.put(
            make_record(
                time.time(),
                level,
                "asynclog.access",
                "%s %s %s",
                (method, path, status),
                fields,
                _NO_FIELDS,
                bound_fields.get(),
                current_otel_context(),
                None,
            )
        )


async def _run_lifespan(
    app: ASGIApp, hooks: LifespanHooks, scope: Scope, receive: Receive, send: Send
) -> None:
    """Run the app's lifespan with `hooks` called at its steps (each at most once)."""
    steps = {"stopped": False, "stopping": False}

    def stop() -> None:
        if not steps["stopped"]:
            steps["stopped"] = True
            hooks.stopped()

    async def receive_with_hooks() -> Message:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                hooks.starting()
            except BaseException:
                # Raised from the app's first receive, it escapes before the app can answer:
                # the server (uvicorn's lifespan="auto") would take the app for one without a
                # lifespan and serve it, its startup code never run. Answer for it.
                await send({"type": "lifespan.startup.failed", "message": traceback.format_exc()})
                raise
        elif message["type"] == "lifespan.shutdown":
            steps["stopping"] = True
        return message

    async def send_with_hooks(message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            hooks.started()
        elif kind in ("lifespan.startup.failed", "lifespan.shutdown.complete",
                      "lifespan.shutdown.failed"):  # fmt: skip
            stop()
        await send(message)

    try:
        await app(scope, receive_with_hooks, send_with_hooks)
    finally:
        if steps["stopping"]:  # an app that raised out of its shutdown still gets drained
            stop()


def _ids_only_span(parent: otel_context.Context | None) -> trace.Span:
    """A span that only carries ids: the parent's trace (and sampled flag) if one came in, else
    a new trace. It is what the SDK would make for an unsampled request, at a fraction of the
    cost (the SDK's span start also looks up meter and logger providers)."""
    remote = trace.get_current_span(parent).get_span_context() if parent is not None else None
    if remote is not None and remote.is_valid:
        trace_id, flags, state = remote.trace_id, remote.trace_flags, remote.trace_state
    else:
        trace_id, flags, state = _random_bits(128) or 1, trace.TraceFlags(0), None
    return trace.NonRecordingSpan(
        trace.SpanContext(trace_id, _random_bits(64) or 1, False, flags, state)
    )


def _route(scope: Scope) -> str | None:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _method_fields(method: Any, known: frozenset[str]) -> dict[str, Any]:
    """semconv's `http.request.method`: `_OTHER` for a method outside the known set, the
    client's own in `http.request.method_original` (the access line inlines the same)."""
    if method in known:
        return {"http.request.method": method}
    return {"http.request.method": _OTHER_METHOD, "http.request.method_original": method}


def _end_span(
    span: trace.Span, scope: Scope, status: int | None, peer: str | None, settings: AppSettings
) -> None:
    # Attributes only for a span that records: an unsampled request pays for none of them.
    if span.is_recording():
        route = _route(scope)
        fields = _method_fields(scope.get("method"), settings.http_known_methods)
        if route:
            method = fields["http.request.method"]
            span.update_name(f"{'HTTP' if method == _OTHER_METHOD else method} {route}")
        attributes: dict[str, Any] = {
            **fields,
            "url.path": scope.get("path", ""),
            "url.scheme": scope.get("scheme", "http"),
            "http.response.status_code": status or 0,
        }
        if route:
            attributes["http.route"] = route
        client = scope.get("client")
        if client:
            attributes["client.address"] = client[0]
        if peer is not None:
            attributes["network.peer.address"] = peer
        span.set_attributes(attributes)
        if status is not None and status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    span.end()
