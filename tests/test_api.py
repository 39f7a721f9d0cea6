"""The public surface is exactly what the README documents."""

import inspect
import logging
from typing import Any

import pytest

import asynclog
import asynclog.testing

DOCUMENTED = [
    "AsyncLogHandler",
    "Logger",
    "Pipeline",
    "bind_contextvars",
    "bound",
    "clear_contextvars",
    "configure",
    "flush",
    "get_contextvars",
    "get_logger",
    "install",
    "reopen",
    "shutdown",
    "stats",
    "unbind_contextvars",
]

_EMPTY = inspect.Parameter.empty
_ARG = inspect.Parameter.POSITIONAL_OR_KEYWORD
_ARGS = inspect.Parameter.VAR_POSITIONAL
_KWARGS = inspect.Parameter.VAR_KEYWORD
# The README's API table: each function's parameters as (name, kind, default).
FUNCTIONS: dict[str, list[tuple[str, Any, Any]]] = {
    "bind_contextvars": [("fields", _KWARGS, _EMPTY)],
    "bound": [("fields", _KWARGS, _EMPTY)],
    "clear_contextvars": [],
    "configure": [("settings", _KWARGS, _EMPTY)],
    "flush": [("timeout", _ARG, None)],
    "get_contextvars": [],
    "get_logger": [("name", _ARG, None)],
    "install": [("app", _ARG, _EMPTY), ("settings", _KWARGS, _EMPTY)],
    "reopen": [],
    "shutdown": [("timeout", _ARG, None)],
    "stats": [],
    "unbind_contextvars": [("keys", _ARGS, _EMPTY)],
}
# The documented classes, each with the base it is documented as.
CLASSES: dict[str, type] = {
    "AsyncLogHandler": logging.Handler,
    "Logger": object,
    "Pipeline": object,
}
LOGGER_METHODS = ("debug", "info", "warning", "error", "critical", "exception", "log", "bind",
                  "is_enabled_for")  # fmt: skip


def parameters(function: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


def test_all_is_the_documented_api() -> None:
    assert asynclog.__all__ == DOCUMENTED  # sorted, as STYLE.md asks
    assert sorted([*FUNCTIONS, *CLASSES]) == DOCUMENTED


def test_no_public_name_beyond_all() -> None:
    """Nothing leaks: every public name of the package is in `__all__` (`testing` is the one
    public submodule, an attribute once imported)."""
    public = {name for name in dir(asynclog) if not name.startswith("_")} - {"testing"}
    assert public == set(asynclog.__all__)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_each_name_is_the_documented_object(name: str) -> None:
    obj = getattr(asynclog, name)
    assert obj.__name__ == name and obj.__module__.startswith("asynclog."), obj
    if name in CLASSES:
        assert isinstance(obj, type) and issubclass(obj, CLASSES[name])
    else:
        assert inspect.isfunction(obj) and parameters(obj) == FUNCTIONS[name]


def test_the_logger_has_the_documented_methods() -> None:
    assert all(callable(getattr(asynclog.Logger, m, None)) for m in LOGGER_METHODS)
    assert asynclog.get_logger("api").__class__ is asynclog.Logger


def test_the_testing_module_holds_capture_logs() -> None:
    assert asynclog.testing.__all__ == ["capture_logs"]
    assert asynclog.testing.capture_logs.__module__ == "asynclog.testing"
    assert parameters(asynclog.testing.capture_logs) == []
