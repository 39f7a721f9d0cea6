"""Readers at the other end of the server's stdout: a slow one and one that stalls.

Run as ``python -m benchmarks.pipes MODE CAPTURE`` with the pipe on stdin; every byte
read is appended to CAPTURE so the harness can count and parse the lines afterwards.

- ``slow``: reads 4 KiB, then sleeps 5 ms: at most ~800 KiB/s, like a slow disk or a
  collector that cannot keep up.
- ``stalled``: reads as fast as it can, but each SIGUSR1 stops it for ``--stall``
  seconds (the harness sends one per measured round), like a collector that hangs and
  then recovers.

The reader exits at end of input, i.e. once the server has exited.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from types import FrameType

SLOW_CHUNK = 4096
SLOW_PAUSE = 0.005
FAST_CHUNK = 1 << 16


def _slow(out: int) -> None:
    while data := os.read(0, SLOW_CHUNK):
        os.write(out, data)
        time.sleep(SLOW_PAUSE)


def _stalled(out: int, stall: float) -> None:
    resume_at = 0.0

    def on_stall(signum: int, frame: FrameType | None) -> None:
        nonlocal resume_at
        resume_at = time.monotonic() + stall

    signal.signal(signal.SIGUSR1, on_stall)
    while True:
        wait = resume_at - time.monotonic()
        if wait > 0:
            time.sleep(wait)
            continue
        data = os.read(0, FAST_CHUNK)
        if not data:
            return
        os.write(out, data)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pipes")
    parser.add_argument("mode", choices=("slow", "stalled"))
    parser.add_argument("capture")
    parser.add_argument("--stall", type=float, default=3.0, help="seconds per SIGUSR1")
    args = parser.parse_args(argv)
    out = os.open(args.capture, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        if args.mode == "slow":
            _slow(out)
        else:
            _stalled(out, args.stall)
    finally:
        os.close(out)


if __name__ == "__main__":
    main(sys.argv[1:])
