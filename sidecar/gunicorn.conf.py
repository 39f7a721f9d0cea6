"""Production gunicorn settings for an asynclog app: a master managing uvicorn workers.

    gunicorn --config sidecar/gunicorn.conf.py example.app:app

Environment: GUNICORN_BIND (default 127.0.0.1:8000; the container image sets 0.0.0.0:8000),
GUNICORN_WORKERS (default 4), GUNICORN_TIMEOUT, GUNICORN_GRACEFUL_TIMEOUT, GUNICORN_KEEPALIVE,
FORWARDED_ALLOW_IPS (the proxies trusted for X-Forwarded-For/-Proto; default loopback only),
LOG_ROTATE_BYTES (default 100 MiB, 0 turns rotation off), LOG_DISK_BUDGET_BYTES (default three
times LOG_ROTATE_BYTES), LOG_SHIPPER_DB (Fluent Bit's offsets DB, default fluent-bit-tail.db
beside the sink), and asynclog's own ASYNCLOG_*
variables (ASYNCLOG_SINK names the file every worker appends to).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import sqlite3
import sys
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
# LOG_ROTATE_BYTES; every process reopens app.log within a second. app.log.1 is replaced only
# once Fluent Bit's offsets DB (LOG_SHIPPER_DB) shows it read to the end: a sidecar that falls
# behind makes app.log grow instead, up to LOG_DISK_BUDGET_BYTES for the two files. Only the
# budget forces an unshipped file out, and then the lines lost are counted (_count_unshipped,
# in unshipped.log beside the sink).
_ROTATE_CHECK_SECONDS = 1.0
_UNSHIPPED_MESSAGE = "log lines deleted unshipped"


def _offsets_read(db: str) -> dict[int, int] | None:
    """inode -> the offset Fluent Bit's tail has read to, from its offsets DB (None: unreadable
    now, {}: no DB yet). Needs the tail's `db.locking` off, else the DB is Fluent Bit's alone."""
    if not os.path.exists(db):
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)) as c:
            rows = c.execute("SELECT inode, offset FROM in_tail_files").fetchall()
    except sqlite3.Error:
        return None
    return {int(inode): int(offset) for inode, offset in rows}


def _count_unshipped(backup: str, shipped: int, ledger: str) -> None:
    """Count the lines of `backup` past `shipped`, which the disk budget deletes unread: one
    asynclog line on stderr, and the same line appended to `ledger`, a small file beside the
    sink that is never rotated, so the sidecar ships it and counts it in its metrics even while
    it is behind on the sink."""
    with open(backup, "rb") as file:
        file.seek(shipped)
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
    now = datetime.datetime.now(datetime.timezone.utc)
    notice = {
        "time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": "error",
        "logger": "asynclog.rotation",
        "message": _UNSHIPPED_MESSAGE,
        "lines": lines,
        "bytes": os.path.getsize(backup) - shipped,
        "file": backup,
    }
    line = json.dumps(notice, separators=(",", ":")) + "\n"
    sys.stderr.write(line)
    sys.stderr.flush()
    with open(ledger, "a", encoding="utf-8") as file:
        file.write(line)


def _rotate_when_full(path: str, max_bytes: int, budget: int, db: str) -> None:
    log = logging.getLogger("gunicorn.error")
    backup = f"{path}.1"
    ledger = os.path.join(os.path.dirname(path), "unshipped.log")
    # The furthest offset ever seen per inode: Fluent Bit drops a rotated file's row when it
    # stops following it (Rotate_Wait), read to the end or not.
    read: dict[int, int] = {}
    while True:
        time.sleep(_ROTATE_CHECK_SECONDS)
        try:
            for inode, offset in (_offsets_read(db) or {}).items():
                read[inode] = max(read.get(inode, 0), offset)
            size = os.stat(path).st_size
            if size < max_bytes:
                continue
            if os.path.exists(backup):
                old = os.stat(backup)
                shipped = min(read.get(old.st_ino, 0), old.st_size)
                if shipped < old.st_size:
                    if size + old.st_size < budget:
                        continue  # the shipper is behind: wait for it, within the budget
                    _count_unshipped(backup, shipped, ledger)
                os.unlink(backup)
                read.pop(old.st_ino, None)  # the inode may be reused by a new file
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
    budget = _int("LOG_DISK_BUDGET_BYTES", 3 * max_bytes)
    if budget < 2 * max_bytes:
        raise ValueError(f"LOG_DISK_BUDGET_BYTES ({budget}) must be at least 2 x LOG_ROTATE_BYTES")
    default_db = os.path.join(os.path.dirname(sink), "fluent-bit-tail.db")
    db = os.environ.get("LOG_SHIPPER_DB", "").strip() or default_db
    thread = threading.Thread(
        target=_rotate_when_full,
        args=(sink, max_bytes, budget, db),
        name="log-rotation",
        daemon=True,
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
