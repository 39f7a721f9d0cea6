"""The console renderer: a line dict as one readable, colourable line of text, with the
record's own text escaped so it can neither forge a line nor drive the terminal."""

from __future__ import annotations

from typing import Any

import orjson

from ._fallback import _default, _safe_repr, _safe_str

__all__ = ["console_line"]

_COLORS = {
    "debug": "\x1b[2m",
    "info": "\x1b[32m",
    "warning": "\x1b[33m",
    "error": "\x1b[31m",
    "critical": "\x1b[1;31m",
}
_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_CONSOLE_SKIP = frozenset({"time", "level", "logger", "message", "exception"})


def _printable(text: str, keep: str = "") -> str:
    """`text` with control characters (newlines, ANSI escapes, NUL...) escaped, so input can
    neither forge a console line nor drive the terminal; characters in `keep` stay as they are."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or c in keep else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def _console_value(value: Any) -> str:
    if isinstance(value, str):
        return value if value and " " not in value and "=" not in value else _safe_repr(value)
    try:
        return orjson.dumps(value, default=_default).decode()
    except Exception:
        return _safe_repr(value)


def console_line(line: dict[str, Any], color: bool) -> bytes:
    level = _printable(str(line["level"]))
    stamp = str(line["time"])[11:23]
    logger, message = _printable(_safe_str(line["logger"])), _printable(_safe_str(line["message"]))
    pairs = " ".join(
        _printable(f"{k}={_console_value(v)}") for k, v in line.items() if k not in _CONSOLE_SKIP
    )
    if color:
        head = f"{_DIM}{stamp}{_RESET} {_COLORS.get(level, '')}{level.upper():<8}{_RESET} "
        head += f"{_DIM}{logger}{_RESET} {message}"
        tail = f"  {_DIM}{pairs}{_RESET}" if pairs else ""
    else:
        head = f"{stamp} {level.upper():<8} {logger} {message}"
        tail = f"  {pairs}" if pairs else ""
    text = head + tail + "\n"
    exception = line.get("exception")
    if isinstance(exception, dict):
        # A traceback is several lines on purpose; other control characters are escaped.
        text += _printable(str(exception.get("stacktrace", "")), keep="\n")
    return text.encode("utf-8", "backslashreplace")
