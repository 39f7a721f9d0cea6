"""Masking of secret-looking fields, done on the writer thread."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[REDACTED]"
_CACHE_LIMIT = 10_000
# Before an upper-case letter that follows a lower-case one or a digit (`accessToken`), or that
# starts a word after an acronym (`JWTToken`, `HTTPAuthorization`).
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = str.maketrans({"-": "_", ".": "_", " ": "_"})


def _normalize(name: str) -> str:
    """`X-Api-Key`, `x.api_key` and `xApiKey` all become `x_api_key`; `JWTToken` `jwt_token`."""
    return _CAMEL_BOUNDARY.sub("_", name).lower().translate(_SEPARATORS)


class Redactor:
    """Replaces the values of fields named like a secret, at any depth up to `depth` inside dicts
    and lists. A name matches a key when, with case, camelCase and `-`/`.` separators evened
    out, it is the key or ends with `_` + the key: `token` masks `csrf_token`, `X-Auth-Token`
    and `accessToken`, not `token_count`; a dict or list deeper than that is masked as a whole, so
    what was not looked at is never written. The default depth covers anything orjson can
    write (254 levels); only values the writer cannot encode anyway (cycles) go deeper."""

    def __init__(self, keys: frozenset[str], depth: int = 256) -> None:
        self.keys = frozenset(_normalize(k) for k in keys)
        self._suffixes = tuple("_" + k for k in self.keys)
        self.depth = depth
        self._hits: dict[str, bool] = {}

    def is_secret(self, key: object) -> bool:
        """Whether a field of this name is masked (cached: field names repeat)."""
        if not isinstance(key, str):
            return False
        hit = self._hits.get(key)
        if hit is None:
            name = _normalize(key)
            hit = name in self.keys or name.endswith(self._suffixes)
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
