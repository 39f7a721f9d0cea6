"""The stdlib door: `logging` calls land in the same stream, extra= keys as fields."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import asynclog

from conftest import read_lines, record_options, run_python

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


# No silent takeover: only configure()/install() capture the stdlib, and shutdown() gives back
# everything they changed.

_SERVER_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "gunicorn.error",
    "gunicorn.access",
)


def _logger_state(name: str | None) -> tuple[list[logging.Handler], list[object], bool, int]:
    logger = logging.getLogger(name)
    return list(logger.handlers), list(logger.filters), logger.propagate, logger.level


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_an_implicit_start_writes_native_lines_and_leaves_the_stdlib_alone(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCLOG_SINK", str(log_path))
    monkeypatch.setenv("ASYNCLOG_FORMAT", "json")
    root = logging.getLogger()
    mine = _Collect()
    root.addHandler(mine)
    root.setLevel(logging.WARNING)
    before, options = _logger_state(None), record_options()

    log = asynclog.get_logger("lib")  # no configure(): asynclog starts by itself
    assert _logger_state(None) == before
    assert record_options() == options
    log.warning("native line")
    logging.getLogger("app").warning("stdlib line")
    asynclog.flush(5)
    assert [line["message"] for line in read_lines(log_path)] == ["native line"]
    assert mine.messages == ["stdlib line"]


def test_a_library_calling_get_logger_at_import_keeps_the_apps_basic_config(
    implementation: str,
) -> None:
    no_extension = implementation == "python"
    result = run_python(
        f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="plain %(message)s")
        import asynclog
        from asynclog import _accel
        assert (_accel.speedups is None) == {no_extension}
        log = asynclog.get_logger("lib")   # what a library would do at import
        log.info("from the library")
        logging.getLogger("app").info("from the app")
        asynclog.shutdown()
        """,
        env={
            "ASYNCLOG_FORMAT": "json",
            **({"ASYNCLOG_NO_EXTENSIONS": "1"} if no_extension else {}),
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["plain from the app"]
    [line] = [json.loads(text) for text in result.stdout.splitlines()]
    assert (line["logger"], line["message"]) == ("lib", "from the library")


def test_shutdown_after_configure_restores_the_root_and_the_record_options(
    log_path: Path,
) -> None:
    root = logging.getLogger()
    mine = _Collect()
    root.addHandler(mine)
    root.setLevel(logging.WARNING)
    before, options = _logger_state(None), record_options()
    asynclog.configure(sink=str(log_path), format="json", level="INFO")
    asynclog.configure(sink=str(log_path), format="json", level="DEBUG")  # a second one too
    assert root.handlers != before[0] and root.level == logging.DEBUG
    assert record_options() != options
    asynclog.shutdown()
    assert _logger_state(None) == before
    assert record_options() == options
    logging.getLogger("app").warning("after shutdown")
    assert mine.messages == ["after shutdown"]


def test_a_handler_added_between_two_configures_is_given_back_too(log_path: Path) -> None:
    root = logging.getLogger()
    asynclog.configure(sink=str(log_path), format="json")
    later = _Collect()
    root.addHandler(later)  # the app adds one while asynclog routes the root
    asynclog.configure(sink=str(log_path), format="json", level="DEBUG")
    assert later not in root.handlers  # the root's one handler is asynclog's again
    asynclog.shutdown()
    assert later in root.handlers


def test_stopping_a_replaced_pipeline_leaves_the_running_one_routing_the_stdlib(
    log_path: Path,
) -> None:
    first = asynclog.configure(sink=str(log_path), format="json")
    second = asynclog.configure(sink=str(log_path), format="json", level="DEBUG")
    first.stop()  # an old handle, stopped late (a test fixture, a second app)
    assert second.running and second.handler in logging.getLogger().handlers
    logging.getLogger("app").warning("still routed")
    asynclog.flush()
    assert any(line["message"] == "still routed" for line in read_lines(log_path))


def test_shutdown_after_install_restores_the_server_loggers(log_path: Path) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    def skip_nothing(record: logging.LogRecord) -> bool:
        return True

    for name in (*_SERVER_LOGGERS, "lib.noisy"):
        logger = logging.getLogger(name)
        logger.addHandler(logging.NullHandler())
        logger.addFilter(skip_nothing)
        logger.propagate = False
    before = {name: _logger_state(name) for name in (None, *_SERVER_LOGGERS, "lib.noisy")}
    options = record_options()

    app = FastAPI()
    asynclog.install(
        app,
        sink=str(log_path),
        format="json",
        watchdog=False,
        startup_checks=False,
        capture_loggers=("lib.noisy",),
    )
    with TestClient(app):
        assert logging.getLogger("uvicorn.error").propagate
        assert not logging.getLogger("uvicorn.access").handlers
        assert not logging.getLogger("lib.noisy").handlers
    asynclog.shutdown()
    after = {name: _logger_state(name) for name in before}
    assert after == before
    assert record_options() == options
