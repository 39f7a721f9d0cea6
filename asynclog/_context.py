"""Context fields bound to the current task or thread (contextvars)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ._snapshot import snapshot_fields

__all__ = [
    "bind_contextvars",
    "bound",
    "clear_contextvars",
    "get_contextvars",
    "unbind_contextvars",
]

_EMPTY: Mapping[str, Any] = {}

# Holds an immutable-by-convention dict: binding replaces it, so a captured reference is a snapshot.
bound_fields: ContextVar[Mapping[str, Any]] = ContextVar("asynclog_bound", default=_EMPTY)


def bind_contextvars(**fields: Any) -> None:
    """Add fields to every line written from the current context."""
    bound_fields.set({**bound_fields.get(), **snapshot_fields(fields)})


def unbind_contextvars(*keys: str) -> None:
    """Remove the named fields from the current context."""
    current = bound_fields.get()
    if any(k in current for k in keys):
        bound_fields.set({k: v for k, v in current.items() if k not in keys})


def clear_contextvars() -> None:
    """Remove every bound field from the current context."""
    bound_fields.set(_EMPTY)


def get_contextvars() -> dict[str, Any]:
    """Return a copy of the fields bound in the current context."""
    return dict(bound_fields.get())


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Bind fields for the duration of a `with` block, then restore the previous ones."""
    token = bound_fields.set({**bound_fields.get(), **snapshot_fields(fields)})
    try:
        yield
    finally:
        bound_fields.reset(token)
