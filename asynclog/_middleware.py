"""A pure ASGI middleware: request ids, one access line per request, unhandled exceptions."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ._context import bound_fields
from ._logger import Logger
from ._redact import REDACTED, Redactor
from ._settings import AppSettings

__all__ = ["AccessLogMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
ErrorHandler = Callable[[Scope, Receive, Send, Exception], Awaitable[None]]

# uuid4() reads os.urandom: a getrandom() syscall per request (~15 us on a VM here). Request ids
# need uniqueness, not secrecy; `random` is reseeded in every forked worker.
_random_bits = random.getrandbits
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# nginx's code for "client closed the connection before the response started".
_CLIENT_CLOSED = 499
_access = Logger("asynclog.access")
_errors = Logger("asynclog.error")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return str(value.decode("latin-1"))
    return None


def mask_query(query: bytes, redactor: Redactor) -> str:
    """The query string with the values of secret-named parameters masked."""
    text = query.decode("latin-1")
    pairs = parse_qsl(text, keep_blank_values=True)
    if not any(redactor.is_secret(k) for k, _ in pairs):
        return text
    return urlencode([(k, REDACTED if redactor.is_secret(k) else v) for k, v in pairs])


class AccessLogMiddleware:
    """Binds a request id for the request's lines, echoes it in the response, and writes one
    access line when the response completes (or the request ends without one)."""

    def __init__(
        self,
        app: ASGIApp,
        settings: AppSettings,
        redactor: Redactor,
        error_handler: ErrorHandler | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.redactor = redactor
        self.error_handler = error_handler
        self.header = settings.request_id_header.encode("latin-1")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = _header(scope, self.header)
        request_id = (
            incoming
            if incoming is not None and _SAFE_REQUEST_ID.fullmatch(incoming)
            else f"{_random_bits(128):032x}"
        )
        token = bound_fields.set({**bound_fields.get(), "request_id": request_id})
        header = (self.header, request_id.encode("latin-1"))
        state = _RequestState()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state.status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                state.finished = time.perf_counter()
            await send(message)
            if state.finished and not state.logged:
                self._log(scope, state, start, request_id)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            self._log_exception(scope, request_id, exc)
            if state.status is not None or not await self._send_error(
                scope, receive, send_with_id, exc
            ):
                if state.status is None:
                    state.status = 500
                raise
        except BaseException:
            if state.status is None:
                state.status = _CLIENT_CLOSED  # cancelled: the client went away
            raise
        finally:
            if not state.logged:
                if state.status is None:
                    state.status = _CLIENT_CLOSED
                self._log(scope, state, start, request_id)
            bound_fields.reset(token)

    async def _send_error(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> bool:
        """Answer an unhandled exception here, with the app's own 500 handler when it has one,
        so the error response carries the request id. False leaves it to the server."""
        handler = self.error_handler
        if handler is None:
            return False
        try:
            await handler(scope, receive, send, exc)
        except Exception:
            return False
        _mark_span_failed(exc)
        return True

    def _log_exception(self, scope: Scope, request_id: str, exc: Exception) -> None:
        # Logged here, inside the request's span, so it carries the trace ids; the exception is
        # marked so the server's own "Exception in ASGI application" line is not written again.
        try:
            exc.__asynclog_logged__ = True  # type: ignore[attr-defined]
        except Exception:
            pass
        _errors.exception(
            "unhandled exception",
            **{
                "http.request.method": scope.get("method"),
                "url.path": scope.get("path"),
                "http.route": _route(scope),
                "request_id": request_id,
            },
        )

    def _log(self, scope: Scope, state: _RequestState, start: float, request_id: str) -> None:
        state.logged = True
        settings = self.settings
        path = scope.get("path", "")
        if not settings.access_log or path in settings.exclude_paths:
            return
        end = state.finished or time.perf_counter()
        duration_ms = round((end - start) * 1000, 3)
        status = state.status or 0
        if (
            settings.sample_rate < 1.0
            and status < 400
            and duration_ms < settings.slow_threshold_ms
            and random.random() >= settings.sample_rate
        ):
            return
        fields: dict[str, Any] = {
            "http.request.method": scope.get("method"),
            "url.path": path,
            "http.route": _route(scope),
            "http.response.status_code": status,
            "duration_ms": duration_ms,
            "client.address": (scope.get("client") or (None,))[0],
            "user_agent.original": _header(scope, b"user-agent"),
            "request_id": request_id,
        }
        query = scope.get("query_string")
        if query:
            fields["url.query"] = mask_query(query, self.redactor)
        message = f"{scope.get('method')} {path} {status}"
        if status >= 500:
            _access.error(message, **fields)
        elif status >= 400:
            _access.warning(message, **fields)
        else:
            _access.info(message, **fields)


def _route(scope: Scope) -> str | None:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


class _RequestState:
    __slots__ = ("finished", "logged", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.finished = 0.0
        self.logged = False


def _mark_span_failed(exc: Exception) -> None:
    # What the tracing middleware would have recorded had the exception reached it.
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
