"""Masking of secret-looking fields, done on the writer thread."""

from __future__ import annotations

from typing import Any

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[REDACTED]"
_CACHE_LIMIT = 10_000


class Redactor:
    """Replaces the values of fields whose name is in `keys` (case-insensitive), at any depth up
    to `depth` inside dicts and lists."""

    def __init__(self, keys: frozenset[str], depth: int = 8) -> None:
        self.keys = frozenset(k.lower() for k in keys)
        self.depth = depth
        self._hits: dict[str, bool] = {}

    def is_secret(self, key: object) -> bool:
        """Whether a field of this name is masked (cached: field names repeat)."""
        if not isinstance(key, str):
            return False
        hit = self._hits.get(key)
        if hit is None:
            hit = key.lower() in self.keys
            if len(self._hits) >= _CACHE_LIMIT:
                self._hits.clear()
            self._hits[key] = hit
        return hit

    def nested(self, value: Any, depth: int = 1) -> Any:
        """Return `value` with secret keys masked inside dicts and lists (copies only if needed)."""
        if depth > self.depth or not self.keys:
            return value
        kind = type(value)
        if kind is dict:
            out = None
            for k, v in value.items():
                new = REDACTED if self.is_secret(k) else self.nested(v, depth + 1)
                if new is not v:
                    if out is None:
                        out = dict(value)
                    out[k] = new
            return value if out is None else out
        if kind is list or kind is tuple:
            items = [self.nested(v, depth + 1) for v in value]
            if any(a is not b for a, b in zip(items, value, strict=True)):
                return items
        return value
