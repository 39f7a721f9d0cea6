"""A steady stream of numbered lines through asynclog, for the delivery tests.

    python tests/_stream.py SINK RATE SECONDS [FIRST]

Writes RATE lines a second for SECONDS seconds to the file SINK with asynclog's defaults (JSON
lines), each with a unique `seq` (FIRST, FIRST + 1, ...), paced in 20 ms steps so a slow
moment is made up, never skipped. Prints asynclog's counters as JSON on stdout at the end;
test_sidecar_delivery.py checks them with conftest's `assert_accounted`: every line sent is
`written`, none `dropped`.
"""

from __future__ import annotations

import json
import sys
import time

import asynclog

STEP_S = 0.02


def main(sink: str, rate: int, seconds: float, first: int) -> int:
    asynclog.configure(sink=sink, format="json")
    log = asynclog.get_logger("delivery")
    total = int(rate * seconds)
    start = time.monotonic()
    seq = first
    while seq < first + total:
        due = first + min(total, int((time.monotonic() - start) * rate) + 1)
        while seq < due:
            log.info("delivery", seq=seq)
            seq += 1
        time.sleep(STEP_S)
    if not asynclog.shutdown(timeout=30):
        return 1
    print(json.dumps(asynclog.stats()))
    return 0


if __name__ == "__main__":
    first = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    sys.exit(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), first))
