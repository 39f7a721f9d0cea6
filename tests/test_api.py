"""The public surface is exactly what the README documents."""

import asynclog


def test_all_is_the_documented_api() -> None:
    assert sorted(asynclog.__all__) == [
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


def test_every_name_exists() -> None:
    for name in asynclog.__all__:
        assert getattr(asynclog, name) is not None


def test_the_testing_module_holds_capture_logs() -> None:
    import asynclog.testing

    assert asynclog.testing.__all__ == ["capture_logs"]
