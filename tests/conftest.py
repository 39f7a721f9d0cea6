"""Shared fixtures: every test starts with no pipeline and no bound context."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import asynclog
from asynclog import _accel, _compat, _pipeline, _record, _snapshot
from asynclog._encoder import Encoder
from asynclog._logger import Logger, _python_level_method

ROOT = Path(__file__).resolve().parent.parent
_FIGURES: list[tuple[str, dict[str, Any]]] = []


# Loggers that tests (or install()) change: each test gets them back as they were.
_KEPT_LOGGERS = (None, "uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error",
                 "gunicorn.access", "hypercorn.error", "_granian", "_granian.utils",
                 "lib.noisy")  # fmt: skip
# `logging`'s documented switches for what a LogRecord collects (asynclog's lean records).
RECORD_OPTIONS = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")
# How long a test waits for asynclog.flush(): a bound for a loaded 2-core machine, never a
# figure; flush() returns as soon as the lines are written.
FLUSH_S = 20.0
# install() settings that keep a test's file to the lines it is about.
QUIET = {"watchdog": False, "startup_checks": False, "format": "json"}


def record_options() -> dict[str, object]:
    return {name: getattr(logging, name) for name in RECORD_OPTIONS}


@pytest.fixture(autouse=True)
def _reset_asynclog() -> Iterator[None]:
    asynclog.clear_contextvars()
    loggers = [logging.getLogger(name) for name in _KEPT_LOGGERS]
    kept = [(list(x.handlers), list(x.filters), x.propagate, x.level) for x in loggers]
    options = record_options()
    yield
    asynclog.shutdown()
    if (pipeline := _pipeline.latest()) is not None:
        pipeline.close()  # back to never configured: no state carries over to the next test
    _compat._said.clear()
    asynclog.clear_contextvars()
    for logger, (handlers, filters, propagate, level) in zip(loggers, kept, strict=True):
        logger.handlers[:] = handlers
        logger.filters[:] = filters
        logger.propagate = propagate
        logger.setLevel(level)
    for name, value in options.items():
        setattr(logging, name, value)


def python_twins() -> dict[int, tuple[object, object]]:
    """Every object the C extension provides that asynclog binds at import, by id, with the
    pure-Python object it stands in for: the one place the pure-Python choice is declared."""
    speedups = _accel.speedups
    if speedups is None:
        return {}
    twins: list[tuple[object, object]] = [
        (speedups, None),
        (speedups.make_record, _record.make_record),
        (speedups.Frozen, _snapshot._Frozen),
    ]
    return {id(c_object): (c_object, twin) for c_object, twin in twins}


def _run_pure_python(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace, in every loaded asynclog module, each name bound to one of the extension's
    objects with its Python twin, and the level methods with `_python_level_method`'s."""
    twins = python_twins()
    for module in [m for name, m in sys.modules.items() if name.split(".")[0] == "asynclog"]:
        for name, value in list(vars(module).items()):
            pair = twins.get(id(value))
            if pair is not None and pair[0] is value:
                monkeypatch.setattr(module, name, pair[1])
    levels = ((10, "DEBUG"), (20, "INFO"), (30, "WARNING"), (40, "ERROR"), (50, "CRITICAL"))
    for level, name in levels:
        method = _python_level_method(level, name)
        monkeypatch.setattr(Logger, name.lower(), method)
        if name == "WARNING":
            monkeypatch.setattr(Logger, "warn", method)
    # The Python `Frozen` passes through the caller untouched, as the C one does.
    if _snapshot._Frozen not in _snapshot.IMMUTABLE_TYPES:
        _snapshot.IMMUTABLE_TYPES.add(_snapshot._Frozen)
        request.addfinalizer(lambda: _snapshot.IMMUTABLE_TYPES.discard(_snapshot._Frozen))


@pytest.fixture(name="implementation", params=["c", "python"])
def _implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the C extension and on the pure-Python code it stands in for: the level
    methods, `make_record`, `Frozen` and the writer's batch encoder. CI sets
    ASYNCLOG_REQUIRE_EXTENSIONS, so there a missing extension fails instead of skipping."""
    if request.param == "python":
        _run_pure_python(request, monkeypatch)
    elif _accel.speedups is None:
        if os.environ.get("ASYNCLOG_REQUIRE_EXTENSIONS"):
            pytest.fail("the C extension is not built, and ASYNCLOG_REQUIRE_EXTENSIONS is set")
        pytest.skip("the C extension is not built (no C compiler at install time)")
    return str(request.param)


@pytest.fixture(name="log_path")
def _log_path(tmp_path: Path) -> Path:
    return tmp_path / "app.log"


def assert_batches_write_what_encode_writes(
    records: list[Any], redactor: Any, **options: Any
) -> list[bytes]:
    """The batch encoder (`encode_into`) writes each record's `encode` bytes, on a fresh encoder
    and again once it knows the names; `options` go to both encoders. Returns those lines."""
    expected = [Encoder(redactor, **options).encode(record) for record in records]
    encoder = Encoder(redactor, **options)
    for _ in range(2):  # the first pass meets the names, the second knows them
        buffer = bytearray()
        ends = encoder.encode_into(records, buffer)
        assert [bytes(buffer[a:b]) for a, b in zip([0, *ends[:-1]], ends, strict=True)] == expected
    return expected


def assert_accounted(stats: dict[str, Any], **exactly: int) -> dict[str, Any]:
    """Asserts asynclog's central promise on `asynclog.stats()` (or a worker's copy): every record
    emitted was written or dropped and counted, `emitted == written + dropped`; `exactly` pins
    counters too (`assert_accounted(stats, written=3, dropped=0)`). Returns `stats`."""
    assert stats["emitted"] == stats["written"] + stats["dropped"], stats
    for name, value in exactly.items():
        assert stats[name] == value, (name, stats)
    return stats


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON-lines file, parsed; fails on a torn or invalid line."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "last line is not terminated"
    # Split on b"\n" only: orjson writes U+2028 and NEL raw, and str.splitlines() splits on them.
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def run_python(
    code: str, *, timeout: float = 60, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a snippet in a fresh interpreter with the repo importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **kwargs.pop("env", {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        **kwargs,
    )


@pytest.fixture(name="figures")
def _figures(request: pytest.FixtureRequest) -> Any:
    """Record a test's measured figures; they are printed together at the end of the run."""

    def record(**values: Any) -> None:
        _FIGURES.append((request.node.name, values))

    return record


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "soak: a minute of load at saturation; runs by default (-m 'not soak' skips it)"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, values in _FIGURES:
        shown = ", ".join(f"{key}={value}" for key, value in values.items())
        terminalreporter.write_line(f"{name}: {shown}")
