"""Micro benchmark: one INFO call with five fields, per library, each in its own process.

The parent starts ``python -m benchmarks.micro`` for timing (``run_timing``, several times,
round-robin over the libraries) and once for memory (``run_memory``), so peak RSS and
global logging configuration never leak between libraries, and a burst of other work on
the machine is spread over all of them; ``combine`` takes medians over every repeat.

Timing (one process, fresh sink and file per repeat):

- caller ns/call: a burst of records after a warm-up, wall time of the calling loop
  divided by the burst size. Any writer thread runs at the same time on the other core.
  The burst is at most ``max_burst`` records, below a bounded queue's capacity, so it
  measures what the caller pays while the writer keeps up.
- records/s: N records from the first call until ``close()`` returns with every record
  in the file.

Memory (another process): up to ``rss_records`` records as fast as the caller can, then
close; peak RSS of the process (``ru_maxrss``) against its RSS before the first record.

Record mix (``run_mix``): one timing process per library and pass measures every shape
of the mix in turn, each as above (a fresh sink and file per repeat), in an order that
rotates from pass to pass; no memory run.

Every file is read back: lines counted and parsed, each record found exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.peers import PEERS, Peer
from benchmarks.records import FIVE, SHAPES, LineCheck, Shape, check_records


@dataclass(frozen=True)
class MicroProfile:
    warmup: int
    caller_repeats: int
    burst_seconds: float
    max_burst: int
    throughput_repeats: int
    throughput_seconds: float
    max_records: int
    rss_records: int
    rss_seconds: float
    rss_drain_seconds: float
    timeout: float


# The memory run checks its time limit between chunks of this many records.
_CHUNK = 1_000


@dataclass
class Run:
    loop_ns: int
    close_ns: int
    dropped: int
    check: LineCheck


# -- worker side ---------------------------------------------------------------------------


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _run_async(
    peer: Peer, shape: Shape, path: Path, warmup: int, n: int
) -> tuple[int, int, int]:
    sink = await peer.open(path, shape)  # type: ignore[misc]
    log = sink.log
    for seq in range(warmup):
        await log(seq)
    t0 = time.perf_counter_ns()
    for seq in range(warmup, warmup + n):
        await log(seq)
    t1 = time.perf_counter_ns()
    await sink.close()
    t2 = time.perf_counter_ns()
    return t1 - t0, t2 - t1, sink.dropped()


def _run_sync(peer: Peer, shape: Shape, path: Path, warmup: int, n: int) -> tuple[int, int, int]:
    sink = peer.open(path, shape)
    assert not inspect.isawaitable(sink)
    log = sink.log
    for seq in range(warmup):
        log(seq)
    t0 = time.perf_counter_ns()
    for seq in range(warmup, warmup + n):
        log(seq)
    t1 = time.perf_counter_ns()
    sink.close()
    t2 = time.perf_counter_ns()
    return t1 - t0, t2 - t1, sink.dropped()


def _run(peer: Peer, shape: Shape, workdir: Path, tag: str, warmup: int, n: int) -> Run:
    path = workdir / f"{peer.name}-{shape.name}-{tag}.jsonl"
    if peer.is_async:
        loop_ns, close_ns, dropped = asyncio.run(_run_async(peer, shape, path, warmup, n))
    else:
        loop_ns, close_ns, dropped = _run_sync(peer, shape, path, warmup, n)
    check = check_records(path, warmup + n, shape)
    path.unlink()
    return Run(loop_ns, close_ns, dropped, check)


def _merge(checks: list[LineCheck]) -> dict[str, Any]:
    total = LineCheck()
    for c in checks:
        for key in (
            "lines",
            "valid",
            "corrupt",
            "duplicates",
            "missing",
            "dropped_reported",
            "other",
        ):
            setattr(total, key, getattr(total, key) + getattr(c, key))
        total.samples += c.samples[: 3 - len(total.samples)]
    return total.to_dict()


def _clamp(value: float, low: int, high: int) -> int:
    return max(low, min(high, int(value)))


def time_peer(
    peer: Peer, profile: MicroProfile, workdir: Path, shape: Shape = FIVE
) -> dict[str, Any]:
    """Caller ns/call and records/s for *peer* logging *shape*, medians of repeats."""
    probe = _run(peer, shape, workdir, "probe", 0, profile.warmup)
    per_call = probe.loop_ns / profile.warmup
    burst = _clamp(profile.burst_seconds * 1e9 / per_call, 200, profile.max_burst)
    runs = [
        _run(peer, shape, workdir, f"caller{i}", profile.warmup, burst)
        for i in range(profile.caller_repeats)
    ]
    caller = [r.loop_ns / burst for r in runs]
    per_record = statistics.median(
        (r.loop_ns + r.close_ns) / (profile.warmup + burst) for r in runs
    )
    n = _clamp(profile.throughput_seconds * 1e9 / per_record, 1000, profile.max_records)
    tp_runs = [
        _run(peer, shape, workdir, f"tp{i}", 0, n) for i in range(profile.throughput_repeats)
    ]
    rates = [n * 1e9 / (r.loop_ns + r.close_ns) for r in tp_runs]
    all_runs = [probe, *runs, *tp_runs]
    return {
        "caller_ns": statistics.median(caller),
        "caller_ns_repeats": caller,
        "burst": burst,
        "records_per_s": statistics.median(rates),
        "records_per_s_repeats": rates,
        "throughput_records": n,
        "dropped": sum(r.dropped for r in all_runs),
        "check": _merge([r.check for r in all_runs]),
    }


async def _emit_async(
    peer: Peer, path: Path, records: int, seconds: float, out: dict[str, Any]
) -> None:
    sink = await peer.open(path, FIVE)  # type: ignore[misc]
    out["rss_baseline"] = _rss_now()
    deadline = time.monotonic() + seconds
    sent = 0
    while sent < records and time.monotonic() < deadline:
        for seq in range(sent, min(records, sent + _CHUNK)):
            await sink.log(seq)
        sent = min(records, sent + _CHUNK)
    out["rss_records"] = sent
    out["rss_emit_peak"] = _peak_rss()
    await sink.close()
    out["rss_dropped"] = sink.dropped()


def _emit_sync(peer: Peer, path: Path, records: int, seconds: float, out: dict[str, Any]) -> None:
    sink = peer.open(path, FIVE)
    assert not inspect.isawaitable(sink)
    out["rss_baseline"] = _rss_now()
    deadline = time.monotonic() + seconds
    sent = 0
    log = sink.log
    while sent < records and time.monotonic() < deadline:
        for seq in range(sent, min(records, sent + _CHUNK)):
            log(seq)
        sent = min(records, sent + _CHUNK)
    out["rss_records"] = sent
    out["rss_emit_peak"] = _peak_rss()
    sink.close()
    out["rss_dropped"] = sink.dropped()


def memory_peer(peer: Peer, profile: MicroProfile, workdir: Path) -> dict[str, Any]:
    """Peak RSS while logging up to ``rss_records`` records (stopping at ``rss_seconds``).

    ``close()`` may then take as long as the backlog an unbounded queue built up; it gets
    ``rss_drain_seconds``, after which the run is reported as not drained (and the file
    is not checked) rather than waited for.
    """
    path = workdir / f"{peer.name}-rss.jsonl"
    result: dict[str, Any] = {}

    def emit() -> None:
        args = (peer, path, profile.rss_records, profile.rss_seconds, result)
        if peer.is_async:
            asyncio.run(_emit_async(*args))
        else:
            _emit_sync(*args)

    t0 = time.monotonic()
    thread = threading.Thread(target=emit, daemon=True)
    thread.start()
    thread.join(profile.rss_seconds + profile.rss_drain_seconds)
    drained = not thread.is_alive()
    result |= {
        "rss_peak": _peak_rss(),
        "rss_seconds": time.monotonic() - t0,
        "rss_drained": drained,
    }
    result["rss_capped"] = result.get("rss_records", 0) < profile.rss_records
    if drained:
        result["rss_check"] = check_records(path, result["rss_records"]).to_dict()
    path.unlink(missing_ok=True)
    return result


def _worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro")
    parser.add_argument("phase", choices=("time", "memory", "mix"))
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--profile", required=True, help="MicroProfile as JSON")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--shapes", default="", help="mix: shape names in order, comma-separated")
    args = parser.parse_args(argv)
    profile = MicroProfile(**json.loads(args.profile))
    peer = PEERS[args.peer]
    result: dict[str, Any]
    if args.phase == "time":
        result = time_peer(peer, profile, args.dir)
    elif args.phase == "mix":
        result = {
            name: time_peer(peer, profile, args.dir, SHAPES[name])
            for name in args.shapes.split(",")
        }
    else:
        result = memory_peer(peer, profile, args.dir)
    print(json.dumps(result), flush=True)
    # A logger still draining (non-daemon listener threads) must not hold the process.
    os._exit(0)


# -- parent side ---------------------------------------------------------------------------


def _spawn(
    phase: str, peer: Peer, profile: MicroProfile, workdir: Path, *extra: str
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.micro",
        phase,
        peer.name,
        "--profile",
        json.dumps(asdict(profile)),
        "--dir",
        str(workdir),
        *extra,
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=profile.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"{phase} run exceeded {profile.timeout:.0f} s and was stopped"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": f"{phase} run failed (exit {proc.returncode}): " + " | ".join(tail)}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_timing(peer: Peer, profile: MicroProfile, workdir: Path | None = None) -> dict[str, Any]:
    """One fresh process timing *peer*; errors are reported as ``error``, not raised."""
    with tempfile.TemporaryDirectory(prefix="asynclog-bench-", dir=workdir) as tmp:
        return _spawn("time", peer, profile, Path(tmp))


def run_memory(peer: Peer, profile: MicroProfile, workdir: Path | None = None) -> dict[str, Any]:
    """One fresh process measuring *peer*'s peak RSS; errors are reported, not raised."""
    with tempfile.TemporaryDirectory(prefix="asynclog-bench-", dir=workdir) as tmp:
        return _spawn("memory", peer, profile, Path(tmp))


