"""``python -m benchmarks``: run the micro and end-to-end benchmarks, write the report.

    python -m benchmarks            # ~8 minutes
    python -m benchmarks --quick    # < 1 minute, the CI smoke test
    python -m benchmarks --full     # ~30 minutes: longer runs, more repeats
    python -m benchmarks --out DIR  # somewhere other than benchmarks/results
    python -m benchmarks --only mix # the record mix alone (every shape, its peers)
    python -m benchmarks --only sidecar  # the Fluent Bit sidecar alone (FLUENT_BIT=...)

Only one benchmark should run on a machine at a time; wrap it in
``flock /tmp/asynclog-bench.lock`` where others share the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import e2e, loadgen, micro, quiet, report, sidecar, targets
from benchmarks.peers import BASELINE, MIX_PEERS, PEERS, Peer, missing
from benchmarks.profiles import PROFILES, Profile
from benchmarks.records import FIVE, SHAPES, Shape

RESULTS = Path(__file__).resolve().parent / "results"
# Before a step, wait (up to the profile's quiet_wait) until other processes use < 10% of the
# CPUs; never wait more than MAX_TOTAL_WAIT seconds in one run.
QUIET_THRESHOLD = 0.10
MAX_TOTAL_WAIT = 60.0


Step = tuple[str, float]  # a label and its rough duration in seconds


class Progress:
    """One line per step on stderr: step count, elapsed time and a rough time left."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.start = time.monotonic()
        self.done = 0
        self.tty = sys.stderr.isatty()

    @staticmethod
    def _clock(seconds: float) -> str:
        return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"

    def begin(self, label: str) -> None:
        elapsed = time.monotonic() - self.start
        left = sum(seconds for _, seconds in self.steps[self.done :])
        line = (
            f"[{self.done + 1:>2}/{len(self.steps)}  {self._clock(elapsed)} elapsed, "
            f"~{self._clock(left)} left] {label} ..."
        )
        print(line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        """A sub-step of a long step (printed on its own line only when not a terminal)."""
        if not self.tty:
            print(f"    {text}", file=sys.stderr, flush=True)
        else:
            print(f" {text}", end="", file=sys.stderr, flush=True)

    def end(self, summary: str) -> None:
        self.done += 1
        print(f" {summary}" if self.tty else f"    {summary}", file=sys.stderr, flush=True)


def _other(result: dict[str, Any]) -> str:
    share = result.get("other_cpu")
    return "" if share is None else f" (other processes: {share:.0%} CPU)"


def _micro_summary(m: dict[str, Any]) -> str:
    if "error" in m:
        return f"ERROR {m['error']}"
    return f"{m['caller_ns_repeats'][0]:,.0f} ns/call, {m['records_per_s_repeats'][0]:,.0f} rec/s"


def _memory_summary(m: dict[str, Any]) -> str:
    if "rss_peak" not in m:
        return f"ERROR {m.get('error')}"
    return f"peak RSS {m['rss_peak'] / 2**20:.0f} MB after {m.get('rss_records', 0):,} records"


def _e2e_summary(c: dict[str, Any]) -> str:
    if "error" in c:
        return f"{c['mode']}: ERROR {c['error']}"
    return f"{c['mode']}: {c['requests_per_s']:,.0f} req/s, p99 {c['p99_ms']:.1f} ms"


def _group_label(group: list[e2e.Case]) -> str:
    if len(group) == 1:
        return f"e2e {group[0].name}"
    return f"e2e {group[0].sink} sink, {len(group)} servers interleaved"


class Session:
    """One benchmark run: the steps in order, each after the machine has gone quiet."""

    def __init__(self, profile: Profile, progress: Progress, workdir: Path) -> None:
        self.profile = profile
        self.progress = progress
        self.workdir = workdir
        self.meter = quiet.ForeignCpu()
        self.waited = 0.0

    def settle(self, label: str) -> None:
        """Start a step: wait (bounded) for other work to stop, then start the CPU meter."""
        self.progress.begin(label)
        budget = min(self.profile.quiet_wait, MAX_TOTAL_WAIT - self.waited)
        if budget > 0:
            self.waited += quiet.wait_for_quiet(QUIET_THRESHOLD, budget)
        self.meter.start()

    def micro(self, peers: list[Peer]) -> list[dict[str, Any]]:
        """Timing processes round-robin over the peers, then one memory process each."""
        n = self.profile.micro_passes
        timings: dict[str, list[dict[str, Any]]] = {p.name: [] for p in peers}
        other: dict[str, list[float]] = {p.name: [] for p in peers}
        for i in range(1, n + 1):
            for peer in peers:
                self.settle(f"micro {peer.name} timing {i}/{n}")
                timings[peer.name].append(micro.run_timing(peer, self.profile.micro, self.workdir))
                other[peer.name].append(self.meter.stop() or 0.0)
                self.progress.end(
                    _micro_summary(timings[peer.name][-1])
                    + _other({"other_cpu": other[peer.name][-1]})
                )
        found = []
        for peer in peers:
            self.settle(f"micro {peer.name} memory")
            memory = micro.run_memory(peer, self.profile.micro, self.workdir)
            other[peer.name].append(self.meter.stop() or 0.0)
            m = micro.combine(peer, timings[peer.name], memory)
            m["other_cpu"] = max(other[peer.name])
            found.append(m)
            self.progress.end(_memory_summary(m))
        return found

    def mix(self, peers: list[Peer], shapes: list[Shape]) -> list[dict[str, Any]]:
        """The record mix: per pass, one process per peer times every shape, in an order
        rotated each pass; figures per (shape, peer), medians over the passes."""
        n = self.profile.micro_passes
        timings: dict[tuple[str, str], list[dict[str, Any]]] = {}
        other: dict[str, list[float]] = {p.name: [] for p in peers}
        for i in range(n):
            order = shapes[i % len(shapes) :] + shapes[: i % len(shapes)]
            for peer in peers:
                self.settle(f"mix {peer.name} timing {i + 1}/{n}")
                found = micro.run_mix(peer, order, self.profile.mix, self.workdir)
                other[peer.name].append(self.meter.stop() or 0.0)
                for shape in order:
                    timings.setdefault((shape.name, peer.name), []).append(found[shape.name])
                self.progress.end(_mix_summary(found) + _other({"other_cpu": other[peer.name][-1]}))
        out = []
        for shape in shapes:
            for peer in peers:
                m = micro.combine(peer, timings[(shape.name, peer.name)], {})
                out.append({"shape": shape.name, **m, "other_cpu": max(other[peer.name])})
        return out

    def e2e(self, groups: list[list[e2e.Case]], gen: loadgen.LoadGen) -> list[dict[str, Any]]:
        found = []
        for group in groups:
            self.settle(_group_label(group))
            cases = e2e.run_group(group, self.profile.e2e, gen, self.workdir, self.progress.note)
            other = self.meter.stop()
            for c in cases:
                c["other_cpu"] = other
            found += cases
            self.progress.end("; ".join(_e2e_summary(c) for c in cases) + _other(cases[0]))
        return found

    def sidecar(self) -> dict[str, Any]:
        """The Fluent Bit sidecar on the shipped config (benchmarks/sidecar.py)."""
        self.settle("sidecar: Fluent Bit on the shipped config")
        found = sidecar.run(self.profile.name, self.workdir, self.progress.note)
        found["other_cpu"] = self.meter.stop()
        self.progress.end(_sidecar_summary(found) + _other(found))
        return found


def _sidecar_summary(s: dict[str, Any]) -> str:
    if "skipped" in s:
        return f"skipped: {s['skipped']}"
    return "; ".join(
        f"{name}: {v['lines_per_s']:,.0f} lines/s, {v['cpu_s_per_100k']:.2f} CPU s per 100k lines"
        for name, v in s["variants"].items()
    )


def _sidecar_steps(profile: Profile) -> list[Step]:
    repeats = sidecar.PROFILES[profile.name].repeats
    return [("sidecar: Fluent Bit on the shipped config", 5 + len(sidecar.VARIANTS) * repeats * 6)]


def _mix_summary(found: dict[str, dict[str, Any]]) -> str:
    return "; ".join(f"{name}: {_micro_summary(m)}" for name, m in found.items())


def _mix_steps(profile: Profile, peers: list[Peer], shapes: list[Shape]) -> list[Step]:
    seconds = profile.mix_seconds * len(shapes)
    return [(f"mix {p.name} timing", seconds) for _ in range(profile.micro_passes) for p in peers]


def _steps(profile: Profile, peers: list[Peer], groups: list[list[e2e.Case]]) -> list[Step]:
    memory_seconds = profile.micro.rss_seconds + 1
    passes = profile.micro_passes
    timing_seconds = max(0.5, profile.micro_seconds - memory_seconds) / passes
    steps = [(f"micro {p.name} timing", timing_seconds) for _ in range(passes) for p in peers]
    steps += [(f"micro {p.name} memory", memory_seconds) for p in peers]
    steps += [(_group_label(g), profile.e2e_seconds * len(g)) for g in groups]
    return steps


def _mix_shapes(parts: set[str]) -> list[Shape]:
    """The shapes the mix measures: today's comes from the main micro table when that runs."""
    if "mix" not in parts:
        return []
    return [s for s in SHAPES.values() if s is not FIVE or "micro" not in parts]


def _mix_rows(
    micro_found: list[dict[str, Any]], mix_found: list[dict[str, Any]], peers: list[Peer]
) -> list[dict[str, Any]]:
    """The mix's figures per (shape, peer), today's shape first, taken from the micro table."""
    names = {p.name for p in peers}
    today = [{"shape": FIVE.name, **m} for m in micro_found if m["name"] in names]
    return today + mix_found


def run(profile: Profile, parts: set[str], loadgen_pref: str) -> dict[str, Any]:
    """Run the benchmark parts in *parts*; returns the results with ratios and targets."""
    available = [p for p in PEERS.values() if not missing(p)]
    peers = available if "micro" in parts else []
    mix_peers = [p for p in available if p.name in MIX_PEERS] if "mix" in parts else []
    shapes = _mix_shapes(parts)
    groups = e2e.GROUPS if "e2e" in parts else []
    steps = _steps(profile, peers, []) + _mix_steps(profile, mix_peers, shapes)
    steps += _steps(profile, [], groups)
    if "sidecar" in parts:
        steps += _sidecar_steps(profile)
    progress = Progress(steps)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "profile": profile.name,
        "machine": report.machine(),
        # Other work on the machine skews absolute figures; the load average says if there was.
        "load_average_before": os.getloadavg(),
        "micro_profile": asdict(profile.micro),
        "mix_profile": asdict(profile.mix),
        "e2e_profile": asdict(profile.e2e),
        "baseline": BASELINE,
        "skipped": {p.name: missing(p) for p in PEERS.values() if missing(p)},
    }
    with tempfile.TemporaryDirectory(prefix="asynclog-bench-") as tmp:
        session = Session(profile, progress, Path(tmp))
        gen = loadgen.choose(loadgen_pref, Path(tmp))
        results["loadgen"] = gen.name
        results["versions"] = report.versions(gen.name)
        results["micro"] = session.micro(peers)
        mix_found = session.mix(mix_peers, shapes) if shapes else []
        results["e2e"] = session.e2e(groups, gen)
        if "sidecar" in parts:
            results["sidecar"] = session.sidecar()
        results["quiet_waited_s"] = round(session.waited, 1)
    targets.add_ratios(results["micro"], results["e2e"], BASELINE)
    results["targets"] = [t.to_dict() for t in targets.evaluate(results["micro"], results["e2e"])]
    if shapes:
        results["mix_shapes"] = {s.name: s.label for s in SHAPES.values()}
        results["mix"] = _mix_rows(results["micro"], mix_found, mix_peers)
        targets.add_mix_ratios(results["mix"], BASELINE)
        measured = {s.name for s in shapes}
        results["targets"] += [t.to_dict() for t in targets.evaluate_mix(results["mix"], measured)]
    results["commands"] = [
        "python -m benchmarks " + shlex.join(sys.argv[1:]),
        *(c["command"] for c in results["e2e"] if "command" in c),
    ]
    results["seconds"] = round(time.monotonic() - progress.start, 1)
    results["load_average_after"] = os.getloadavg()
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run asynclog's micro and end-to-end benchmarks and write the report.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="under a minute (CI smoke test)")
    size.add_argument("--full", action="store_true", help="~30 minutes: longer runs, more repeats")
    parser.add_argument("--out", type=Path, default=RESULTS, metavar="DIR", help="report directory")
    parser.add_argument(
        "--only",
        choices=("micro", "mix", "e2e", "sidecar"),
        help="run one part only (micro includes the record mix)",
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "builtin"),
        default="auto",
        help="wrk if installed (auto), or the built-in asyncio generator",
    )
    args = parser.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("note: fewer than 2 CPUs; server and load generator share one", file=sys.stderr)
    profile = PROFILES["quick" if args.quick else "full" if args.full else "default"]
    parts = {"micro", "mix", "e2e", "sidecar"}
    if args.only:
        parts = {"micro", "mix"} if args.only == "micro" else {args.only}
    results = run(profile, parts, args.loadgen)
    paths = report.write(results, args.out)
    print(report.terminal(results))
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
