"""The native logger: fields, levels, binding, context and the line schema."""

from __future__ import annotations

import gc
import re
import sys
import threading
import types
from pathlib import Path
from typing import Any

import pytest

import asynclog
from asynclog import _snapshot
from asynclog.testing import _tap

from conftest import read_lines

# Each test runs on the C extension and on the pure-Python code (see conftest).
pytestmark = pytest.mark.usefixtures("implementation")

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_line_schema_and_key_order(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    asynclog.get_logger("shop").info("paid", order_id=7, amount=9.5)
    assert asynclog.flush(5)
    [line] = read_lines(log_path)
    assert list(line)[:4] == ["time", "level", "logger", "message"]
    assert TIME.match(line["time"])
    assert line == {
        **line,
        "level": "info",
        "logger": "shop",
        "message": "paid",
        "order_id": 7,
        "amount": 9.5,
    }


def test_any_field_name_works_and_reserved_names_are_renamed(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    asynclog.get_logger("x").info("real", message="m", level="l", time=1, self=2, msg=3)
    asynclog.flush(5)
    [line] = read_lines(log_path)
    assert line["message"] == "real"
    assert line["level"] == "info"
    assert (line["field.message"], line["field.level"], line["field.time"]) == ("m", "l", 1)
    assert (line["self"], line["msg"]) == (2, 3)


def test_levels_filter_before_any_work(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json", level="WARNING")
    log = asynclog.get_logger("lv")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    asynclog.flush(5)
    assert [line["level"] for line in read_lines(log_path)] == ["warning", "error", "critical"]
    assert asynclog.stats()["emitted"] == 3
    assert log.is_enabled_for(30)
    assert not log.is_enabled_for(20)


def test_bind_returns_a_child_logger(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    parent = asynclog.get_logger("b")
    child = parent.bind(user="ann")
    child.bind(step=2).info("deep")
    parent.info("plain")
    asynclog.flush(5)
    deep, plain = read_lines(log_path)
    assert (deep["user"], deep["step"]) == ("ann", 2)
    assert "user" not in plain


def test_contextvars_reach_every_line_of_the_context(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("ctx")
    asynclog.bind_contextvars(request_id="r1", user="u")
    log.info("one")
    asynclog.unbind_contextvars("user")
    log.info("two")
    with asynclog.bound(step="inner"):
        log.info("three")
    log.info("four")
    asynclog.clear_contextvars()
    log.info("five")
    asynclog.flush(5)
    lines = read_lines(log_path)
    assert [line.get("request_id") for line in lines] == ["r1", "r1", "r1", "r1", None]
    assert [line.get("user") for line in lines] == ["u", None, None, None, None]
    assert [line.get("step") for line in lines] == [None, None, "inner", None, None]


def test_call_fields_win_over_bound_and_context(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    asynclog.bind_contextvars(k="context")
    asynclog.get_logger("p").bind(k="bound").info("m", k="call")
    asynclog.get_logger("p").bind(k="bound").info("m")
    asynclog.flush(5)
    assert [line["k"] for line in read_lines(log_path)] == ["call", "bound"]


def test_context_is_per_thread(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("t")

    def work(n: int) -> None:
        asynclog.bind_contextvars(worker=n)
        log.info("from thread", n=n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    asynclog.flush(5)
    assert all(line["worker"] == line["n"] for line in read_lines(log_path))


def test_mutable_fields_show_their_value_at_call_time(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("snap")
    items = [1]
    order = {"state": "new", "lines": [1]}
    log.info("a", items=items, order=order)
    asynclog.bind_contextvars(ctx=order)
    bound = log.bind(b=items)
    items.append(2)
    order["state"] = "paid"
    order["lines"].append(2)  # type: ignore[attr-defined]
    bound.info("b")
    asynclog.flush(5)
    first, second = read_lines(log_path)
    assert first["items"] == [1]
    assert first["order"] == {"state": "new", "lines": [1]}
    assert second["ctx"] == {"state": "new", "lines": [1]}
    assert second["b"] == [1]


def test_percent_arguments_are_rendered_on_the_writer_as_in_logging(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    log = asynclog.get_logger("args")
    basket = ["apple"]
    log.info("user %s paid %.2f", "ann", 9.5, order_id=7)
    log.warning("basket %s", basket)
    basket.append("pear")  # the line shows the argument as it was at the call
    log.log(30, "%d%% done", 50)
    log.info("%d items", "three")  # a mismatch keeps the template and says so
    log.info("100% sure")  # no arguments: the message is written as it is
    asynclog.flush(5)
    paid, seen, done, mismatch, sure = read_lines(log_path)
    assert (paid["message"], paid["order_id"]) == ("user ann paid 9.50", 7)
    assert seen["message"] == "basket ['apple']"
    assert done["message"] == "50% done"
    assert mismatch["message"] == "%d items"
    assert mismatch["message.args"] == "('three',)"
    assert "asynclog.substituted" in mismatch
    assert sure["message"] == "100% sure" and "asynclog.substituted" not in sure


def test_exception_is_structured(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    try:
        {}["missing"]
    except KeyError:
        asynclog.get_logger("e").exception("lookup failed", key="missing")
    asynclog.flush(5)
    [line] = read_lines(log_path)
    assert line["level"] == "error"
    assert line["exception"]["type"] == "KeyError"
    assert line["exception"]["message"] == "'missing'"
    assert "Traceback" in line["exception"]["stacktrace"]
    assert list(line)[-1] == "exception"


def test_get_logger_before_configure_configures_from_the_environment(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCLOG_SINK", str(log_path))
    asynclog.get_logger("auto").info("hi")
    asynclog.flush(5)
    assert read_lines(log_path)[0]["message"] == "hi"


def test_console_format_is_readable(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="console")
    asynclog.get_logger("dev").warning("careful", user="ann")
    asynclog.flush(5)
    text = log_path.read_text()
    assert "WARNING" in text and "dev careful" in text and "user=ann" in text
    assert "\x1b[" not in text  # colours only on a terminal


@pytest.mark.parametrize("implementation", ["python"], indirect=True)
def test_the_python_implementation_has_no_c_object_on_the_path(implementation: str) -> None:
    """Under `implementation="python"` the level methods are Python functions, no asynclog module
    holds an object of the extension, and a record is the Python `make_record`'s tuple (tracked
    by the collector, which the C one's is not) with its mutable values in the Python `Frozen`."""
    assert all(
        type(getattr(asynclog.Logger, name)) is types.FunctionType
        for name in ("debug", "info", "warning", "warn", "error", "critical")
    )
    extension = "asynclog._speedups"
    from_c = [
        f"{module_name}.{name}"
        for module_name, module in list(sys.modules.items())
        if module_name.split(".")[0] == "asynclog" and module_name != extension
        for name, value in vars(module).items()
        if getattr(value, "__name__", None) == extension
        or getattr(value, "__module__", None) == extension
        or type(value).__module__ == extension
    ]
    assert from_c == []
    records: list[Any] = []
    with _tap(records.append):
        asynclog.get_logger("pure").info("m", order={"id": 7})
    (record,) = records
    assert type(record) is tuple and gc.is_tracked(record)
    assert type(record[5]["order"]) is _snapshot._Frozen
