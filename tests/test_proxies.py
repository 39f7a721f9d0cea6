"""Forwarded headers: believed from trusted proxies only, applied as uvicorn applies them, for
http and websocket scopes alike."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from _fastapi_app import lines_of

import asynclog
from asynclog._middleware import AccessLogMiddleware, RequestLogConfig
from asynclog._proxies import TrustedProxies, _host_port, apply_forwarded_headers
from asynclog._redact import Redactor
from asynclog._settings import AppSettings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _forwarded(log_path: Path, peer: str | None, headers: list[tuple[bytes, bytes]], **settings: Any
               ) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """One request from `peer` through the middleware: what the app saw, and its access line."""
    asynclog.configure(sink=str(log_path), format="json")
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(client=scope["client"], scheme=scope["scheme"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    config = RequestLogConfig(AppSettings(**settings), Redactor(frozenset()))
    scope = {"type": "http", "method": "GET", "path": "/p", "scheme": "http",
             "headers": headers, "client": (peer, 40000) if peer else None}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    asyncio.run(AccessLogMiddleware(app, config)(scope, receive, send))
    [access] = lines_of(log_path, "asynclog.access")
    return seen, access


@pytest.mark.parametrize(
    ("peer", "allow", "forwarded_for", "client"),
    [
        # Loopback is trusted by default; an untrusted peer's forged header is ignored.
        ("127.0.0.1", ("127.0.0.1", "::1"), b"203.0.113.9", "203.0.113.9"),
        ("198.51.100.7", ("127.0.0.1", "::1"), b"203.0.113.9", "198.51.100.7"),
        # The rightmost address that is not a trusted proxy: the forged entries to its left lose.
        ("10.1.2.3", ("10.0.0.0/8",), b"6.6.6.6, 203.0.113.9, 10.4.4.4", "203.0.113.9"),
        ("10.1.2.3", ("*",), b"203.0.113.9, 10.4.4.4", "203.0.113.9"),
        ("::1", ("::1",), b"2001:db8::5", "2001:db8::5"),
    ],
)
def test_forwarded_client_only_from_trusted_proxies(
    log_path: Path, peer: str, allow: tuple[str, ...], forwarded_for: bytes, client: str
) -> None:
    headers = [(b"x-forwarded-for", forwarded_for), (b"x-forwarded-proto", b"https")]
    seen, access = _forwarded(log_path, peer, headers, forwarded_allow_ips=allow)
    trusted = client != peer
    assert access["client.address"] == client == seen["client"][0]
    assert access["network.peer.address"] == peer
    assert access["url.scheme"] == seen["scheme"] == ("https" if trusted else "http")


def test_no_forwarded_headers_keep_the_peer(log_path: Path) -> None:
    seen, access = _forwarded(log_path, "127.0.0.1", [])
    assert seen == {"client": ("127.0.0.1", 40000), "scheme": "http"}
    assert access["client.address"] == access["network.peer.address"] == "127.0.0.1"
    assert access["url.scheme"] == "http"


@pytest.mark.parametrize(
    ("peer", "allow", "forwarded_for", "proto"),
    [
        ("127.0.0.1", "127.0.0.1", b"203.0.113.9", b"https"),
        ("198.51.100.7", "127.0.0.1", b"203.0.113.9", b"https"),
        ("10.1.2.3", "10.0.0.0/8", b"6.6.6.6, 203.0.113.9, 10.4.4.4", b"http"),
        ("10.1.2.3", "*", b"203.0.113.9, 10.4.4.4", b"https"),
        ("10.1.2.3", "10.0.0.0/8", b"10.9.9.9, 10.4.4.4", b"ftp"),
        # Ports, bracketed IPv6, another spelling of a trusted address, garbage, nothing.
        ("127.0.0.1", "127.0.0.1", b"203.0.113.9:4711", b"https"),
        ("::1", "::1", b"[2001:db8::5]:443, 0:0:0:0:0:0:0:1", b"https"),
        ("127.0.0.1", "127.0.0.1", b"unknown, \x1b[31m:x", b"https"),
        ("127.0.0.1", "127.0.0.1", b"", b""),
        # Ports int() reads or rejects: a Latin-1 superscript passes str.isdigit() only.
        ("127.0.0.1", "*", b"203.0.113.9:\xb2, 10.4.4.4", b"https"),
        ("::1", "::1", b"[2001:db8::5]:\xb3", b"https"),
        ("127.0.0.1", "127.0.0.1", b"203.0.113.9: 80", b"https"),
        # A peer with no address (a unix socket, nginx's usual upstream): trusted by "*" only.
        (None, "*", b"203.0.113.9", b"https"),
        (None, "127.0.0.1", b"203.0.113.9", b"https"),
    ],
)
def test_forwarded_headers_give_the_app_what_uvicorn_would(
    log_path: Path, peer: str | None, allow: str, forwarded_for: bytes, proto: bytes
) -> None:
    """gunicorn.conf.py hands the forwarded headers to asynclog instead of uvicorn: the app
    must see the same client and scheme as with uvicorn's own middleware, without asynclog."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    headers = [(b"x-forwarded-for", forwarded_for), (b"x-forwarded-proto", proto)]
    without: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        without.update(client=scope["client"], scheme=scope["scheme"])

    scope = {"type": "http", "method": "GET", "path": "/p", "scheme": "http",
             "headers": headers, "client": (peer, 40000) if peer else None}  # fmt: skip
    # uvicorn's middleware neither receives nor sends for an http scope it passes on.
    uvicorn = ProxyHeadersMiddleware(app, trusted_hosts=allow)
    asyncio.run(uvicorn(scope, None, None))
    seen, _ = _forwarded(log_path, peer, headers, forwarded_allow_ips=allow.split(","))
    assert seen == without


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "proto"),
    [
        ("127.0.0.1", b"203.0.113.9", b"https"),
        ("127.0.0.1", b"203.0.113.9:4711", b"http"),
        ("198.51.100.7", b"203.0.113.9", b"https"),
    ],
)
def test_websocket_scopes_get_the_forwarded_client_too(
    peer: str, forwarded_for: bytes, proto: bytes
) -> None:
    """gunicorn.conf.py turns uvicorn's proxy-headers middleware off for every scope: a
    websocket behind the proxy must still see the client and scheme uvicorn would give it."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    headers = [(b"x-forwarded-for", forwarded_for), (b"x-forwarded-proto", proto)]

    def websocket() -> dict[str, Any]:
        return {"type": "websocket", "path": "/ws", "scheme": "ws", "client": (peer, 40000),
                "headers": headers}  # fmt: skip

    seen: list[tuple[Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["client"], scope["scheme"]))

    asyncio.run(ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1")(websocket(), None, None))
    settings = AppSettings(forwarded_allow_ips=("127.0.0.1",))
    config = RequestLogConfig(settings, Redactor(frozenset()))
    asyncio.run(AccessLogMiddleware(app, config)(websocket(), None, None))  # type: ignore[arg-type]
    assert seen[1] == seen[0]


def test_trusted_proxy_verdicts_are_kept_bounded_and_stay_right() -> None:
    from asynclog._proxies import _PARSED_HOSTS_KEPT, TrustedProxies

    trusted = TrustedProxies(("10.0.0.0/8", "::1"))
    for _ in range(2):  # the second round answers from the kept verdicts
        assert "10.1.2.3" in trusted
        assert "0:0:0:0:0:0:0:1" in trusted  # another spelling of ::1
        assert "11.0.0.1" not in trusted
        assert "not-an-address" not in trusted
    # Forged hosts, more than are kept: the memory stays bounded, the verdicts right.
    for n in range(3 * _PARSED_HOSTS_KEPT):
        assert f"11.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" not in trusted
        assert len(trusted._parsed) <= _PARSED_HOSTS_KEPT
    assert "10.9.9.9" in trusted


# The forwarded-header parts on their own.


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("203.0.113.9", ("203.0.113.9", 0)),
        ("203.0.113.9:4711", ("203.0.113.9", 4711)),
        ("[2001:db8::5]:443", ("2001:db8::5", 443)),
        ("[2001:db8::5]", ("2001:db8::5", 0)),
        ("2001:db8::5", ("2001:db8::5", 0)),  # unbracketed IPv6: no port to split off
        ("[2001:db8::5", ("[2001:db8::5", 0)),  # unclosed: kept whole
        ("[2001:db8::5]x", ("[2001:db8::5]x", 0)),
        ("203.0.113.9:http", ("203.0.113.9:http", 0)),
        ("[2001:db8::5]:\xb3", ("2001:db8::5", 0)),
    ],
)
def test_a_hop_is_read_as_host_and_port(value: str, expected: tuple[str, int]) -> None:
    assert _host_port(value) == expected


def test_the_client_is_the_rightmost_hop_no_trusted_proxy_added() -> None:
    trusted = TrustedProxies(("10.0.0.0/8",))
    assert trusted.client("6.6.6.6, 203.0.113.9, 10.4.4.4") == ("203.0.113.9", 0)
    assert trusted.client(" 203.0.113.9:80 ") == ("203.0.113.9", 80)
    assert trusted.client("10.1.1.1, 10.2.2.2") == ("10.1.1.1", 0)  # all trusted: the leftmost
    assert TrustedProxies(("*",)).client("6.6.6.6, 203.0.113.9") == ("6.6.6.6", 0)


def test_forwarded_headers_are_applied_to_a_scope_only_from_a_trusted_peer() -> None:
    trusted = TrustedProxies(("127.0.0.1",))
    headers = [
        (b"x-forwarded-for", b"6.6.6.6"),
        (b"x-forwarded-for", b"203.0.113.9"),  # repeated: one list, as one header
        (b"x-forwarded-proto", b" HTTPS "),
    ]
    scope: dict[str, Any] = {
        "type": "websocket",
        "scheme": "ws",
        "client": ("127.0.0.1", 40000),
        "headers": headers,
    }
    apply_forwarded_headers(scope, trusted)
    assert (scope["client"], scope["scheme"]) == (("203.0.113.9", 0), "wss")
    untrusted = {**scope, "client": ("198.51.100.7", 40000), "scheme": "ws"}
    apply_forwarded_headers(untrusted, trusted)
    assert (untrusted["client"], untrusted["scheme"]) == (("198.51.100.7", 40000), "ws")
