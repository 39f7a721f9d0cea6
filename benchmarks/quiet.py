"""How much of the machine other work used during a step, and waiting for it to go quiet.

On a shared 2-CPU machine, a test suite or a compiler running beside the benchmark shifts
its figures more than anything measured. The harness waits (boundedly) for a quiet machine
before each step and records the CPU share that processes outside its own tree used
during the step: system busy time from ``/proc/stat`` minus this process's and its waited-for
children's CPU time.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_CPUS = os.cpu_count() or 1


def _system_busy() -> float | None:
    """Seconds of CPU time all processes have used since boot (None off Linux)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def _own_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class ForeignCpu:
    """Measures the share of all CPUs used by other processes between start() and stop()."""

    def start(self) -> None:
        self._wall = time.monotonic()
        self._busy = _system_busy()
        self._own = _own_cpu()

    def stop(self) -> float | None:
        busy = _system_busy()
        if busy is None or self._busy is None:
            return None
        wall = time.monotonic() - self._wall
        foreign = (busy - self._busy) - (_own_cpu() - self._own)
        return max(0.0, foreign / (wall * _CPUS)) if wall > 0 else None


def wait_for_quiet(threshold: float, max_wait: float, sample: float = 0.5) -> float:
    """Wait until other processes use under *threshold* of the CPUs (at most *max_wait* s).

    Returns the seconds waited.
    """
    start = time.monotonic()
    meter = ForeignCpu()
    while time.monotonic() - start < max_wait:
        meter.start()
        time.sleep(sample)
        share = meter.stop()
        if share is None or share < threshold:
            break
    return time.monotonic() - start
