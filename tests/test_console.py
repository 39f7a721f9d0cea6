"""The console renderer (`_console`): readable lines that input cannot forge."""

from __future__ import annotations

from typing import Any

from asynclog._console import console_line


def _line(**fields: Any) -> dict[str, Any]:
    head = {"time": "2026-12-05T06:07:08.123456Z", "level": "info", "logger": "app"}
    return {**head, "message": "paid", **fields}


def test_a_line_reads_as_time_level_logger_message_then_fields() -> None:
    text = console_line(_line(order_id=7, note="two words", tags=["a"]), color=False)
    assert text == b"06:07:08.123 INFO     app paid  order_id=7 note='two words' tags=[\"a\"]\n"


def test_colour_wraps_the_parts_in_ansi_escapes() -> None:
    text = console_line(_line(level="error"), color=True).decode()
    assert text == "\x1b[2m06:07:08.123\x1b[0m \x1b[31mERROR   \x1b[0m \x1b[2mapp\x1b[0m paid\n"


def test_control_characters_from_input_are_escaped() -> None:
    text = console_line(_line(message="a\nFAKE LINE\x1b[31m", **{"k\n": "v"}), color=False)
    assert text.count(b"\n") == 1
    assert b"a\\nFAKE LINE\\x1b[31m" in text and b"k\\n=v" in text


def test_a_traceback_stays_on_its_own_lines() -> None:
    exception = {"type": "ValueError", "message": "x", "stacktrace": "Traceback\n  at\x07\n"}
    text = console_line(_line(exception=exception), color=False)
    assert text.endswith(b"paid\nTraceback\n  at\\x07\n")
