"""FastAPI's built-in telemetry (newer FastAPI): its settings, kept by the app in a private
attribute, which asynclog switches off, hands a provider, or trims of per-request work."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from ._compat import degraded

__all__ = ["has_native_telemetry", "native_config", "skip_unused_native_telemetry"]

# The OpenTelemetry API's stand-ins for a provider nobody has set (private classes; the same
# test FastAPI makes): the API has no public "is a provider set" query.
_UNSET_PROVIDERS = (
    ("opentelemetry.metrics._internal", "_ProxyMeterProvider"),
    ("opentelemetry._logs._internal", "ProxyLoggerProvider"),
)
# What is lost when the stand-ins cannot be recognised (said once through `degraded`).
_PROVIDER_LOOKUPS_KEPT = (
    "FastAPI's built-in telemetry keeps looking for meter and logger providers on every "
    "request (~10 us each)"
)


def has_native_telemetry(app: Any) -> bool:
    """Whether this FastAPI has built-in telemetry (its public `telemetry=` argument)."""
    try:
        return "telemetry" in inspect.signature(type(app).__init__).parameters
    except (TypeError, ValueError):
        return False


def native_config(app: Any) -> dict[str, Any] | None:
    """FastAPI's own telemetry settings (`app._telemetry`, FastAPI >= 0.16x; private), None on
    versions without it. Set only through `FastAPI(telemetry=...)` publicly."""
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict) and "operation_spans" in config:
        return config
    if has_native_telemetry(app):
        degraded(
            "fastapi: FastAPI._telemetry",
            "FastAPI's built-in telemetry is left as the app configured it (a second server "
            "span if it traces; FastAPI(telemetry={'tracing': False}) avoids it); "
            "tracing_backend='native' falls back to 'asynclog'",
        )
    return None


def _unset_provider_types() -> tuple[type, ...] | None:
    found = []
    for module, name in _UNSET_PROVIDERS:
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
        if not isinstance(cls, type):
            degraded(f"opentelemetry: {module}.{name}", _PROVIDER_LOOKUPS_KEPT)
            return None
        found.append(cls)
    return tuple(found)


def skip_unused_native_telemetry(app: Any) -> None:
    """FastAPI's built-in telemetry asks on every request whether a meter or logger provider
    has been set (it reads the environment each time). Called once the app has started: a
    provider still unset then means nothing would receive those metrics or logs."""
    native = native_config(app)
    if native is None:
        return
    unset = _unset_provider_types()
    if unset is None:
        return
    from opentelemetry import metrics

    try:  # the logs API is still a private module of OpenTelemetry
        from opentelemetry import _logs

        logger_provider = _logs.get_logger_provider()
    except (ImportError, AttributeError):
        degraded("opentelemetry: _logs.get_logger_provider", _PROVIDER_LOOKUPS_KEPT)
        return
    if native.get("meter_provider") is None and isinstance(metrics.get_meter_provider(), unset):
        native["metrics"] = False
    if native.get("logger_provider") is None and isinstance(logger_provider, unset):
        native["logs"] = False
