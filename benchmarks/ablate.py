"""``python -m benchmarks.ablate``: variants of the end-to-end file-sink case, side by side.

    python -m benchmarks.ablate none asynclog asynclog:ASYNCLOG_QUEUE_SIZE=1

A variant is a mode of ``e2e.MODES`` with, after a colon, extra environment for its server
(``NAME=value,NAME=value``): any ``ASYNCLOG_*`` setting (``ASYNCLOG_QUEUE_SIZE=1`` drops every
record at the queue, so the writer has nothing to do). ``BENCH_ASYNCLOG_APP=bench`` serves the
asynclog modes from ``benchmarks/apps.py``, whose knobs take a request apart further:
``BENCH_LINES`` (route lines, 2 or 0), ``BENCH_ACCESS`` (1 or 0: the access line) and
``BENCH_SETTINGS`` (install() settings: ``flush_interval=0.02;watchdog=False``).
``BENCH_TREE=/path/to/checkout`` serves a variant from another checkout of the project (with
its C extension built in place: ``python setup.py build_ext --inplace``), for a before/after
comparison in one run. Every
server boots first; then each round loads them in a shuffled order (fixed seed), so neither
drift on the machine nor a server's place or neighbour in the round favours one variant.
Printed per variant: median requests/s and its ratio to the first variant, median p99, and
the worker's CPU per request, in total and per thread (read from ``/proc``: the event-loop
thread first, then the others, busiest first).

Two copies of one variant show the noise floor: on the 2-vCPU VM here they differed by up to
0.11x. Run one benchmark at a time (``flock /tmp/asynclog-bench.lock``).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs in the bench extra

from benchmarks import e2e, loadgen


@dataclass
class Variant:
    """One server to measure: a label, its mode and its extra environment."""

    label: str
    mode: str
    env: dict[str, str]
    requests_per_s: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    # Per round: CPU microseconds per request of each worker thread, event-loop thread first.
    thread_us: list[list[float]] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    """``mode`` or ``mode:NAME=value,NAME=value``; raises ValueError naming what is wrong."""
    mode, _, extra = text.partition(":")
    if mode not in e2e.MODES:
        raise ValueError(f"variant {text!r}: mode {mode!r} is not one of {', '.join(e2e.MODES)}")
    env: dict[str, str] = {}
    for pair in filter(None, extra.split(",")):
        name, eq, value = pair.partition("=")
        if not eq or not name:
            raise ValueError(f"variant {text!r}: {pair!r} is not NAME=value")
        env[name] = value
    return Variant(text, mode, env)


def _thread_cpu(worker: psutil.Process) -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in worker.threads()}


def _per_request(
    before: dict[int, float], after: dict[int, float], main: int, requests: int
) -> list[float]:
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    loop = used.pop(main, 0.0)
    return [seconds * 1e6 / requests for seconds in [loop, *sorted(used.values(), reverse=True)]]


def run(variants: list[Variant], profile: e2e.E2EProfile, seed: int = 7) -> None:
    """Boot every variant's server, load them round by round in shuffled order, stop them."""
    workdir = Path(tempfile.mkdtemp(prefix="asynclog-ablate-"))
    gen = loadgen.choose("wrk", workdir)
    servers: list[e2e.Server] = []  # every server started, so each one is stopped
    workers: list[psutil.Process] = []
    with e2e.load_cpu_only():
        try:
            for n, variant in enumerate(variants):
                case = e2e.Case(variant.mode, "file")
                server = e2e.Server(case, profile, workdir, f"variant-{n}", variant.env)
                servers.append(server)
                server.boot()
                if profile.warmup > 0:
                    server.load(gen, profile.warmup, warmup=True)
                assert server.proc is not None
                workers.append(psutil.Process(server.proc.pid).children()[0])
            order = list(range(len(servers)))
            shuffle = random.Random(seed).shuffle
            for n in range(profile.rounds):
                print(f"round {n + 1}/{profile.rounds}", file=sys.stderr, flush=True)
                shuffle(order)
                for i in order:
                    variant, server, worker = variants[i], servers[i], workers[i]
                    before = _thread_cpu(worker)
                    server.load(gen, profile.duration)
                    after = _thread_cpu(worker)
                    result = server.rounds[-1]
                    requests = max(1, int(result["requests"]))
                    variant.requests_per_s.append(result["requests"] / result["seconds"])
                    variant.p99_ms.append(result["p99_ms"])
                    variant.thread_us.append(_per_request(before, after, worker.pid, requests))
        finally:
            for server in servers:
                server.stop()
            shutil.rmtree(workdir, ignore_errors=True)


def table(variants: list[Variant]) -> str:
    """The comparison, one row per variant, ratios against the first."""
    base = statistics.median(variants[0].requests_per_s)
    rows = [
        "| variant | req/s | x first | rounds (x first) | p99 ms | CPU us/request | per thread |",
        "|---|--:|--:|--:|--:|--:|---|",
    ]
    for v in variants:
        rps = statistics.median(v.requests_per_s)
        low, high = min(v.requests_per_s) / base, max(v.requests_per_s) / base
        columns = [statistics.median(col) for col in zip(*v.thread_us, strict=False)]
        threads = " / ".join(f"{us:.1f}" for us in columns)
        rows.append(
            f"| {v.label} | {rps:,.0f} | {rps / base:.3f}x | {low:.2f}-{high:.2f} "
            f"| {statistics.median(v.p99_ms):.1f} | {sum(columns):.1f} | {threads} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablate", description=__doc__)
    parser.add_argument("variants", nargs="+", help="mode or mode:NAME=value,... (first: base)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per load run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args(argv)
    try:
        variants = [parse_variant(text) for text in args.variants]
    except ValueError as exc:
        parser.error(str(exc))
    profile = e2e.E2EProfile(
        connections=args.connections,
        warmup=args.warmup,
        duration=args.duration,
        rounds=args.rounds,
        stall=0.0,
        boot_timeout=60,
    )
    try:
        run(variants, profile)
    except RuntimeError as exc:  # a server that would not boot, or a load run that failed
        print(f"python -m benchmarks.ablate: {exc}", file=sys.stderr)
        return 1
    print(table(variants))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
