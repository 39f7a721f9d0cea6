"""Which spans asynclog's provider records: from `trace_ratio`, else OTEL_TRACES_SAMPLER read as
the SDK reads it, else by what `spans` exports."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult

if TYPE_CHECKING:
    from opentelemetry.trace import Link, SpanKind
    from opentelemetry.util.types import Attributes

    from ._settings import AppSettings

__all__ = ["SwitchableSampler", "sampler"]


class SwitchableSampler(Sampler):
    """Tracers copy their provider's sampler when created; this lets install() change it later."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        return self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"asynclog({self.inner.get_description()})"


def sampler(settings: AppSettings) -> Sampler:
    """The sampler `settings` ask for."""
    if settings.trace_ratio is not None:
        return sampling.ParentBased(sampling.TraceIdRatioBased(settings.trace_ratio))
    from_env = os.environ.get("OTEL_TRACES_SAMPLER")
    if from_env:
        return _sampler_from_env(from_env)
    if settings.spans == "none":
        # Nothing is exported, so record nothing: ids are still generated (and logged) for
        # every request, and an upstream's sampled flag is still honoured.
        return sampling.ParentBased(sampling.ALWAYS_OFF)
    return sampling.ParentBased(sampling.ALWAYS_ON)


def _ratio_from_env() -> float:
    try:
        return float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", ""))
    except ValueError:
        return 1.0  # as the SDK does with a missing or bad argument


# The values of OTEL_TRACES_SAMPLER the SDK knows, built from its public sampler classes.
_ENV_SAMPLERS: dict[str, Callable[[], Sampler]] = {
    "always_on": lambda: sampling.ALWAYS_ON,
    "always_off": lambda: sampling.ALWAYS_OFF,
    "parentbased_always_on": lambda: sampling.ParentBased(sampling.ALWAYS_ON),
    "parentbased_always_off": lambda: sampling.ParentBased(sampling.ALWAYS_OFF),
    "traceidratio": lambda: sampling.TraceIdRatioBased(_ratio_from_env()),
    "parentbased_traceidratio": lambda: sampling.ParentBasedTraceIdRatio(_ratio_from_env()),
}


def _sampler_from_env(name: str) -> Sampler:
    """OTEL_TRACES_SAMPLER as the SDK reads it (an unknown name means parentbased_always_on)."""
    make = _ENV_SAMPLERS.get(name.strip().lower(), _ENV_SAMPLERS["parentbased_always_on"])
    return make()
