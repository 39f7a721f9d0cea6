"""The stdlib door: `logging` calls land in the same stream, extra= keys as fields."""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
import queue
import threading
from pathlib import Path

import pytest

import asynclog

from conftest import ROOT, read_lines, record_options, run_python

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


# Item 1 of issue 24: a handler asynclog does not own keeps working, added before or after.
_CALLER_FORMAT = "[%(process)d] %(threadName)s %(filename)s:%(lineno)d %(funcName)s %(message)s"


def _foreign_handler(stream: io.StringIO, fmt: str = _CALLER_FORMAT) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    logging.getLogger("lib.noisy").addHandler(handler)
    return handler


def _log_from_here() -> None:
    logging.getLogger("lib.noisy").warning("the same line")


def test_a_foreign_handler_added_before_configure_writes_the_same_line(log_path: Path) -> None:
    without, with_asynclog = io.StringIO(), io.StringIO()
    _foreign_handler(without)
    _log_from_here()
    logging.getLogger("lib.noisy").handlers.clear()
    _foreign_handler(with_asynclog)
    asynclog.configure(sink=str(log_path), format="json")
    _log_from_here()
    asynclog.flush(5)
    assert with_asynclog.getvalue() == without.getvalue()
    assert without.getvalue() == (
        f"[{os.getpid()}] MainThread test_stdlib.py:{_log_from_here.__code__.co_firstlineno + 1}"
        " _log_from_here the same line\n"
    )
    assert [line["message"] for line in read_lines(log_path)] == ["the same line"]


def test_a_foreign_handler_added_after_configure_works(log_path: Path) -> None:
    before = record_options()
    asynclog.configure(sink=str(log_path), format="json")
    assert record_options() == before  # the safe default changes no switch
    stream = io.StringIO()
    _foreign_handler(stream)
    _log_from_here()
    assert stream.getvalue().startswith(f"[{os.getpid()}] MainThread test_stdlib.py:")


def test_lean_records_when_asked_and_restored_at_shutdown(log_path: Path) -> None:
    before = record_options()
    asynclog.configure(sink=str(log_path), format="json", stdlib_caller_info=False)
    assert record_options() == {
        "_srcfile": None,
        "logThreads": False,
        "logProcesses": False,
        "logMultiprocessing": False,
    }
    logging.getLogger("x").info("lean")
    asynclog.shutdown()
    assert record_options() == before
    assert [line["message"] for line in read_lines(log_path)] == ["lean"]


def test_a_later_configure_with_the_default_gives_the_switches_back(log_path: Path) -> None:
    before = record_options()
    asynclog.configure(sink=str(log_path), format="json", stdlib_caller_info=False)
    assert record_options() != before
    asynclog.configure(sink=str(log_path), format="json")
    assert record_options() == before
    asynclog.shutdown()
    assert record_options() == before


def test_lean_records_keep_each_switch_a_foreign_handler_reads(log_path: Path) -> None:
    stream = io.StringIO()
    _foreign_handler(stream, "[%(process)d] %(threadName)s %(message)s")
    asynclog.configure(sink=str(log_path), format="json", stdlib_caller_info=False)
    options = record_options()
    assert options["logProcesses"] and options["logThreads"]
    assert options["_srcfile"] is None and not options["logMultiprocessing"]
    _log_from_here()
    assert stream.getvalue() == f"[{os.getpid()}] MainThread the same line\n"


def test_lean_records_keep_every_switch_for_a_handler_class_of_unknown_code(
    log_path: Path,
) -> None:
    class OwnHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            pass

    logging.getLogger("lib.noisy").addHandler(OwnHandler())
    before = record_options()
    asynclog.configure(sink=str(log_path), format="json", stdlib_caller_info=False)
    assert record_options() == before


