"""Which peers' X-Forwarded-For and X-Forwarded-Proto are believed, and what they then change in
the scope: read as uvicorn's proxy-headers middleware reads them, so the app sees the same
client whether uvicorn or asynclog applied them."""

from __future__ import annotations

import ipaddress

from ._asgi import Scope

__all__ = ["TrustedProxies", "apply_forwarded", "apply_forwarded_headers"]

# Verdicts kept on parsed hosts before the cache is cleared.
_PARSED_HOSTS_KEPT = 1024


class TrustedProxies:
    """The peers whose forwarded headers are believed: addresses, networks, or "*" for any."""

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


def apply_forwarded(
    scope: Scope, trusted: TrustedProxies, forwarded_for: str | None, forwarded_proto: str | None
) -> None:
    """A trusted peer's forwarded client and scheme, written into the scope as uvicorn's
    proxy-headers middleware does, so the app's request.client and url_for() see them too.
    The caller has read the headers (`forwarded_proto` stripped and lower-cased) and found
    the peer in `trusted`."""
    if forwarded_for is not None:
        original = trusted.client(forwarded_for)
        if original[0]:  # an empty header names no one
            scope["client"] = original
    if forwarded_proto in ("http", "https"):
        # A websocket's scheme is ws or wss.
        websocket = scope["type"] == "websocket"
        scope["scheme"] = forwarded_proto.replace("http", "ws") if websocket else forwarded_proto


def apply_forwarded_headers(scope: Scope, trusted: TrustedProxies) -> None:
    """Read the scope's forwarded headers and apply them if its peer is trusted: for a scope
    the access middleware does not otherwise read (a websocket), as gunicorn.conf.py turns
    uvicorn's proxy headers off for every scope, not only http."""
    forwarded_for = forwarded_proto = None
    for key, value in scope.get("headers") or ():
        if key == b"x-forwarded-for":
            # Repeated headers are one list (RFC 9110, section 5.3).
            text = value.decode("latin-1")
            forwarded_for = text if forwarded_for is None else f"{forwarded_for},{text}"
        elif key == b"x-forwarded-proto":
            forwarded_proto = value.decode("latin-1").strip().lower()
    client = scope.get("client")
    if (forwarded_for is not None or forwarded_proto is not None) and (
        (client[0] if client else None) in trusted
    ):
        apply_forwarded(scope, trusted, forwarded_for, forwarded_proto)


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
