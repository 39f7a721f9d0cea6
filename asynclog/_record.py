"""What the caller captures: one flat tuple per log call, built without formatting or I/O.

The layout is `_contract.RECORD_FIELDS`. Every Python producer builds a record with
`make_record` (or `_accel`'s); readers unpack it positionally, in that order. This module imports
nothing of asynclog's but the contract, so any module may import it.
"""

from __future__ import annotations

from typing import Any

from ._contract import RECORD_FIELDS

__all__ = ["RECORD_FIELDS", "Record", "make_record"]

Record = tuple[Any, ...]


def make_record(
    created: float,
    levelno: int,
    logger: str,
    msg: object,
    args: Any,
    fields: Any,
    bound: Any,
    context: Any,
    otel: Any,
    exc_info: Any,
) -> Record:
    """One record, its fields in `RECORD_FIELDS` order (positional, as every producer calls it:
    keywords would cost each log call their parsing)."""
    return (created, levelno, logger, msg, args, fields, bound, context, otel, exc_info)
