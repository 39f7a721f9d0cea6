"""Settings come from arguments, then ASYNCLOG_* variables; bad values fail fast by name."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

import asynclog
from asynclog._settings import AppSettings, Settings, _parse, resolve_settings


def test_environment_supplies_defaults() -> None:
    core, _ = resolve_settings(
        {},
        {
            "ASYNCLOG_SINK": "stderr",
            "ASYNCLOG_LEVEL": "debug",
            "ASYNCLOG_FORMAT": "JSON",
            "ASYNCLOG_QUEUE_SIZE": "500",
            "ASYNCLOG_OVERFLOW": "block",
        },
    )
    assert (core.sink, core.level, core.format, core.queue_size, core.overflow) == (
        "stderr",
        10,
        "json",
        500,
        "block",
    )


def test_explicit_arguments_win_over_the_environment() -> None:
    core, _ = resolve_settings({"level": "ERROR"}, {"ASYNCLOG_LEVEL": "DEBUG"})
    assert core.level == 40


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("ASYNCLOG_LEVEL", "LOUD", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("ASYNCLOG_FORMAT", "xml", "auto, json, console"),
        ("ASYNCLOG_QUEUE_SIZE", "-3", "an integer > 0"),
        ("ASYNCLOG_QUEUE_SIZE", "lots", "an integer > 0"),
        ("ASYNCLOG_OVERFLOW", "grow", "drop, block"),
    ],
)
def test_bad_environment_value_names_the_variable(variable: str, value: str, allowed: str) -> None:
    with pytest.raises(ValueError, match=variable) as info:
        resolve_settings({}, {variable: value})
    assert allowed in str(info.value)


def test_known_http_methods_follow_semconv_and_its_variable() -> None:
    _, app = resolve_settings({}, {})
    assert app.http_known_methods == {
        "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE",
    }  # fmt: skip
    # OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS is a full, case-sensitive override.
    _, app = resolve_settings({}, {"OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": "GET, PURGE,get"})
    assert app.http_known_methods == {"GET", "PURGE", "get"}
    _, app = resolve_settings({"http_known_methods": ["GET"]}, {})
    assert app.http_known_methods == {"GET"}
    _, app = resolve_settings({"http_known_methods": (m for m in ["GET", "PURGE"])}, {})
    assert app.http_known_methods == {"GET", "PURGE"}  # a generator is read once, not emptied
    with pytest.raises(ValueError, match=r"OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS.*GE T"):
        resolve_settings({}, {"OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": "GET,GE T"})
    with pytest.raises(ValueError, match=r"http_known_methods=.*method names"):
        resolve_settings({"http_known_methods": [1]}, {})


def test_bad_argument_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"overflow='spill'.*drop, block"):
        asynclog.configure(overflow="spill")


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(TypeError, match="sinc"):
        asynclog.configure(sinc="stdout")


def test_install_settings_are_refused_by_configure() -> None:
    with pytest.raises(TypeError, match="tracing: install"):
        asynclog.configure(tracing=False)


def test_unopenable_sink_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sink="):
        asynclog.configure(sink=str(tmp_path / "missing-dir" / "app.log"))


def test_format_auto_is_json_for_files(tmp_path: Path) -> None:
    handle = asynclog.configure(sink=str(tmp_path / "a.log"))
    assert handle.format == "json"


def test_forwarded_allow_ips_reads_the_variable_gunicorn_reads() -> None:
    _, app = resolve_settings({}, {})
    assert app.forwarded_allow_ips == ("127.0.0.1", "::1")
    _, app = resolve_settings({}, {"FORWARDED_ALLOW_IPS": "10.0.0.0/8, 127.0.0.2,*"})
    assert app.forwarded_allow_ips == ("10.0.0.0/8", "127.0.0.2", "*")
    with pytest.raises(ValueError, match=r"FORWARDED_ALLOW_IPS.*ingress is not an IP address"):
        resolve_settings({}, {"FORWARDED_ALLOW_IPS": "127.0.0.1,ingress"})
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        resolve_settings({"forwarded_allow_ips": [1]}, {})


def test_every_default_is_a_value_its_own_parser_keeps() -> None:
    # The table's entries agree with themselves: a default passed back as an argument is the
    # same setting, so no default skips the validation an argument gets.
    for layer in (Settings, AppSettings):
        for entry in fields(layer):
            assert _parse(entry.name, entry.default, entry.name) == entry.default, entry.name


def test_each_variable_is_read_for_its_own_setting() -> None:
    variables = {
        "ASYNCLOG_MAX_LINE_BYTES": ("max_line_bytes", "2048", 2048),
        "ASYNCLOG_TRACING": ("tracing", "off", False),
        "ASYNCLOG_SPANS": ("spans", "LOG", "log"),
        "ASYNCLOG_TRACING_BACKEND": ("tracing_backend", "native", "native"),
    }
    for variable, (name, text, expected) in variables.items():
        core, app = resolve_settings({}, {variable: text})
        assert getattr(core if name in {f.name for f in fields(Settings)} else app, name) == (
            expected
        )
    with pytest.raises(ValueError, match=r"ASYNCLOG_MAX_LINE_BYTES='100'.*>= 1024"):
        resolve_settings({}, {"ASYNCLOG_MAX_LINE_BYTES": "100"})
    # A variable the argument overrides is not read, so a bad one does not matter.
    _, app = resolve_settings({"tracing": True}, {"ASYNCLOG_TRACING": "maybe"})
    assert app.tracing is True
