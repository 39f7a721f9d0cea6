"""The optional C extension (`_speedups.c`), or None when it was not built (no C compiler at
install time), refused to load (built for another record layout: see `_record`), or
`ASYNCLOG_NO_EXTENSIONS` is set. Lines and counts are the same either way."""

from __future__ import annotations

import os
import warnings
from types import ModuleType

__all__ = ["speedups"]


def _load() -> ModuleType | None:
    if os.environ.get("ASYNCLOG_NO_EXTENSIONS"):
        return None
    try:
        from . import _speedups
    except ModuleNotFoundError:
        return None
    except ImportError as exc:  # a stale build: slower, not wrong, but worth a word
        warnings.warn(f"{exc}; the pure-Python path runs", RuntimeWarning, stacklevel=2)
        return None
    return _speedups


speedups = _load()
