"""How long and how often to measure: ``quick`` (CI, < 1 min), default (~7.5 min), ``full``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from benchmarks.e2e import E2EProfile
from benchmarks.micro import MicroProfile


@dataclass(frozen=True)
class Profile:
    name: str
    micro: MicroProfile
    # The record mix's timing: the main table's, with shorter runs (it measures every shape per
    # library) and no memory run.
    mix: MicroProfile
    e2e: E2EProfile
    micro_passes: int  # timing processes per library, run round-robin over the libraries
    micro_seconds: float  # rough time per library, for the progress estimate
    mix_seconds: float  # rough time per library and mix shape in one pass, for the estimate
    e2e_seconds: float  # rough time per server case, for the progress estimate
    quiet_wait: float  # longest wait before a step for other processes to go quiet


def _timing_only(micro: MicroProfile, **shorter: Any) -> MicroProfile:
    """The mix's profile: `micro` with the given fields changed and no memory run."""
    return replace(micro, rss_records=0, rss_seconds=0, rss_drain_seconds=0, **shorter)


_QUICK = MicroProfile(
    warmup=200,
    caller_repeats=3,
    burst_seconds=0.05,
    max_burst=5_000,
    throughput_repeats=3,
    throughput_seconds=0.1,
    max_records=20_000,
    rss_records=20_000,
    rss_seconds=0.5,
    rss_drain_seconds=5.0,
    timeout=90,
)
_DEFAULT = MicroProfile(
    warmup=1_000,
    caller_repeats=2,
    burst_seconds=0.3,
    max_burst=10_000,
    throughput_repeats=1,
    throughput_seconds=1.0,
    max_records=300_000,
    rss_records=1_000_000,
    rss_seconds=4.0,
    rss_drain_seconds=15.0,
    timeout=180,
)
_FULL = MicroProfile(
    warmup=2_000,
    caller_repeats=3,
    burst_seconds=0.5,
    max_burst=10_000,
    throughput_repeats=2,
    throughput_seconds=3.0,
    max_records=1_000_000,
    rss_records=1_000_000,
    rss_seconds=120.0,
    rss_drain_seconds=120.0,
    timeout=900,
)

PROFILES = {
    "quick": Profile(
        "quick",
        _QUICK,
        _timing_only(_QUICK, caller_repeats=1, throughput_repeats=1),
        E2EProfile(connections=32, warmup=0, duration=1, rounds=1, stall=0.5, boot_timeout=60),
        micro_passes=1,
        micro_seconds=2.5,
        mix_seconds=0.6,
        e2e_seconds=3.5,
        quiet_wait=0,
    ),
    "default": Profile(
        "default",
        _DEFAULT,
        _timing_only(_DEFAULT, burst_seconds=0.2, throughput_seconds=0.5, max_records=150_000),
        E2EProfile(connections=32, warmup=1, duration=3, rounds=5, stall=2.0, boot_timeout=60),
        micro_passes=3,
        micro_seconds=16,
        mix_seconds=1.6,
        e2e_seconds=16,
        quiet_wait=10,
    ),
    "full": Profile(
        "full",
        _FULL,
        _timing_only(_FULL, throughput_seconds=2.0, max_records=600_000),
        E2EProfile(connections=32, warmup=2, duration=15, rounds=5, stall=5.0, boot_timeout=60),
        micro_passes=3,
        micro_seconds=90,
        mix_seconds=9,
        e2e_seconds=80,
        quiet_wait=60,
    ),
}
