"""What every line is made of: its reserved keys, its level names and time stamps, and the
options it is encoded with. The encoder, the fallback and `_shorten` all write with these."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson

__all__ = [
    "RENAME_PREFIX",
    "RESERVED_KEYS",
    "SUBSTITUTED_KEY",
    "format_time",
    "level_name",
]

RESERVED_KEYS = frozenset(
    {"time", "level", "logger", "message", "trace_id", "span_id", "exception"}
)
RENAME_PREFIX = "field."
SUBSTITUTED_KEY = "asynclog.substituted"
_JSON_OPTIONS = orjson.OPT_APPEND_NEWLINE
_MAX_DEPTH = 64
_LEVEL_NAMES = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "critical"}
_DIGITS = [f"{n:03d}" for n in range(1000)]


def level_name(levelno: int) -> str:
    """Lowercase level name: custom stdlib levels keep their registered name."""
    name = _LEVEL_NAMES.get(levelno)
    if name is None:
        name = logging.getLevelName(levelno).lower().replace(" ", "")
    return name


def _time_formatter() -> Callable[[float], str]:
    """A formatter of `time.time()` values as RFC 3339 UTC with microseconds and `Z`, caching
    the date part per second."""
    # One tuple, replaced whole: a thread never sees one second's date with another's.
    cached = (-1, "")

    def format_time(created: float) -> str:
        nonlocal cached
        whole = int(created)
        second, prefix = cached
        if whole != second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))
            cached = (whole, prefix)
        micros = int((created - whole) * 1_000_000)
        # Three-digit strings from a table rather than "%06d": this runs for every line.
        return f"{prefix}{_DIGITS[micros // 1000]}{_DIGITS[micros % 1000]}Z"

    return format_time


format_time = _time_formatter()
