"""Bounding a JSON line's size: the rare path both encoders share for a line over the bound.

A line longer than `max_line_bytes` would be skipped by a log shipper (Fluent Bit's tail skips a
line over its `buffer_max_size`) or refused by a backend (Loki's `max_line_size`), and the
record lost with no trace in the stream. Instead its largest values are shortened until it fits,
and `asynclog.substituted` names each one with its size before and after. It runs on the writer
thread, only for a line already over the bound, on the bytes the encoder wrote: every line
under the bound stays byte for byte what the encoder made.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ._line import _JSON_OPTIONS, _MAX_DEPTH, SUBSTITUTED_KEY, format_time

__all__ = ["shorten_line"]

# Never shortened: what identifies the line (and the notes that say what was cut).
_KEPT = frozenset({"time", "level", "logger", SUBSTITUTED_KEY})
# A value is shortened to no less than this many bytes, so each keeps a readable head.
_MIN_KEEP = 64
# Notes beyond this many are summed up in one, so a line of many large values still fits.
_MAX_NOTES = 16
_MISSING = object()


def shorten_line(data: bytes, limit: int) -> bytes:
    """`data`, one JSON line over `limit` bytes, as a line of at most `limit` bytes: its largest
    string values shortened (then, if that is not enough, its largest values written as
    shortened JSON text), each listed in `asynclog.substituted`. A line that cannot be made to
    fit so keeps only its time, level, logger and the head of its message. Never raises."""
    try:
        line = orjson.loads(data)
    except orjson.JSONDecodeError:
        line = None
    if type(line) is not dict:
        return _minimal({}, len(data), limit, "not a JSON object")
    try:
        shortened = _shortened(line, len(data), limit)
    except Exception:  # a gap here must not cost the record: keep what identifies it
        shortened = None
    return shortened or _minimal(line, len(data), limit, "fields dropped")


def _shortened(line: dict[str, Any], size: int, limit: int) -> bytes | None:
    notes: list[str] = [n for n in line.get(SUBSTITUTED_KEY, ()) if type(n) is str]
    # First the strings, at any depth, so the structure stays; else whole top-level values.
    for whole in (False, True):
        slots = _slots(line, whole)
        sizes = [slot[3] for slot in slots]
        # Each note costs ~100 bytes: room for them is freed too, for the values that can be
        # cut (counting every value made a line a few bytes over look out of reach).
        cuttable = sum(1 for n in sizes if n > _MIN_KEEP)
        excess = size - limit + 120 * min(cuttable, _MAX_NOTES)
        for _attempt in range(3):
            cap = _cap(sizes, excess)
            if cap is None:
                break
            trial = _apply(line, slots, cap, notes, limit)
            if len(trial) <= limit:
                return trial
            excess += len(trial) - limit
    return None


def _slots(line: dict[str, Any], whole: bool) -> list[tuple[Any, Any, str, int]]:
    """Where a value may be shortened: (container, key, path, its size as JSON), largest first.
    With `whole`, every top-level value; else every string, at any depth."""
    found: list[tuple[Any, Any, str, int]] = []
    for key, value in line.items():
        if key in _KEPT:
            continue
        if whole:
            found.append((line, key, key, len(orjson.dumps(value))))
        else:
            _strings(line, key, value, key, 0, found)
    found.sort(key=lambda slot: slot[3], reverse=True)
    return found


def _strings(container: Any, key: Any, value: Any, path: str, depth: int, found: list[Any]) -> None:
    if type(value) is str:
        # Skipped unmeasured: a str this short is under _MIN_KEEP bytes even fully escaped.
        if len(value) > _MIN_KEEP // 6:
            found.append((container, key, path, len(orjson.dumps(value))))
    elif depth < _MAX_DEPTH and type(value) is dict:
        for k, v in value.items():
            _strings(value, k, v, f"{path}.{k}", depth + 1, found)
    elif depth < _MAX_DEPTH and type(value) is list:
        for i, v in enumerate(value):
            _strings(value, i, v, f"{path}[{i}]", depth + 1, found)


def _cap(sizes: list[int], excess: int) -> int | None:
    """The largest size to cut every value over it down to so that `excess` bytes go, or None
    if even cutting all of them to `_MIN_KEEP` does not free that much. `sizes` is sorted,
    largest first."""
    freed = 0
    for n, size in enumerate(sizes, 1):
        if size <= _MIN_KEEP:
            break
        following = max(sizes[n] if n < len(sizes) else 0, _MIN_KEEP)
        # Cutting the n largest down to `following` frees this much:
        if freed + (size - following) * n >= excess:
            return max(size - (excess - freed + n - 1) // n, _MIN_KEEP)
        freed += (size - following) * n
        # From here on the n largest stand at `following`: the next size joins them.
    return None


def _apply(
    line: dict[str, Any],
    slots: list[tuple[Any, Any, str, int]],
    cap: int,
    notes: list[str],
    limit: int,
) -> bytes:
    """The line with every slot over `cap` bytes cut to `cap`, and the notes saying so."""
    cut: list[tuple[Any, Any, Any]] = []
    added: list[str] = []
    for container, key, path, size in slots:
        if size <= cap:
            break
        value = container[key]
        text = value if type(value) is str else orjson.dumps(value).decode()
        short = _head(text, cap)
        cut.append((container, key, value))
        container[key] = short
        added.append(f"{path}: {size} bytes shortened to {len(orjson.dumps(short))} "
                     f"(max_line_bytes {limit})")  # fmt: skip
    if len(added) > _MAX_NOTES:
        rest = added[_MAX_NOTES - 1 :]
        added = [*added[: _MAX_NOTES - 1], f"and {len(rest)} more values shortened"]
    previous = line.get(SUBSTITUTED_KEY, _MISSING)
    line[SUBSTITUTED_KEY] = [*notes, *added]
    try:
        return orjson.dumps(line, option=_JSON_OPTIONS)
    finally:
        # Undone, so a later attempt with another cap starts from the same line.
        for container, key, value in reversed(cut):
            container[key] = value
        if previous is _MISSING:
            del line[SUBSTITUTED_KEY]
        else:
            line[SUBSTITUTED_KEY] = previous


def _head(text: str, size: int) -> str:
    """The longest head of `text` whose JSON is at most `size` bytes."""
    encoded = len(orjson.dumps(text))
    n = len(text)
    while encoded > size and n > 0:
        # Proportional first (escapes and multi-byte characters make it inexact), then smaller.
        n = min(n - 1, n * (size - 2) // max(encoded - 2, 1))
        encoded = len(orjson.dumps(text[:n]))
    return text[:n]


def _minimal(line: dict[str, Any], size: int, limit: int, why: str) -> bytes:
    """What identifies a record, when shortening its values cannot make it fit."""
    stamp = line.get("time")
    if type(stamp) is not str or len(stamp) > 64:
        stamp = format_time(time.time())
    out: dict[str, Any] = {
        "time": stamp,
        "level": _head(str(line.get("level", "error")), 32),
        "logger": _head(str(line.get("logger", "")), 256),
        "message": "",
        SUBSTITUTED_KEY: [f"line: {size} bytes over max_line_bytes {limit}: {why}"],
    }
    room = limit - len(orjson.dumps(out, option=_JSON_OPTIONS))
    out["message"] = _head(str(line.get("message", "")), max(room, 2))
    return orjson.dumps(out, option=_JSON_OPTIONS)
