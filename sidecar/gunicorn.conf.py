"""Production gunicorn settings for an asynclog app: a master managing uvicorn workers.

    gunicorn --config sidecar/gunicorn.conf.py example.app:app

Environment: GUNICORN_BIND (default 127.0.0.1:8000; the container image sets 0.0.0.0:8000),
GUNICORN_WORKERS (default 4), GUNICORN_TIMEOUT, GUNICORN_GRACEFUL_TIMEOUT, GUNICORN_KEEPALIVE,
and asynclog's own ASYNCLOG_* variables (ASYNCLOG_SINK names the file every worker appends to).
"""

from __future__ import annotations

import os

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
# Above the idle timeout of a proxy in front would avoid its 502s; 5 s suits a Service or Ingress.
keepalive = _int("GUNICORN_KEEPALIVE", 5)
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


def worker_exit(server: object, worker: object) -> None:
    """Write a worker's last lines ("Worker exiting"); a no-op if the app already drained."""
    asynclog.shutdown()


def on_exit(server: object) -> None:
    """Write the master's last lines ("Shutting down") before it exits."""
    asynclog.shutdown()
