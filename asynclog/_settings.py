"""Settings: one frozen dataclass per layer whose fields are the table of settings (default,
parser, variable), and one validating reader."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = ["AppSettings", "Settings", "resolve_settings"]

DEFAULT_REDACT_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "authorization",
        "cookie",
        "set-cookie",
        "access_token",
        "refresh_token",
    }
)

# The methods semconv calls known (RFC 9110, PATCH, QUERY); any other is logged as `_OTHER`.
DEFAULT_HTTP_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
# A shortened line keeps its time, level, logger and a note of what was cut: ~300 bytes.
_MIN_LINE_BYTES = 1_024
# An HTTP method is a token (RFC 9110, section 5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# A parser takes the label to name in an error (the setting, or the variable it came from) and
# the value given, and returns the value to keep or raises ValueError saying what is allowed.
Parser = Callable[[str, Any], Any]


def _invalid(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"asynclog: {name}={value!r} is not valid; allowed: {allowed}")


def _as_given(name: str, value: Any) -> Any:
    return value


def _one_of(*allowed: str) -> Parser:
    def choice(name: str, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise _invalid(name, value, ", ".join(allowed))
        return text

    return choice


def _level(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise _invalid(name, value, "a level >= 0")
        return value
    text = str(value).strip().upper()
    if text == "WARN":
        text = "WARNING"
    if text not in _LEVELS:
        raise _invalid(name, value, f"{', '.join(_LEVELS)} or an int")
    return _LEVELS[text]


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number <= 0 or (isinstance(value, float) and value != number):
        raise _invalid(name, value, "an integer > 0")
    return number


def _line_bytes(name: str, value: Any) -> int:
    size = _positive_int(name, value)
    if size < _MIN_LINE_BYTES:
        raise _invalid(name, value, f"an integer >= {_MIN_LINE_BYTES}")
    return size


def _non_negative(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not number >= 0:
        raise _invalid(name, value, "a number >= 0")
    return number


def _fraction(name: str, value: Any) -> float:
    number = _non_negative(name, value)
    if number > 1:
        raise _invalid(name, value, "0.0 to 1.0")
    return number


def _optional_fraction(name: str, value: Any) -> float | None:
    return None if value is None else _fraction(name, value)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise _invalid(name, value, "true/false, 1/0, on/off")


def _sink(name: str, value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise _invalid(name, value, "stdout, stderr or a file path")
    text = str(os.fspath(value))
    return text.lower() if text.lower() in ("stdout", "stderr") else text


def _keys(name: str, value: Any) -> frozenset[str]:
    """Names matched without regard to case (redacted keys)."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise _invalid(name, value, "a collection of str")
    return frozenset(str(k).lower() for k in value)


def _logger_names(name: str, value: Any) -> tuple[str, ...]:
    return tuple(_keys(name, value))


def _paths(name: str, value: Any) -> frozenset[str]:
    """Paths, compared as given: checked as `_keys` checks, kept with their case."""
    _keys(name, value)
    return frozenset(value)


def _header_name(name: str, value: Any) -> str:
    return str(value).lower()


def _methods(name: str, value: Any) -> frozenset[str]:
    """A collection of method names, or one comma-separated string (the variable's form).

    Case-sensitive, as in HTTP: `get` is not `GET`."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        raise _invalid(name, value, "method names")
    items = list(items)  # an iterator is read once
    if not all(isinstance(m, str) for m in items):
        raise _invalid(name, value, "method names")
    methods = frozenset(m.strip() for m in items) - {""}
    bad = sorted(m for m in methods if not _TOKEN.fullmatch(m))
    if bad:
        raise ValueError(
            f"asynclog: {name}={value!r} is not valid; {', '.join(bad)} is not an HTTP method"
        )
    return methods


def _addresses(name: str, value: Any) -> tuple[str, ...]:
    """Addresses and networks (`10.0.0.0/8`), or `*`: a collection or one comma-separated
    string (the variable's form)."""
    items = value.split(",") if isinstance(value, str) else value
    items = list(items) if isinstance(items, Iterable) else [items]  # an iterator is read once
    if not all(isinstance(i, str) for i in items):
        raise _invalid(name, value, "IP addresses")
    entries = tuple(dict.fromkeys(i.strip() for i in items if i.strip()))
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"asynclog: {name}={value!r} is not valid; {entry} is not an IP address, "
                "a network or *"
            ) from None
    return entries


def _setting(default: Any, parse: Parser = _as_given, env: str | None = None) -> Any:
    """One setting: its default, the parser that validates a given value, and the variable
    that may supply it when no argument does."""
    return field(default=default, metadata={"parse": parse, "env": env})


# The table of settings: one entry per setting, in the class of its layer (`Settings` for
# configure(), `AppSettings` for what install(app) adds). `resolve_settings` reads nothing else.