def test_lean_records_keep_every_switch_for_a_handler_that_hands_records_on(
    log_path: Path,
) -> None:
    """A QueueHandler's listener, a MemoryHandler's target (and a socket's peer) format the
    record elsewhere, with formats the tree does not show."""
    stream = io.StringIO()
    target = logging.StreamHandler(stream)
    target.setFormatter(logging.Formatter("[%(process)d] %(funcName)s %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, target)
    logging.getLogger("lib.noisy").addHandler(logging.handlers.QueueHandler(records))
    logging.getLogger("lib.noisy").addHandler(logging.handlers.MemoryHandler(1, target=target))
    before = record_options()
    asynclog.configure(sink=str(log_path), format="json", stdlib_caller_info=False)
    assert record_options() == before
    listener.start()
    try:
        _log_from_here()
    finally:
        listener.stop()
    assert stream.getvalue() == f"[{os.getpid()}] _log_from_here the same line\n" * 2


def test_lean_records_count_no_asynclog_handler(log_path: Path) -> None:
    logging.getLogger("lib.noisy").addHandler(asynclog.AsyncLogHandler())  # as dictConfig does
    asynclog.configure(sink=str(log_path), format="json", stdlib_caller_info=False)
    assert record_options()["_srcfile"] is None
    assert not record_options()["logProcesses"]


def test_lean_records_stop_counting_a_captured_loggers_handler(log_path: Path) -> None:
    _foreign_handler(io.StringIO())  # on lib.noisy, which capture_loggers empties
    asynclog.configure(
        sink=str(log_path), format="json", stdlib_caller_info=False, capture_loggers=("lib.noisy",)
    )
    assert record_options()["_srcfile"] is None
    assert not record_options()["logProcesses"]


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
    lean = {"stdlib_caller_info": False}
    asynclog.configure(sink=str(log_path), format="json", level="INFO", **lean)
    asynclog.configure(sink=str(log_path), format="json", level="DEBUG", **lean)  # a second one
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


def test_a_dictconfig_naming_the_handler_writes_without_configure() -> None:
    """A server's parent process reads `--log-config` (sidecar/server-logging.json) and never
    imports the app: the handler starts asynclog itself, and the exit path writes the line."""
    result = run_python(
        """
        import json, logging.config
        from pathlib import Path
        logging.config.dictConfig(json.loads(Path("sidecar/server-logging.json").read_text()))
        logging.getLogger("uvicorn.error").info("Started parent process [%d]", 42)
        logging.getLogger("_granian").warning("from granian's main process")
        """,
        cwd=ROOT,
        env={"ASYNCLOG_FORMAT": "json"},
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = [json.loads(text) for text in result.stdout.splitlines()]
    assert [(x["logger"], x["level"], x["message"]) for x in lines] == [
        ("uvicorn.error", "info", "Started parent process [42]"),
        ("_granian", "warning", "from granian's main process"),
    ]


def test_a_start_on_another_thread_waits_for_a_configure_under_way(
    log_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While `configure()` builds its pipeline (whose own AsyncLogHandler must not start
    another), a `get_logger()` or an AsyncLogHandler made on another thread waits for it, as it
    always did, rather than going on with asynclog not started."""
    from asynclog._pipeline import Pipeline

    building, release = threading.Event(), threading.Event()
    build = Pipeline.__init__

    def slow_build(self: Pipeline, *args: object) -> None:
        build(self, *args)  # type: ignore[arg-type]
        building.set()
        release.wait(10)

    monkeypatch.setattr(Pipeline, "__init__", slow_build)
    configuring = threading.Thread(
        target=asynclog.configure, kwargs={"sink": str(log_path), "format": "json"}
    )
    configuring.start()
    assert building.wait(10)
    seen: list[object] = []

    def start_elsewhere() -> None:
        asynclog.AsyncLogHandler()
        seen.append(asynclog._pipeline.latest())

    other = threading.Thread(target=start_elsewhere)
    other.start()
    other.join(0.5)  # it runs while the pipeline is being built
    release.set()
    configuring.join(10)
    other.join(10)
    assert seen == [asynclog._pipeline.latest()] and seen[0] is not None
