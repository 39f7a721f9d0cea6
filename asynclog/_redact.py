"""Masking of secret-looking fields, done on the writer thread."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

from ._contract import RULE_WORDS

__all__ = ["REDACTED", "Redactor"]

REDACTED = "[REDACTED]"
_CACHE_LIMIT = 10_000
# Before an upper-case letter that follows a lower-case one or a digit (`accessToken`), or that
# starts a word after an acronym (`JWTToken`, `HTTPAuthorization`).
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = str.maketrans({"-": "_", ".": "_", " ": "_"})


def _json_rule(
    keys: frozenset[str], depth: int
) -> tuple[int | None, tuple[tuple[bytes, ...], ...]] | None:
    """What `may_mask_json` looks for: (most brackets, the words of each key), (None, ()) when
    there are no keys, or None when the bytes can never be trusted as they are.

    A name inside the JSON that `is_secret` matches holds every `_`-separated word of the key
    in its text, case aside: normalizing only lowercases, turns separators into `_` and puts
    `_` between words, so a word never spans one. The words are then found in the ASCII text
    as they are, unless they hold what JSON escapes (`"`, `\\`, control characters) or
    non-ASCII (whose case rules differ): such keys never let bytes through."""
    if not keys:
        return None, ()
    every = {frozenset(word.encode() for word in key.split("_") if word) for key in keys}
    # A key whose words include all of another's adds nothing: `token` finds `access_token`.
    words = tuple(
        tuple(sorted(key))
        for key in sorted(every, key=sorted)
        if not any(other < key for other in every)
    )
    for key in keys:
        if not key.isascii() or any(c in key for c in '"\\') or not key.isprintable():
            return None
    if sum(map(len, words)) > RULE_WORDS:
        return None  # more than _speedups keeps track of: every frozen value is looked at
    return depth, words


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
        self.json_rule = _json_rule(self.keys, depth)
        # Any word of any key, found in one pass of the regex engine: most frozen values hold
        # none, and only those that do need the word-by-word look.
        words = sorted({w for key in self.json_rule[1] for w in key}) if self.json_rule else []
        self._any_word = re.compile(b"|".join(map(re.escape, words))).search if words else None

    def may_mask_json(self, data: bytes) -> bool:
        """Whether `nested()` could change the JSON value `data` (a value frozen on the
        caller): False means its bytes can go into the line as they are. Conservative: True
        for any non-ASCII byte, for more `{`/`[` than `depth`, and wherever every word of some
        key occurs in the text, in any case. `_speedups` applies `json_rule` the same way."""
        rule = self.json_rule
        if rule is None:
            return True
        brackets, words = rule
        if brackets is None:
            return False  # no keys: nested() changes nothing
        if not data.isascii() or data.count(b"{") + data.count(b"[") > brackets:
            return True
        text = data.lower()
        if self._any_word is not None and self._any_word(text) is None:
            return False
        return any(all(word in text for word in key) for key in words)

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
