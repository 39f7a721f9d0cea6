"""Production gunicorn settings for an asynclog app: a master managing uvicorn workers.

    gunicorn --config sidecar/gunicorn.conf.py example.app:app

Environment: GUNICORN_BIND (default 127.0.0.1:8000; the container image sets 0.0.0.0:8000),
GUNICORN_WORKERS (default 4), GUNICORN_TIMEOUT, GUNICORN_GRACEFUL_TIMEOUT, GUNICORN_KEEPALIVE,
FORWARDED_ALLOW_IPS (the proxies trusted for X-Forwarded-For/-Proto; default loopback only),
LOG_ROTATE_BYTES (default 100 MiB, 0 turns rotation off), and asynclog's own ASYNCLOG_*
variables (ASYNCLOG_SINK names the file every worker appends to).
"""

from __future__ import annotations

import logging
import os
import threading
import time

import asynclog


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = _int("GUNICORN_WORKERS", 4)
# uvicorn.workers is deprecated; the worker lives in the uvicorn-worker package now.
worker_class = "uvicorn_worker.UvicornWorker"

# Restart each worker after about 1000 requests, staggered so they never recycle together.
max_requests = 1000
max_requests_jitter = 50
# A worker that stops heartbeating for `timeout` seconds is killed; on SIGTERM each worker gets
# `graceful_timeout` to finish requests and drain asynclog (lifespan shutdown).
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Above the idle timeout of a proxy in front would avoid its 502s; 5 s suits a Service or Ingress
# (sidecar/nginx.conf keeps idle upstream connections for 4 s).
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# The proxies whose X-Forwarded-For and X-Forwarded-Proto name the client and the scheme: a
# comma-separated list of addresses or networks, "*" for any. Loopback only by default, so a
# peer elsewhere cannot forge its address. asynclog's middleware reads the same variable.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "").strip() or "127.0.0.1,::1"
# Code reloading watches files and restarts workers: a development tool, never in production.
reload = False
# Heartbeat files on tmpfs: /tmp may be read-only or slow disk in a container.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# gunicorn 25.1+ opens a control socket under $HOME for `gunicornc` (resize, reload, stop): a
# management surface the container does not need, in a home that a read-only root cannot hold.
control_socket_disable = True
# Requests are logged once, by asynclog's access middleware, not again by gunicorn.
accesslog = None

# The master's own lines ("Booting worker", "Handling signal") go through asynclog as JSON to
# the same sink as the workers'. uvicorn's worker reuses gunicorn.error's handlers for
# uvicorn.error, so its lines follow too. dictConfig replaces gunicorn's stderr handler, also
# after a SIGHUP reload.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["asynclog"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["asynclog"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
    },
    "handlers": {"asynclog": {"class": "asynclog.AsyncLogHandler"}},
}


def on_starting(server: object) -> None:
    """Start asynclog's writer in the master; forked workers restart it by themselves."""
    asynclog.configure()


# asynclog appends to one file and only reopens it when renamed; nothing else bounds its size,
# and a full emptyDir gets the pod evicted. The master renames app.log to app.log.1 past
# LOG_ROTATE_BYTES; every process reopens app.log within a second, and Fluent Bit follows the
# renamed file for its Rotate_Wait (30 s). app.log.1 is replaced only once it has been idle for
# longer than that, so at most two files are on the volume.
_ROTATE_CHECK_SECONDS = 1.0
_ROTATED_IDLE_SECONDS = 60.0


def _rotate_when_full(path: str, max_bytes: int) -> None:
    log = logging.getLogger("gunicorn.error")
    backup = f"{path}.1"
    while True:
        time.sleep(_ROTATE_CHECK_SECONDS)
        try:
            if os.stat(path).st_size < max_bytes:
                continue
            if os.path.exists(backup):
                if time.time() - os.stat(backup).st_mtime < _ROTATED_IDLE_SECONDS:
                    continue
                os.unlink(backup)
            os.rename(path, backup)
        except OSError as error:  # a missing file is recreated by the next write
            if not isinstance(error, FileNotFoundError):
                log.warning("log rotation failed: %s", error)
            continue
        asynclog.reopen()
        log.info("rotated %s to %s", path, backup)


def when_ready(server: object) -> None:
    """Start the size-based rotation of a file sink (gunicorn calls this once, at startup)."""
    sink = os.environ.get("ASYNCLOG_SINK", "stdout")
    max_bytes = _int("LOG_ROTATE_BYTES", 100 * 1024 * 1024)
    if sink.lower() in ("stdout", "stderr") or max_bytes <= 0:
        return
    thread = threading.Thread(
        target=_rotate_when_full, args=(sink, max_bytes), name="log-rotation", daemon=True
    )
    thread.start()


def post_worker_init(worker: object) -> None:
    """Leave the forwarded headers to asynclog's middleware (it applies the same list):
    uvicorn's would overwrite the peer's address before the app sees it, and the access line
    would lose `network.peer.address`, the proxy's."""
    config = getattr(worker, "config", None)
    if config is not None:
        config.proxy_headers = False


def worker_exit(server: object, worker: object) -> None:
    """Write a worker's last lines ("Worker exiting"); a no-op if the app already drained."""
    asynclog.shutdown()


def on_exit(server: object) -> None:
    """Write the master's last lines ("Shutting down") before it exits."""
    asynclog.shutdown()
