"""Freeze mutable values on the caller, so a line shows what was passed at call time."""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import decimal
import enum
import pathlib
import sys
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ._accel import speedups
from ._contract import SMALL_OBJECT

__all__ = [
    "FREEZE_NUMPY_OPTIONS",
    "FREEZE_OPTIONS",
    "IMMUTABLE_TYPES",
    "Frozen",
    "all_immutable",
    "json_default",
    "numpy_option",
    "snapshot_args",
    "snapshot_fields",
    "snapshot_value",
]


class _Frozen:
    """JSON bytes of a mutable value, taken on the caller. The writer puts them in the line as
    they are when redaction could not change them, else decodes and masks them."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


# The C extension's type when it is built: its level methods freeze values themselves.
if TYPE_CHECKING:
    Frozen = _Frozen
else:
    Frozen = _Frozen if speedups is None else speedups.Frozen

# Values of these exact types cannot change after the call: they are passed through untouched.
# A set, not a frozenset: enum classes join it the first time one of their members is logged
# (`_is_enum_member`), so later calls pass members through on the one lookup.
IMMUTABLE_TYPES = set(
    {
        str,
        int,
        float,
        bool,
        type(None),
        bytes,
        complex,
        _dt.datetime,
        _dt.date,
        _dt.time,
        _dt.timedelta,
        _dt.timezone,
        uuid.UUID,
        decimal.Decimal,
        pathlib.PurePosixPath,
        pathlib.PosixPath,
        frozenset,
        Frozen,
    }
)
_is_immutable = IMMUTABLE_TYPES.__contains__
all_immutable = IMMUTABLE_TYPES.issuperset
FREEZE_OPTIONS = orjson.OPT_NON_STR_KEYS
FREEZE_NUMPY_OPTIONS = FREEZE_OPTIONS | orjson.OPT_SERIALIZE_NUMPY
_modules = sys.modules


def numpy_option() -> int:
    """`OPT_SERIALIZE_NUMPY` once the app has imported numpy. Set before that, orjson imports
    numpy itself at the first value it does not know: a long pause on whichever thread logs it
    (the event loop, or the writer holding the GIL)."""
    return orjson.OPT_SERIALIZE_NUMPY if "numpy" in _modules else 0


def json_default(obj: Any) -> Any:
    """orjson's hook for types it does not know, the same when freezing on the caller and when
    encoding on the writer: a value that freezes fine also encodes fine, and the other way
    round, so nothing unfrozen (and so unredacted) can reach a line by a different route."""
    dump = getattr(obj, "model_dump", None)  # pydantic v2 models
    if dump is not None and callable(dump):
        return dump(mode="json")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "backslashreplace")
    if isinstance(obj, (decimal.Decimal, pathlib.PurePath)):
        return str(obj)
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    if isinstance(obj, Mapping):
        # Starlette's Headers and QueryParams, mappingproxy, UserDict...: as a dict, so the
        # writer masks secret keys inside (their repr would show every value).
        return dict(obj)
    # Any other object is shown as its repr; a repr that raises fails the encoding, and the
    # writer's fallback substitutes it.
    return repr(obj)


def _compact(data: bytes) -> bytes:
    """orjson's output in a right-sized object. orjson makes it in a buffer of 1 KB or more and
    shrinks it in place, which the allocator pays for dearly while the queue keeps it alive;
    copying a small one costs far less (the C level methods do the same)."""
    return bytes(memoryview(data)) if len(data) <= SMALL_OBJECT else data


def snapshot_value(value: Any) -> Any:
    """Return a value that later mutation of `value` cannot change.

    JSON-encoding with orjson is the cheapest deep copy for the usual dict/list/dataclass field.
    Values orjson refuses (huge ints, cycles, surrogates, a repr that raises) are passed as a
    private copy; the writer refuses them too and its fallback encodes them.
    """
    if type(value) is tuple and all(map(_is_immutable, map(type, value))):
        return value
    options = FREEZE_NUMPY_OPTIONS if "numpy" in _modules else FREEZE_OPTIONS
    try:
        # Without a default hook orjson runs no Python code: it holds the GIL from start to end,
        # so no other thread can change the value while it is walked.
        return Frozen(_compact(orjson.dumps(value, option=options)))
    except orjson.JSONEncodeError:
        pass
    # The hook runs Python code, and another thread may then change a dict or list orjson is in
    # the middle of: orjson can crash the process (seen with orjson 3.13 on CPython 3.11). So it
    # walks a private copy, whose containers nobody else holds.
    try:
        private = _private_copy(value, {}, 0)
    except Exception:  # a mapping that raises, a stack too deep...: the writer's fallback copes
        return value
    try:
        return Frozen(_compact(orjson.dumps(private, default=json_default, option=options)))
    except Exception:
        return private


# Deeper than orjson goes (254): below this the copy keeps the original, which orjson refuses
# anyway, so the writer's fallback (pure Python, safe under mutation) handles it.
_COPY_DEPTH = 300


def _private_copy(value: Any, memo: dict[int, tuple[Any, Any]], depth: int) -> Any:
    """Containers copied (each in one C call, so another thread cannot tear it), dataclasses and
    other mappings turned into dicts, pydantic models dumped; other objects kept as they are.
    A container or dataclass met twice is copied once, so cycles stay cycles (the writer cuts
    them). `memo` maps an id to (the original, its copy): holding the original keeps it alive
    for the whole walk, so its id cannot be reused by another object (a temporary from a
    mapping's `items()`, say) and answered with the wrong copy."""
    if type(value) in IMMUTABLE_TYPES or depth > _COPY_DEPTH:
        return value
    known = memo.get(id(value))
    if known is not None:
        return known[1]
    if isinstance(value, (list, tuple, set, frozenset)):
        items: list[Any] = []
        memo[id(value)] = (value, items)
        items.extend([_private_copy(item, memo, depth + 1) for item in list(value)])
        return items
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        pairs = [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
    else:
        dump = getattr(value, "model_dump", None)
        if dump is not None and callable(dump):
            try:
                return dump(mode="json")  # a fresh structure
            except Exception:
                return value
        return value
    out: dict[Any, Any] = {}
    memo[id(value)] = (value, out)
    for key, item in pairs:
        out[key] = _private_copy(item, memo, depth + 1)
    return out


def snapshot_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Return `fields` itself when every value is immutable, else a copy with frozen values."""
    if all_immutable(map(type, fields.values())):
        return fields
    return {
        k: v if type(v) in IMMUTABLE_TYPES or _is_enum_member(v) else snapshot_value(v)
        for k, v in fields.items()
    }


def _is_enum_member(value: Any) -> bool:
    """Whether `value` is an enum member: a constant, passed as it is. Its class joins
    IMMUTABLE_TYPES, so later calls pass its members on the first lookup."""
    if isinstance(value, enum.Enum):
        IMMUTABLE_TYPES.add(type(value))
        return True
    return False


def snapshot_args(args: Any) -> Any:
    """The same for a stdlib record's `%` arguments (a tuple or a mapping), keeping each value's
    type so `%` renders it as the stdlib would."""
    if isinstance(args, Mapping):
        if type(args) is dict and all_immutable(map(type, args.values())):
            return dict(args)
        return _arg_snapshot(args)
    if type(args) is tuple and not all(map(_is_immutable, map(type, args))):
        return tuple(a if type(a) in IMMUTABLE_TYPES else _arg_snapshot(a) for a in args)
    return args


def _arg_snapshot(value: Any) -> Any:
    # A deep copy keeps the value's type, so `%s`, `%r` and `%d` render exactly as the stdlib would.
    try:
        return copy.deepcopy(value)
    except Exception:
        return value
