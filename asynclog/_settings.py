"""Settings: one frozen dataclass per layer, every default in one place, one validating reader."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
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
_FORMATS = ("auto", "json", "console")
_OVERFLOWS = ("drop", "block")
_SPANS = ("none", "log", "otlp")
# A shortened line keeps its time, level, logger and a note of what was cut: ~300 bytes.
_MIN_LINE_BYTES = 1_024
# An HTTP method is a token (RFC 9110, section 5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

# Settings that ASYNCLOG_* variables may supply; explicit arguments win.
_ENV = {
    "sink": "ASYNCLOG_SINK",
    "level": "ASYNCLOG_LEVEL",
    "format": "ASYNCLOG_FORMAT",
    "queue_size": "ASYNCLOG_QUEUE_SIZE",
    "overflow": "ASYNCLOG_OVERFLOW",
    "max_line_bytes": "ASYNCLOG_MAX_LINE_BYTES",
}
_APP_ENV = {
    "tracing": "ASYNCLOG_TRACING",
    "spans": "ASYNCLOG_SPANS",
    "tracing_backend": "ASYNCLOG_TRACING_BACKEND",
    # Named by the OpenTelemetry semantic conventions, which every instrumentation honours.
    "http_known_methods": "OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS",
    # The variable gunicorn and uvicorn read for the same list: one value configures all three.
    "forwarded_allow_ips": "FORWARDED_ALLOW_IPS",
}


@dataclass(frozen=True)
class Settings:
    """How the pipeline captures, queues, encodes and writes records."""

    sink: str = "stdout"
    level: int = logging.INFO
    format: str = "auto"
    queue_size: int = 20_000
    overflow: str = "drop"
    block_timeout: float = 0.25
    batch_size: int = 1_000
    # Short on purpose: records freed within a young-GC cycle keep CPython's collections rare
    # (at 20 ms a loaded FastAPI worker ran 3x the young collections and full ones of 60-100 ms).
    flush_interval: float = 0.005
    shutdown_timeout: float = 5.0
    redact_keys: frozenset[str] = DEFAULT_REDACT_KEYS
    # Covers anything orjson can write (254 levels): a deeper dict or list is masked whole.
    redact_depth: int = 256
    capture_stdlib: bool = True
    # True leaves `logging`'s record switches as the application set them, so every other
    # handler's format works, now or added later. False skips what asynclog never writes from a
    # stdlib LogRecord (the stack walk for the caller's file and line, thread and process names)
    # wherever no other handler in the tree reads it: a faster stdlib door, at the cost of
    # breaking a handler added later that reads them.
    stdlib_caller_info: bool = True
    # Named loggers whose own handlers are removed so they propagate to asynclog only.
    capture_loggers: tuple[str, ...] = ()
    # A JSON line longer than this is written with its largest values shortened (and says so).
    # Below what the shipped sidecar's tail reads whole (buffer_max_size 80KB), and under a
    # third of what Loki accepts (max_line_size 256KB): Fluent Bit writes non-ASCII text as \u
    # escapes, up to 3x the bytes, and Loki discards a longer line (a 400 Fluent Bit does not
    # retry).
    max_line_bytes: int = 65_536


@dataclass(frozen=True)
class AppSettings:
    """What `install(app)` adds on top of `Settings`."""

    service_name: str | None = None
    access_log: bool = True
    exclude_paths: frozenset[str] = frozenset()
    sample_rate: float = 1.0
    slow_threshold_ms: float = 1_000.0
    request_id_header: str = "x-request-id"
    http_known_methods: frozenset[str] = DEFAULT_HTTP_KNOWN_METHODS
    tracing: bool = True
    tracing_backend: str = "asynclog"
    trace_operations: bool = False
    spans: str = "none"
    trace_ratio: float | None = None
    watchdog: bool = True
    watchdog_threshold_ms: float = 100.0
    watchdog_interval_ms: float = 20.0
    startup_checks: bool = True
    warn_reload: bool = True
    warn_memory_limit: bool = True
    warn_debug_json: bool = True
    uvicorn_access_log: bool = False
    gc_freeze: bool = True
    # Peers whose X-Forwarded-For/-Proto are believed: addresses, networks or "*". Loopback
    # only by default (gunicorn's and uvicorn's default), so no remote peer can forge a client.
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")


def _choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    text = str(value).strip().lower()
    if text not in allowed:
        raise ValueError(f"asynclog: {name}={value!r} is not valid; allowed: {', '.join(allowed)}")
    return text


def _level(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"asynclog: {name}={value!r} is not valid; allowed: a level >= 0")
        return value
    text = str(value).strip().upper()
    if text == "WARN":
        text = "WARNING"
    if text not in _LEVELS:
        raise ValueError(
            f"asynclog: {name}={value!r} is not valid; allowed: {', '.join(_LEVELS)} or an int"
        )
    return _LEVELS[text]


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number <= 0 or (isinstance(value, float) and value != number):
        raise ValueError(f"asynclog: {name}={value!r} is not valid; allowed: an integer > 0")
    return number


def _non_negative(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not number >= 0:
        raise ValueError(f"asynclog: {name}={value!r} is not valid; allowed: a number >= 0")
    return number


def _sink(name: str, value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ValueError(
            f"asynclog: {name}={value!r} is not valid; allowed: stdout, stderr or a file path"
        )
    text = str(os.fspath(value))
    return text.lower() if text.lower() in ("stdout", "stderr") else text


def _keys(name: str, value: Any) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"asynclog: {name}={value!r} is not valid; allowed: a collection of str")
    return frozenset(str(k).lower() for k in value)


def _methods(name: str, value: Any) -> frozenset[str]:
    """A collection of method names, or one comma-separated string (the variable's form).

    Case-sensitive, as in HTTP: `get` is not `GET`."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        raise ValueError(f"asynclog: {name}={value!r} is not valid; allowed: method names")
    items = list(items)  # an iterator is read once
    if not all(isinstance(m, str) for m in items):
        raise ValueError(f"asynclog: {name}={value!r} is not valid; allowed: method names")
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
        raise ValueError(f"asynclog: {name}={value!r} is not valid; allowed: IP addresses")
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


def _validate(name: str, value: Any, setting: str | None = None) -> Any:
    label = setting or name
    if name == "sink":
        return _sink(label, value)
    if name == "level":
        return _level(label, value)
    if name == "format":
        return _choice(label, value, _FORMATS)
    if name == "overflow":
        return _choice(label, value, _OVERFLOWS)
    if name == "spans":
        return _choice(label, value, _SPANS)
    if name == "tracing_backend":
        return _choice(label, value, ("asynclog", "native", "instrumentor"))
    if name in ("queue_size", "batch_size", "redact_depth"):
        return _positive_int(label, value)
    if name == "max_line_bytes":
        size = _positive_int(label, value)
        if size < _MIN_LINE_BYTES:
            allowed = f"an integer >= {_MIN_LINE_BYTES}"
            raise ValueError(f"asynclog: {label}={value!r} is not valid; allowed: {allowed}")
        return size
    if name in (
        "block_timeout",
        "flush_interval",
        "shutdown_timeout",
        "slow_threshold_ms",
        "watchdog_threshold_ms",
        "watchdog_interval_ms",
    ):
        return _non_negative(label, value)
    if name in ("sample_rate", "trace_ratio"):
        if name == "trace_ratio" and value is None:
            return None
        number = _non_negative(label, value)
        if number > 1:
            raise ValueError(f"asynclog: {label}={value!r} is not valid; allowed: 0.0 to 1.0")
        return number
    if name in ("redact_keys", "exclude_paths"):
        keys = _keys(label, value)
        return keys if name == "redact_keys" else frozenset(value)
    if name == "capture_loggers":
        return tuple(_keys(label, value))
    if name == "http_known_methods":
        return _methods(label, value)
    if name == "request_id_header":
        return str(value).lower()
    if name == "forwarded_allow_ips":
        return _addresses(label, value)
    if name in _BOOLS:
        return _bool(label, value)
    return value


_BOOLS = frozenset(
    {
        "capture_stdlib",
        "stdlib_caller_info",
        "access_log",
        "tracing",
        "trace_operations",
        "watchdog",
        "startup_checks",
        "warn_reload",
        "warn_memory_limit",
        "warn_debug_json",
        "uvicorn_access_log",
        "gc_freeze",
    }
)


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"asynclog: {name}={value!r} is not valid; allowed: true/false, 1/0, on/off")


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
    core_names = {f.name for f in fields(Settings)}
    app_names = {f.name for f in fields(AppSettings)}
    unknown = set(overrides) - core_names - app_names
    if unknown:
        raise TypeError(f"asynclog: unknown setting(s): {', '.join(sorted(unknown))}")
    if core_only and set(overrides) & app_names:
        names = ", ".join(sorted(set(overrides) & app_names))
        raise TypeError(f"asynclog: {names}: install(app) setting(s), not configure() ones")
    core: dict[str, Any] = {}
    for name, variable in _ENV.items():
        if name not in overrides and env.get(variable, "").strip():
            core[name] = _validate(name, env[variable], variable)
    app: dict[str, Any] = {}
    for name, variable in _APP_ENV.items():
        if name not in overrides and env.get(variable, "").strip():
            app[name] = _validate(name, env[variable], variable)
    for name, value in overrides.items():
        target = core if name in core_names else app
        target[name] = _validate(name, value)
    return replace(Settings(), **core), replace(AppSettings(), **app)
