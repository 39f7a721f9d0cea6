"""Unit tests of asynclog/_redact.py: which names are secret, masking inside values, query
strings and URLs, and the scan that lets a frozen value's JSON bytes through unread.

A secret masked in a written line, end to end, is tested where the line comes from:
- tests/test_security.py: `test_secret_headers_and_query_parameters_never_reach_a_line`
  (headers, cookies, query parameters, span attributes, through a real app),
  `test_secret_named_fields_are_masked_at_any_depth` (every route a value takes, JSON and
  console), `test_names_that_end_in_a_secret_key_are_masked_too`,
  `test_beyond_redact_depth_a_container_is_masked_whole`;
- tests/test_pipeline.py: `test_redaction_at_any_depth`,
  `test_default_redaction_keys_cover_common_secrets`,
  `test_redaction_holds_whatever_route_a_value_takes`;
- the FastAPI tests: `test_secret_query_parameters_are_masked` (the access line's query);
- tests/test_testing.py: `capture_logs` hands out masked records;
- tests/test_speedups.py: the C scan against `may_mask_json` and `nested`
  (`test_frozen_bytes_go_in_as_they_are_only_when_no_key_can_be_masked_inside`,
  `test_a_secret_added_while_the_message_renders_is_still_masked`).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asynclog._redact import REDACTED, Redactor

KEYS = frozenset({"token", "password", "api_key"})


# Which names are secret ------------------------------------------------------------------------

MASKED = ["token", "TOKEN", "Password", "csrf_token", "X-Auth-Token", "accessToken", "JWTToken",
          "x.api_key", "X-Api-Key", "xApiKey", "http.request.header.x-auth-token",
          "user password"]  # fmt: skip
KEPT = ["token_count", "tokens", "passwordHint", "mytoken", "apikey", "api", "key", ""]


@pytest.mark.parametrize("name", MASKED)
def test_a_name_is_secret_when_it_is_a_key_or_ends_in_one(name: str) -> None:
    assert Redactor(KEYS).is_secret(name)


@pytest.mark.parametrize("name", KEPT)
def test_a_name_that_only_contains_a_key_is_not_secret(name: str) -> None:
    assert not Redactor(KEYS).is_secret(name)


@pytest.mark.parametrize("key", [1, None, b"token", ("token",)])
def test_only_a_str_name_is_secret(key: object) -> None:
    assert not Redactor(KEYS).is_secret(key)


def test_keys_are_evened_out_as_names_are() -> None:
    redactor = Redactor(frozenset({"X-Api-Key", "sessionId"}))
    assert redactor.keys == {"x_api_key", "session_id"}
    assert redactor.is_secret("x.apiKey") and redactor.is_secret("SESSION-ID")
    assert not redactor.is_secret("api_key")


def test_answers_hold_past_the_cache_of_names() -> None:
    redactor = Redactor(KEYS)
    for n in range(25_000):  # more names than the cache keeps
        assert redactor.is_secret(f"n{n}_token") and not redactor.is_secret(f"n{n}_tokens")


# Masking inside values -------------------------------------------------------------------------


def test_no_keys_and_nothing_to_mask_give_the_value_itself() -> None:
    value = {"password": "p", "items": [{"token": "t"}]}
    assert Redactor(frozenset()).nested(value) is value
    clean: dict[str, Any] = {"user": "ann", "items": [{"n": 1}, (2, 3)], 1: "one"}
    assert Redactor(KEYS).nested(clean) is clean


def test_secrets_are_masked_at_any_depth_copying_only_what_changes() -> None:
    other = {"n": [1, 2]}
    value = {"a": [{"b": {"Password": "p"}}], "other": other, 1: "one", "tuple": ({"token": 1},)}
    out = Redactor(KEYS).nested(value)
    assert out == {
        "a": [{"b": {"Password": REDACTED}}],
        "other": {"n": [1, 2]},
        1: "one",
        "tuple": [{"token": REDACTED}],  # a tuple that changes comes back a list
    }
    assert out["other"] is other  # untouched branches are not copied
    assert value["a"][0]["b"]["Password"] == "p"  # the caller's value is left as it was


def test_beyond_depth_a_container_is_masked_whole() -> None:
    redactor = Redactor(frozenset({"password"}), depth=2)
    value = {"a": {"b": {"c": 1}}, "l": [[1]], "k": 1}
    assert redactor.nested(value) == {"a": {"b": REDACTED}, "l": [REDACTED], "k": 1}
    assert redactor.nested({"a": {"b": 1}}) == {"a": {"b": 1}}  # depth 2 is still looked at


# Query strings and URLs ------------------------------------------------------------------------


def test_secret_query_parameters_are_masked_and_others_kept() -> None:
    redactor = Redactor(frozenset({"token", "api_key"}))
    assert (
        redactor.mask_query("token=abc&page=2&API_KEY=k&%74oken=z&x=")
        == "token=%5BREDACTED%5D&page=2&API_KEY=%5BREDACTED%5D&token=%5BREDACTED%5D&x="
    )
    query = "page=2&q=a%20b&empty="
    assert redactor.mask_query(query) is query  # nothing secret: not even re-encoded


def test_a_url_keeps_its_path_and_fragment() -> None:
    redactor = Redactor(frozenset({"token"}))
    assert redactor.mask_url("/login?token=s&a=1#top") == "/login?token=%5BREDACTED%5D&a=1#top"
    assert redactor.mask_url("https://h/p?token=s") == "https://h/p?token=%5BREDACTED%5D"
    for url in ("/login", "/login?page=1#token=s"):
        assert redactor.mask_url(url) == url


# The scan of frozen JSON bytes -----------------------------------------------------------------


def test_with_no_keys_no_bytes_need_a_look() -> None:
    redactor = Redactor(frozenset())
    assert redactor.json_rule == (None, ())
    assert not redactor.may_mask_json(b'{"password":"\xc3\xa9","l":[[[[1]]]]}')


@pytest.mark.parametrize("key", ["pässword", 'pass"word', "pass\\word", "pass\nword"])
def test_a_key_the_scan_cannot_find_in_json_text_makes_every_value_looked_at(key: str) -> None:
    redactor = Redactor(frozenset({key}))
    assert redactor.json_rule is None
    assert redactor.may_mask_json(b"1")


def test_more_words_than_the_scan_tracks_make_every_value_looked_at() -> None:
    redactor = Redactor(frozenset(f"word{n}" for n in range(100)))
    assert redactor.json_rule is None and redactor.may_mask_json(b"1")


def test_a_key_holding_another_keys_words_adds_nothing_to_the_scan() -> None:
    assert Redactor(frozenset({"token", "access_token"})).json_rule == (256, ((b"token",),))
    assert Redactor(frozenset({"api_key"}), 3).json_rule == (3, ((b"api", b"key"),))


@pytest.mark.parametrize(
    ("data", "may_mask"),
    [
        (b'{"user":"ann","n":[1,2]}', False),
        (b'{"Password":"x"}', True),  # any case
        (b'{"accessToken":1}', True),  # the word, inside a longer name
        (b'["token"]', True),  # conservative: a value holding the words too
        (b'{"api":1,"Key":2}', True),  # every word of `api_key`, apart
        (b'{"api":1}', False),
        (b'{"user":"caf\xc3\xa9"}', True),  # non-ASCII: case rules differ
        (b"[[1]]", False),
        (b"[[[1]]]", True),  # more brackets than `depth`
        (b'{"a":{"b":{}}}', True),
    ],
)
def test_may_mask_json_is_true_wherever_masking_could_change_the_value(
    data: bytes, may_mask: bool
) -> None:
    assert Redactor(KEYS, depth=2).may_mask_json(data) is may_mask


_NAME = st.lists(
    st.tuples(
        st.sampled_from(["api", "key", "token", "access", "pass", "word", "user", "K", "\u212a"]),
        st.sampled_from([str.lower, str.upper, str.title]),
        st.sampled_from(["", "_", "-", ".", " "]),
    ),
    min_size=1,
    max_size=3,
).map(lambda parts: "".join(case(word) + sep for word, case, sep in parts))
_TREE = st.recursive(
    st.one_of(st.integers(min_value=0, max_value=9), _NAME),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAME, inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(value=_TREE, depth=st.sampled_from([1, 2, 256]))
def test_may_mask_json_never_lets_through_bytes_that_masking_changes(
    value: Any, depth: int
) -> None:
    redactor = Redactor(frozenset({"password", "api_key", "token"}), depth)
    if redactor.nested(value) != value:
        assert redactor.may_mask_json(orjson.dumps(value))
