"""A real nginx running sidecar/nginx.conf on loopback, in front of a real gunicorn (the
configuration is rendered by benchmarks/proxy.py, which the end-to-end benchmark shares)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _fluentbit import stop_process

from benchmarks import proxy

NGINX = proxy.NGINX
OPENSSL = proxy.OPENSSL
tls_context = proxy.tls_context
WRK = shutil.which("wrk")
# The proxy connects from here (and listens here); gunicorn trusts only this address.
PROXY_ADDRESS = "127.0.0.2"
# Where a client that is not the proxy connects from.
ATTACKER_ADDRESS = "127.0.0.3"


@dataclass
class Nginx:
    """A running nginx: its process, its JSON access log and the URL it serves."""

    process: subprocess.Popen[bytes]
    access_log: Path
    error_log: Path
    url: str
    port: int

    def entries(self) -> list[dict[str, Any]]:
        """Every line of the JSON access log, decoded (each must be whole JSON)."""
        text = self.access_log.read_text(encoding="utf-8") if self.access_log.exists() else ""
        return [json.loads(line) for line in text.splitlines()]


@contextmanager
def nginx_serving(directory: Path, upstream_port: int) -> Iterator[Nginx]:
    """nginx with sidecar/nginx.conf on PROXY_ADDRESS, proxying to gunicorn on 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    port = proxy.free_port(PROXY_ADDRESS)
    access_log, error_log = directory / "access.log", directory / "error.log"
    config = proxy.render_config(directory, PROXY_ADDRESS, port, upstream_port, PROXY_ADDRESS)
    with error_log.open("wb") as err:
        process = subprocess.Popen(proxy.command(directory, config), stdout=err, stderr=err)
    url = f"https://{PROXY_ADDRESS}:{port}"
    try:
        proxy.wait_listening(process, PROXY_ADDRESS, port, 30, error_log)
        yield Nginx(process, access_log, error_log, url, port)
    finally:
        if process.poll() is None:
            stop_process(process, timeout=30)


def raw_request(
    host: str,
    port: int,
    request: bytes,
    *,
    source: str | None = None,
    tls: bool = False,
    timeout: float = 30,
) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as given on a new connection (from `source`, if named); return the
    status, the lowercase headers and the body of the response, read to the close."""
    chunks = []
    with (
        socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        ) as plain,
        tls_context().wrap_socket(plain) if tls else plain as sock,
    ):
        sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ssl.SSLEOFError:  # a peer that closes without TLS close_notify: the end
            pass
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    match = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
    assert match, raw[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(match.group(1)), headers, body


def get_request(path: str, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n".encode(
        "latin-1"
    )
