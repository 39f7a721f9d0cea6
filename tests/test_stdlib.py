"""The stdlib door: `logging` calls land in the same stream, extra= keys as fields."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import asynclog

from conftest import read_lines

# Each test runs on the C extension and on the pure-Python code (see conftest).
pytestmark = pytest.mark.usefixtures("implementation")


def test_stdlib_call_with_args_and_extra(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    logging.getLogger("x").info("got %s", "arg", extra={"k": {"v": 1}, "n": 2})
    asynclog.flush(5)
    [line] = read_lines(log_path)
    assert (line["logger"], line["message"], line["k"], line["n"]) == ("x", "got arg", {"v": 1}, 2)
    assert list(line)[:4] == ["time", "level", "logger", "message"]


def test_stdlib_lines_carry_bound_context(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    with asynclog.bound(request_id="abc"):
        logging.getLogger("lib").warning("from a library")
    asynclog.flush(5)
    assert read_lines(log_path)[0]["request_id"] == "abc"


def test_mismatched_template_still_gives_one_line(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    logging.getLogger("x").error("needs %d and %s", "only-one")
    asynclog.flush(5)
    [line] = read_lines(log_path)
    assert line["message"] == "needs %d and %s"
    assert "asynclog.substituted" in line
    assert line["message.args"] == "('only-one',)"


def test_stdlib_exception(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("x").exception("failed")
    asynclog.flush(5)
    [line] = read_lines(log_path)
    assert line["exception"]["type"] == "ValueError"


def test_stdlib_mutable_args_are_snapshotted(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    items = [1]
    logging.getLogger("x").info("items %s", items, extra={"e": items})
    items.append(2)
    asynclog.flush(5)
    [line] = read_lines(log_path)
    assert (line["message"], line["e"]) == ("items [1]", [1])


def test_configure_twice_never_duplicates_handlers(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    asynclog.configure(sink=str(log_path), format="json")
    root = logging.getLogger()
    assert sum(isinstance(h, asynclog.AsyncLogHandler) for h in root.handlers) == 1
    logging.getLogger("x").warning("once")
    asynclog.flush(5)
    assert [line["message"] for line in read_lines(log_path)] == ["once"]


def test_configure_sets_the_root_level(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json", level="ERROR")
    logging.getLogger("x").warning("filtered")
    logging.getLogger("x").error("kept")
    asynclog.flush(5)
    assert [line["message"] for line in read_lines(log_path)] == ["kept"]


def test_shutdown_restores_previous_root_handlers(log_path: Path) -> None:
    root = logging.getLogger()
    mine = logging.NullHandler()
    root.addHandler(mine)
    asynclog.configure(sink=str(log_path), format="json")
    assert mine not in root.handlers
    asynclog.shutdown()
    assert mine in root.handlers
    assert not any(isinstance(h, asynclog.AsyncLogHandler) for h in root.handlers)


def test_lean_records_by_default_and_restored_at_shutdown(log_path: Path) -> None:
    source = logging._srcfile  # type: ignore[attr-defined]
    asynclog.configure(sink=str(log_path), format="json")
    assert logging._srcfile is None  # type: ignore[attr-defined]
    assert not logging.logThreads
    asynclog.shutdown()
    assert logging._srcfile == source  # type: ignore[attr-defined]
    assert logging.logThreads


def test_caller_info_can_be_kept(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json", stdlib_caller_info=True)
    assert logging._srcfile is not None  # type: ignore[attr-defined]
