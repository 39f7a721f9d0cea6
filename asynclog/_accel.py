"""The optional C extension (`_speedups.c`), or None when it was not built (no C compiler at
install time) or `ASYNCLOG_NO_EXTENSIONS` is set. Lines and counts are the same either way."""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["speedups"]


def _load() -> ModuleType | None:
    if os.environ.get("ASYNCLOG_NO_EXTENSIONS"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups


speedups = _load()
