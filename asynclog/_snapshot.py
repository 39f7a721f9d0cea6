"""Freeze mutable values on the caller, so a line shows what was passed at call time."""

from __future__ import annotations

import copy
import datetime as _dt
import decimal
import pathlib
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["Frozen", "json_default", "snapshot_args", "snapshot_fields", "snapshot_value"]


class Frozen:
    """JSON bytes of a mutable value, taken on the caller; the writer decodes it again."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


# Values of these exact types cannot change after the call: they are passed through untouched.
IMMUTABLE_TYPES = frozenset(
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
_FREEZE_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


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


def snapshot_value(value: Any) -> Any:
    """Return a value that later mutation of `value` cannot change.

    JSON-encoding with orjson is the cheapest deep copy for the usual dict/list/dataclass field.
    Values orjson refuses (huge ints, cycles, surrogates, a repr that raises) are passed by
    reference; the writer refuses them too and its fallback encodes them.
    """
    if type(value) is tuple and all(map(_is_immutable, map(type, value))):
        return value
    try:
        return Frozen(orjson.dumps(value, default=json_default, option=_FREEZE_OPTIONS))
    except Exception:
        return value


def snapshot_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Return `fields` itself when every value is immutable, else a copy with frozen values."""
    if all_immutable(map(type, fields.values())):
        return fields
    return {k: v if type(v) in IMMUTABLE_TYPES else snapshot_value(v) for k, v in fields.items()}


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
