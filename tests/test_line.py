"""The parts every line is made of (`_line`): time stamps and level names."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from asynclog._line import RESERVED_KEYS, format_time, level_name


@pytest.mark.parametrize(
    "created",
    [0.0, 1764900000.000001, 1764900000.999999, 1764900001.5, 253402300799.25],
)
def test_format_time_is_rfc3339_utc_with_microseconds(created: float) -> None:
    expected = dt.datetime.fromtimestamp(created, dt.timezone.utc)
    stamp = format_time(created)
    assert stamp.endswith("Z") and len(stamp) == 27
    parsed = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    # The microseconds are truncated, as `int()` of the float's fraction.
    assert abs((parsed - expected).total_seconds()) < 2e-6


def test_format_time_keeps_each_seconds_date_apart() -> None:
    """The date part is cached per second: alternating seconds still get their own date."""
    day = 86400.0
    assert format_time(day - 0.5).startswith("1970-01-01T23:59:59.5")
    assert format_time(day + 0.5).startswith("1970-01-02T00:00:00.5")
    assert format_time(day - 0.5).startswith("1970-01-01T23:59:59.5")


def test_level_names_are_lowercase_and_custom_levels_keep_their_name() -> None:
    assert [level_name(n) for n in (10, 20, 30, 40, 50)] == [
        "debug", "info", "warning", "error", "critical",
    ]  # fmt: skip
    logging.addLevelName(25, "NOTICE ME")
    try:
        assert level_name(25) == "noticeme"
    finally:
        logging.addLevelName(25, "Level 25")
    assert level_name(7) == "level7"


def test_the_reserved_keys_are_the_schemas_head() -> None:
    assert {"time", "level", "logger", "message", "trace_id", "span_id", "exception"} == set(
        RESERVED_KEYS
    )