def run_mix(
    peer: Peer, shapes: list[Shape], profile: MicroProfile, workdir: Path | None = None
) -> dict[str, dict[str, Any]]:
    """One fresh process timing *peer* on each of *shapes* in turn: figures per shape name.

    A failed process is reported as an ``error`` for every shape it was to measure."""
    names = [s.name for s in shapes]
    with tempfile.TemporaryDirectory(prefix="asynclog-bench-", dir=workdir) as tmp:
        found = _spawn("mix", peer, profile, Path(tmp), "--shapes", ",".join(names))
    if "error" in found:
        return {name: found for name in names}
    return found


def combine(peer: Peer, timings: list[dict[str, Any]], memory: dict[str, Any]) -> dict[str, Any]:
    """One peer's figures from several timing processes (medians over all their repeats)."""
    errors = [r["error"] for r in (*timings, memory) if "error" in r]
    good = [t for t in timings if "error" not in t]
    result: dict[str, Any] = {"name": peer.name, "label": peer.label}
    if good:
        caller = [x for t in good for x in t["caller_ns_repeats"]]
        rates = [x for t in good for x in t["records_per_s_repeats"]]
        checks = [LineCheck(**{k: v for k, v in t["check"].items() if k != "intact"}) for t in good]
        result |= {
            "caller_ns": statistics.median(caller),
            "caller_ns_repeats": caller,
            "burst": [t["burst"] for t in good],
            "records_per_s": statistics.median(rates),
            "records_per_s_repeats": rates,
            "throughput_records": [t["throughput_records"] for t in good],
            "processes": len(good),
            "dropped": sum(t["dropped"] for t in good),
            "check": _merge(checks),
        }
    result |= {k: v for k, v in memory.items() if k != "error"}
    if errors:
        result["error"] = "; ".join(errors)
    return result


if __name__ == "__main__":
    _worker(sys.argv[1:])
