"""gunicorn settings for the asynclog modes of the end-to-end benchmark (``-c`` this file).

The forwarded headers are left to asynclog's middleware, as ``sidecar/gunicorn.conf.py``
ships them: uvicorn's proxy-headers middleware would otherwise rewrite the client first and
asynclog would apply the same headers again, so behind nginx the asynclog app would do that
work twice while the no-logging app, which keeps uvicorn's, does it once.
"""

from __future__ import annotations


def post_worker_init(worker: object) -> None:
    config = getattr(worker, "config", None)
    if config is not None:
        config.proxy_headers = False
