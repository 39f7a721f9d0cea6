"""Masking of secret-looking fields, done on the writer thread."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[REDACTED]"
_CACHE_LIMIT = 10_000


class Redactor:
    """Replaces the values of fields whose name is in `keys` (case-insensitive), at any depth up
    to `depth` inside dicts and lists; a dict or list deeper than that is masked as a whole, so
    what was not looked at is never written. The default depth covers anything orjson can
    write (254 levels); only values the writer cannot encode anyway (cycles) go deeper."""

    def __init__(self, keys: frozenset[str], depth: int = 256) -> None:
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
        if not self.keys:
            return value
        kind = type(value)
        if kind is dict:
            if depth > self.depth:
                return REDACTED
            out = None
            for k, v in value.items():
                new = REDACTED if self.is_secret(k) else self.nested(v, depth + 1)
                if new is not v:
                    if out is None:
                        out = dict(value)
                    out[k] = new
            return value if out is None else out
        if kind is list or kind is tuple:
            if depth > self.depth:
                return REDACTED
            items = [self.nested(v, depth + 1) for v in value]
            if any(a is not b for a, b in zip(items, value, strict=True)):
                return items
        return value

    def mask_query(self, query: str) -> str:
        """A query string with the values of secret-named parameters masked."""
        pairs = parse_qsl(query, keep_blank_values=True)
        if not any(self.is_secret(k) for k, _ in pairs):
            return query
        return urlencode([(k, REDACTED if self.is_secret(k) else v) for k, v in pairs])

    def mask_url(self, url: str) -> str:
        """A URL (or request target) with the values of secret-named query parameters masked."""
        base, mark, rest = url.partition("?")
        if not mark:
            return url
        query, hash_mark, fragment = rest.partition("#")
        return f"{base}?{self.mask_query(query)}{hash_mark}{fragment}"