@dataclass(frozen=True)
class Settings:
    """How the pipeline captures, queues, encodes and writes records."""

    sink: str = _setting("stdout", _sink, "ASYNCLOG_SINK")
    level: int = _setting(logging.INFO, _level, "ASYNCLOG_LEVEL")
    format: str = _setting("auto", _one_of("auto", "json", "console"), "ASYNCLOG_FORMAT")
    queue_size: int = _setting(20_000, _positive_int, "ASYNCLOG_QUEUE_SIZE")
    overflow: str = _setting("drop", _one_of("drop", "block"), "ASYNCLOG_OVERFLOW")
    block_timeout: float = _setting(0.25, _non_negative)
    batch_size: int = _setting(1_000, _positive_int)
    # Short on purpose: records freed within a young-GC cycle keep CPython's collections rare;
    # a longer interval lets them outlive young collections and adds full ones.
    flush_interval: float = _setting(0.005, _non_negative)
    shutdown_timeout: float = _setting(5.0, _non_negative)
    redact_keys: frozenset[str] = _setting(DEFAULT_REDACT_KEYS, _keys)
    # Covers anything orjson can write (254 levels): a deeper dict or list is masked whole.
    redact_depth: int = _setting(256, _positive_int)
    capture_stdlib: bool = _setting(True, _bool)
    # True leaves `logging`'s record switches as the application set them, so every other
    # handler's format works, now or added later. False skips what asynclog never writes from a
    # stdlib LogRecord (the stack walk for the caller's file and line, thread and process names)
    # wherever no other handler in the tree reads it: a faster stdlib door, at the cost of
    # breaking a handler added later that reads them.
    stdlib_caller_info: bool = _setting(True, _bool)
    # Named loggers whose own handlers are removed so they propagate to asynclog only.
    capture_loggers: tuple[str, ...] = _setting((), _logger_names)
    # A JSON line longer than this is written with its largest values shortened (and says so).
    # Below what the shipped sidecar's tail reads whole (buffer_max_size 80KB), and under a
    # third of what Loki accepts (max_line_size 256KB): Fluent Bit writes non-ASCII text as \u
    # escapes, up to 3x the bytes, and Loki discards a longer line (a 400 Fluent Bit does not
    # retry).
    max_line_bytes: int = _setting(65_536, _line_bytes, "ASYNCLOG_MAX_LINE_BYTES")


@dataclass(frozen=True)
class AppSettings:
    """What `install(app)` adds on top of `Settings`."""

    service_name: str | None = _setting(None)
    access_log: bool = _setting(True, _bool)
    exclude_paths: frozenset[str] = _setting(frozenset(), _paths)
    sample_rate: float = _setting(1.0, _fraction)
    slow_threshold_ms: float = _setting(1_000.0, _non_negative)
    request_id_header: str = _setting("x-request-id", _header_name)
    # Named by the OpenTelemetry semantic conventions, which every instrumentation honours.
    http_known_methods: frozenset[str] = _setting(
        DEFAULT_HTTP_KNOWN_METHODS, _methods, "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS"
    )
    tracing: bool = _setting(True, _bool, "ASYNCLOG_TRACING")
    tracing_backend: str = _setting(
        "asynclog", _one_of("asynclog", "native", "instrumentor"), "ASYNCLOG_TRACING_BACKEND"
    )
    trace_operations: bool = _setting(False, _bool)
    spans: str = _setting("none", _one_of("none", "log", "otlp"), "ASYNCLOG_SPANS")
    trace_ratio: float | None = _setting(None, _optional_fraction)
    watchdog: bool = _setting(True, _bool)
    watchdog_threshold_ms: float = _setting(100.0, _non_negative)
    watchdog_interval_ms: float = _setting(20.0, _non_negative)
    startup_checks: bool = _setting(True, _bool)
    warn_reload: bool = _setting(True, _bool)
    warn_memory_limit: bool = _setting(True, _bool)
    warn_debug_json: bool = _setting(True, _bool)
    uvicorn_access_log: bool = _setting(False, _bool)
    gc_freeze: bool = _setting(True, _bool)
    # Peers whose X-Forwarded-For/-Proto are believed: addresses, networks or "*". Loopback
    # only by default (gunicorn's and uvicorn's default), so no remote peer can forge a client.
    # FORWARDED_ALLOW_IPS is the variable gunicorn and uvicorn read for the same list: one value
    # configures all three.
    forwarded_allow_ips: tuple[str, ...] = _setting(
        ("127.0.0.1", "::1"), _addresses, "FORWARDED_ALLOW_IPS"
    )


# Each setting's layer and entry, by name.
_TABLE = {f.name: (layer, f) for layer in (Settings, AppSettings) for f in fields(layer)}


def _parse(name: str, value: Any, label: str) -> Any:
    parse: Parser = _TABLE[name][1].metadata["parse"]
    return parse(label, value)


def resolve_settings(
    overrides: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    core_only: bool = False,
) -> tuple[Settings, AppSettings]:
    """Build both settings objects from keyword overrides and ASYNCLOG_* variables.

    Raises `ValueError` naming the setting (or variable) and the allowed values, and
    `TypeError` for a name it does not know (with `core_only`, also for an install() setting).
    """
    env = os.environ if environ is None else environ
    unknown = set(overrides) - set(_TABLE)
    if unknown:
        raise TypeError(f"asynclog: unknown setting(s): {', '.join(sorted(unknown))}")
    app_names = {name for name in overrides if _TABLE[name][0] is AppSettings}
    if core_only and app_names:
        names = ", ".join(sorted(app_names))
        raise TypeError(f"asynclog: {names}: install(app) setting(s), not configure() ones")
    values: dict[type, dict[str, Any]] = {Settings: {}, AppSettings: {}}
    # Variables first, then arguments: an argument wins over its variable, which is not read.
    for name, (layer, entry) in _TABLE.items():
        variable: str | None = entry.metadata["env"]
        if variable is not None and name not in overrides and env.get(variable, "").strip():
            values[layer][name] = _parse(name, env[variable], variable)
    for name, value in overrides.items():
        values[_TABLE[name][0]][name] = _parse(name, value, name)
    return replace(Settings(), **values[Settings]), replace(AppSettings(), **values[AppSettings])
