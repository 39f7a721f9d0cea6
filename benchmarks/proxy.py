"""nginx running sidecar/nginx.conf on loopback in front of a gunicorn, for the end-to-end
benchmark and the proxy tests (tests/_nginx.py).

The shipped configuration is used as it is, with only its paths and addresses replaced, each
replacement matching as often as expected: the listen address, the upstream, the certificate
(a throw-away self-signed one), the access log and pid file, nginx's temporary directories,
and optionally `proxy_bind` (so gunicorn sees the proxy at its own loopback address).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "sidecar" / "nginx.conf"
NGINX = shutil.which("nginx") or (
    "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
)
OPENSSL = shutil.which("openssl")
# How many `server` entries the upstream block lists for the one gunicorn.
UPSTREAM_ENTRIES = 8


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate for localhost and 127.0.0.x, made by the openssl CLI."""
    if OPENSSL is None:
        raise RuntimeError("openssl is not installed")
    cert, key = directory / "tls.crt", directory / "tls.key"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:127.0.0.2"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def tls_context() -> ssl.SSLContext:
    """A client context that accepts the throw-away certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _replace(text: str, old: str, new: str, times: int = 1) -> str:
    count = text.count(old)
    if count != times:
        raise RuntimeError(f"sidecar/nginx.conf holds {old!r} {count} times, not {times}")
    return text.replace(old, new)


def render_config(
    directory: Path, listen: str, port: int, upstream_port: int, proxy_bind: str | None = None
) -> Path:
    """sidecar/nginx.conf with this run's addresses and paths, written into `directory`."""
    cert, key = self_signed_certificate(directory)
    text = CONFIG.read_text()
    text = _replace(text, "listen 443 ssl;", f"listen {listen}:{port} ssl;")
    text = _replace(
        text, "server 127.0.0.1:8000 ", f"server 127.0.0.1:{upstream_port} ", UPSTREAM_ENTRIES
    )
    text = _replace(text, "/etc/nginx/tls/tls.crt", str(cert))
    text = _replace(text, "/etc/nginx/tls/tls.key", str(key))
    text = _replace(text, "/var/log/nginx/asynclog-access.log", str(directory / "access.log"))
    text = _replace(text, "/run/nginx-asynclog.pid", str(directory / "nginx.pid"))
    temp = "".join(
        f"    {kind}_temp_path {directory / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = _replace(text, "http {\n", f"http {{\n{temp}")
    if proxy_bind:
        text = _replace(
            text, "proxy_pass http://asynclog_app;",
            f"proxy_pass http://asynclog_app;\n            proxy_bind {proxy_bind};",
        )  # fmt: skip
    config = directory / "nginx.conf"
    config.write_text(text)
    return config


def wait_listening(
    process: subprocess.Popen[bytes], host: str, port: int, timeout: float, error_log: Path
) -> None:
    """Until nginx accepts connections on `port`; RuntimeError if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited: {error_log.read_text(errors='replace')[-300:]}")
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("nginx not listening") from None
            time.sleep(0.1)


def command(directory: Path, config: Path) -> list[str]:
    """nginx in the foreground on `config`, its errors on stderr."""
    if NGINX is None:
        raise RuntimeError("nginx is not installed")
    # As root, nginx's workers would switch to `nobody`, who cannot enter private directories.
    directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
    return [NGINX, "-p", str(directory), "-e", "stderr", "-c", str(config), "-g", directives]
