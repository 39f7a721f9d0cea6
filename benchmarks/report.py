"""Ratios, targets and the report files: ``latest.md``, ``latest.json`` and the PNG plots.

Every ratio divides by a baseline measured in the same run: stdlib sync JSON for the
micro benchmark, the no-logging server (file sink) end to end, and a mode's own file-sink
figures for its pipe sinks.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import sidecar
from benchmarks.e2e import LINES_PER_REQUEST, MODES, PROXIED

MB = 1 << 20
PACKAGES = (
    "asynclog", "orjson", "structlog", "loguru", "aiologger", "aiofiles", "fastapi",
    "starlette", "gunicorn", "uvicorn", "uvicorn-worker", "opentelemetry-sdk",
    "opentelemetry-instrumentation-fastapi", "matplotlib",
)  # fmt: skip
# Worker RSS growth allowed under a slow or stalled pipe, and for the micro memory run.
RSS_ALLOWANCE = 50 * MB
ASYNCLOG = "asynclog"
STRUCTLOG = "structlog-fast"


# -- machine and versions ----------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gb": round(mem / (1 << 30), 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def versions(loadgen_name: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    if loadgen_name == "wrk" and shutil.which("wrk"):
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        first = (out.stdout or out.stderr).strip().splitlines()
        found["wrk"] = first[0].split()[1] if first and len(first[0].split()) > 1 else "?"
    return found


# -- ratios and targets -------------------------------------------------------------------


def _by_name(micro: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in micro if "error" not in m}


def _of(case: dict[str, Any] | None, key: str) -> float | None:
    return None if case is None else case.get(key)


def _case(e2e: list[dict[str, Any]], mode: str, sink: str) -> dict[str, Any] | None:
    for c in e2e:
        if c["mode"] == mode and c["sink"] == sink and "error" not in c:
            return c
    return None


def _add_timing_ratios(m: dict[str, Any], base: dict[str, Any]) -> None:
    m["caller_x"] = m["caller_ns"] / base["caller_ns"]
    m["throughput_x"] = m["records_per_s"] / base["records_per_s"]


def add_ratios(micro: list[dict[str, Any]], e2e: list[dict[str, Any]], baseline: str) -> None:
    """Annotate each result in place with its ratios against the same run's baseline."""
    base = _by_name(micro).get(baseline)
    for m in micro:
        if base and "error" not in m:
            _add_timing_ratios(m, base)
        if "rss_peak" in m and "rss_baseline" in m:
            m["rss_growth"] = max(0, m["rss_peak"] - m["rss_baseline"])
    for c in e2e:
        if "error" in c:
            continue
        c["rss_growth"] = max(0, c["worker_peak_rss"] - c["worker_idle_rss"])
        # Through the proxy, the baseline is no logging through the same proxy.
        none = _case(e2e, "none", PROXIED if c["sink"] == PROXIED else "file")
        if none:
            c["rps_x_none"] = c["requests_per_s"] / none["requests_per_s"]
            c["p99_x_none"] = c["p99_ms"] / none["p99_ms"]
        own = _case(e2e, c["mode"], "file")
        if own and c["sink"] != "file":
            c["rps_x_file"] = c["requests_per_s"] / own["requests_per_s"]
            c["p99_x_file"] = c["p99_ms"] / own["p99_ms"]


@dataclass
class Target:
    """A target evaluated on one run's figures (value and met are None: not measured)."""

    what: str
    goal: str
    value: float | None
    met: bool | None
    unit: str = "x"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Figures:
    """What a target reads: one shape's micro rows by library, and the end-to-end cases."""

    peers: dict[str, dict[str, Any]]
    e2e: list[dict[str, Any]] = field(default_factory=list)

    def row(self, name: str) -> dict[str, Any]:
        return self.peers.get(name, {})

    def case(self, mode: str, sink: str) -> dict[str, Any] | None:
        return _case(self.e2e, mode, sink)


Metric = Callable[[Figures], float | None]


@dataclass(frozen=True)
class Goal:
    """One target as data: its wording, the figure it reads, and the limit that figure must
    stay under (or, with at_least, reach)."""

    what: str  # may name {rss_records}, asynclog's row's memory-run size
    metric: Metric
    limit: float
    at_least: bool = False
    unit: str = "x"
    # Its heading in the record mix's per-shape table; empty: the mix does not apply it.
    column: str = ""

    @property
    def goal(self) -> str:
        return f"{'>=' if self.at_least else '<='} {self.limit:.3g}{self.unit}"

    def check(self, figures: Figures, prefix: str = "") -> Target:
        value = self.metric(figures)
        if value is None:
            met = None
        else:
            met = value >= self.limit if self.at_least else value <= self.limit
        rss_records = figures.row(ASYNCLOG).get("rss_records", 0)
        return Target(prefix + self.what.format(rss_records=rss_records), self.goal, value, met,
                      self.unit)  # fmt: skip


def _field(name: str, key: str) -> Metric:
    return lambda f: f.row(name).get(key)


def _records_over(other: str) -> Metric:
    """asynclog's records/s over another library's, on the same shape."""

    def metric(f: Figures) -> float | None:
        native, peer = f.row(ASYNCLOG), f.row(other)
        return native["records_per_s"] / peer["records_per_s"] if native and peer else None

    return metric


def _caller_over_cheapest_peer(f: Figures) -> float | None:
    others = [p["caller_ns"] for n, p in f.peers.items() if not n.startswith(ASYNCLOG)]
    native = f.row(ASYNCLOG)
    return native["caller_ns"] / min(others) if native and others else None


def _rss_growth_mb(f: Figures) -> float | None:
    growth = f.row(ASYNCLOG).get("rss_growth")
    return None if growth is None else growth / MB


def _e2e(mode: str, sink: str, key: str) -> Metric:
    return lambda f: _of(f.case(mode, sink), key)


def _tracing_over_otel(f: Figures) -> float | None:
    on, otel = f.case("asynclog-tracing", "file"), f.case("stdlib-otel", "file")
    return on["requests_per_s"] / otel["requests_per_s"] if on and otel else None


def _proxied_distance(f: Figures) -> float | None:
    """Behind nginx, asynclog's share of the cost must be what it is without the proxy."""
    through = _of(f.case(ASYNCLOG, PROXIED), "rps_x_none")
    direct = _of(f.case(ASYNCLOG, "file"), "rps_x_none")
    return None if through is None or direct is None else abs(through - direct)


def _worker_rss_growth_mb(sink: str) -> Metric:
    def metric(f: Figures) -> float | None:
        c = f.case(ASYNCLOG, sink)
        return None if c is None else c["rss_growth"] / MB

    return metric


# The micro targets, read on one shape's rows; those with a column apply to every mix shape too.
RECORD_GOALS = (
    Goal("asynclog native caller cost vs stdlib sync", _field(ASYNCLOG, "caller_x"), 0.1,
         column="caller x stdlib sync"),
    Goal("stdlib logging through asynclog, caller cost vs stdlib sync",
         _field("asynclog-stdlib", "caller_x"), 0.5),
    Goal("asynclog native caller cost vs the cheapest peer", _caller_over_cheapest_peer, 1.0),
    Goal("asynclog records/s vs stdlib sync", _field(ASYNCLOG, "throughput_x"), 6,
         at_least=True, column="records/s x stdlib sync"),
    Goal("asynclog records/s vs structlog fast", _records_over(STRUCTLOG), 2.5, at_least=True,
         column="records/s x structlog fast"),
    Goal("asynclog peak RSS growth over {rss_records:,} records (MB)", _rss_growth_mb,
         RSS_ALLOWANCE / MB, unit=" MB"),
)  # fmt: skip
MIX_GOALS = tuple(g for g in RECORD_GOALS if g.column)
E2E_GOALS = (
    Goal("e2e file: asynclog req/s vs no logging", _e2e(ASYNCLOG, "file", "rps_x_none"), 0.85,
         at_least=True),
    Goal("e2e file: asynclog + tracing req/s vs no logging",
         _e2e("asynclog-tracing", "file", "rps_x_none"), 0.6, at_least=True),
    Goal("e2e file: asynclog + tracing req/s vs stdlib sync + stock OTel", _tracing_over_otel,
         2.4, at_least=True),
    Goal("e2e file: asynclog + tracing p99 vs no logging",
         _e2e("asynclog-tracing", "file", "p99_x_none"), 2.0),
    Goal("e2e file+nginx: asynclog req/s vs no logging, its distance from the direct ratio",
         _proxied_distance, 0.05, unit=""),
    *(
        goal
        for sink in ("slow-pipe", "stalled-pipe")
        for goal in (
            Goal(f"e2e {sink}: asynclog req/s vs its file sink",
                 _e2e(ASYNCLOG, sink, "rps_x_file"), 1 / 1.5, at_least=True),
            Goal(f"e2e {sink}: asynclog p99 vs its file sink",
                 _e2e(ASYNCLOG, sink, "p99_x_file"), 1.5),
            Goal(f"e2e {sink}: asynclog worker RSS over idle (MB)", _worker_rss_growth_mb(sink),
                 RSS_ALLOWANCE / MB, unit=" MB"),
        )
    ),
)  # fmt: skip


def _all_of(what: str, checks: list[bool]) -> Target:
    """Met when every check holds (None: nothing was checked); the value is how many held."""
    return Target(
        what, "all", float(sum(checks)), all(checks) if checks else None, f"/{len(checks)}"
    )


def targets(micro: list[dict[str, Any]], e2e: list[dict[str, Any]]) -> list[Target]:
    """The issue's targets, each evaluated on this run's figures (None: not measured)."""
    figures = Figures(_by_name(micro), e2e)
    out = [g.check(figures, "micro: ") for g in RECORD_GOALS]
    out += [g.check(figures) for g in E2E_GOALS]
    intact = [
        m.get("check", {}).get("intact", False)
        for n, m in figures.peers.items()
        if n.startswith(ASYNCLOG)
    ] + [
        c["lines_corrupt"] == 0 and c["lines_lost"] == 0
        for c in e2e
        if c["mode"].startswith(ASYNCLOG) and "error" not in c
    ]
    out.append(_all_of("asynclog: every non-dropped line intact, dropped lines counted", intact))
    return out


# -- formatting ------------------------------------------------------------------------------


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:.0f} MB"


def _micro_check(m: dict[str, Any]) -> str:
    if "error" in m:
        return f"ERROR: {m['error']}"
    problems = []
    for key in ("check", "rss_check"):
        c = m.get(key)
        if not c:
            continue
        for kind in ("corrupt", "duplicates", "missing"):
            if c[kind]:
                problems.append(f"{c[kind]:,} {kind}")
    checked = m.get("check", {}).get("lines", 0) + m.get("rss_check", {}).get("lines", 0)
    if problems:
        return "FLAGGED: " + ", ".join(problems)
    return f"ok ({checked:,} lines)"


def _rss_cell(m: dict[str, Any]) -> str:
    if "rss_peak" not in m:
        return "-"
    cell = f"{_mb(m['rss_peak'])} (+{_mb(m.get('rss_growth'))}) @ {m.get('rss_records', 0):,}"
    if not m.get("rss_drained", True):
        cell += ", not drained"
    return cell


# A table is a list of columns: heading, alignment, and the cell of one row.
Column = tuple[str, str, Callable[[dict[str, Any]], str]]


def table(columns: tuple[Column, ...], rows: list[dict[str, Any]]) -> str:
    """A markdown table: one line per row, one cell per column."""
    lines = [
        "| " + " | ".join(heading for heading, _, _ in columns) + " |",
        "|" + "".join(f"{align}|" for _, align, _ in columns),
    ]
    lines += ["| " + " | ".join(cell(r) for _, _, cell in columns) + " |" for r in rows]
    return "\n".join(lines)


_TIMING_COLUMNS: tuple[Column, ...] = (
    ("caller ns/call", "--:", lambda m: _n(m.get("caller_ns"))),
    ("x stdlib sync", "--:", lambda m: _x(m.get("caller_x"))),
    ("records/s", "--:", lambda m: _n(m.get("records_per_s"))),
    ("x stdlib sync", "--:", lambda m: _x(m.get("throughput_x"))),
)
_LIBRARY: Column = ("library", "---", lambda m: str(m["label"]))
_OTHER_CPU: Column = ("other CPU", "--:", lambda m: _pct(m.get("other_cpu")))
MICRO_COLUMNS = (
    _LIBRARY,
    *_TIMING_COLUMNS,
    ("peak RSS (+growth) @ records", "---", _rss_cell),
    ("lines", "---", _micro_check),
    _OTHER_CPU,
)
MIX_COLUMNS = (
    ("shape", "---", lambda m: str(m["shape"])),
    _LIBRARY,
    *_TIMING_COLUMNS,
    ("x structlog fast", "--:", lambda m: _x(m.get("throughput_x_structlog"))),
    ("lines", "---", _micro_check),
    _OTHER_CPU,
)


def micro_table(micro: list[dict[str, Any]]) -> str:
    return table(MICRO_COLUMNS, micro)


def _lines_cell(c: dict[str, Any]) -> str:
    if c["mode"] == "none":
        return "-"
    cell = f"{c['lines_valid']:,} / {c['requests_served']:,}"
    if c["lines_corrupt"]:
        cell += f", FLAGGED {c['lines_corrupt']:,} corrupt"
        if c.get("torn_tail"):
            cell += " (incl. the last line, cut at shutdown)"
    if c["lines_lost"]:
        cell += f", FLAGGED ~{c['lines_lost']:,} lost"
    return cell


def e2e_table(e2e: list[dict[str, Any]]) -> str:
    rows = [
        "| mode | sink | req/s | x no logging | x own file sink | p50 ms | p90 ms | p99 ms "
        "| max ms | worker RSS idle -> peak | lines / requests | dropped | other CPU |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|---|---|--:|--:|",
    ]
    for c in e2e:
        label = MODES.get(c["mode"], c["mode"])
        if "error" in c:
            rows.append(f"| {label} | {c['sink']} | ERROR: {c['error']} |" + " |" * 10)
            continue
        dropped = _n(c["dropped"]) if c["mode"].startswith("asynclog") else "-"
        rows.append(
            f"| {label} | {c['sink']} | {_n(c['requests_per_s'])} | {_x(c.get('rps_x_none'))} "
            f"| {_x(c.get('rps_x_file'))} | {_n(c['p50_ms'], 1)} | {_n(c['p90_ms'], 1)} "
            f"| {_n(c['p99_ms'], 1)} | {_n(c['max_ms_worst'], 1)} "
            f"| {_mb(c['worker_idle_rss'])} -> {_mb(c['worker_peak_rss'])} "
            f"| {_lines_cell(c)} | {dropped} | {_pct(c.get('other_cpu'))} |"
        )
    return "\n".join(rows)


def _value_cell(t: Target) -> str:
    digits = 0 if t.unit.startswith("/") else 2
    return "-" if t.value is None else f"{t.value:.{digits}f}{t.unit}"


def _met_cell(t: Target) -> str:
    """The mix's cell: the value and whether it is met."""
    if t.value is None:
        return "not measured"
    return f"{_value_cell(t)} {'met' if t.met else '**MISSED**'}"


def targets_table(found: list[Target]) -> str:
    rows = ["| target | goal | this run | met |", "|---|---|--:|---|"]
    for t in found:
        met = "not measured" if t.met is None else ("yes" if t.met else "**MISSED**")
        rows.append(f"| {t.what} | {t.goal} | {_value_cell(t)} | {met} |")
    return "\n".join(rows)


def markdown(results: dict[str, Any]) -> str:
    m, p = results["machine"], results["profile"]
    versions_line = ", ".join(f"{k} {v}" for k, v in results["versions"].items())
    parts = [
        f"# asynclog benchmark results ({results['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gb']} GB RAM, {m['os']}, "
        f"{m['python']}. Profile: `{p}`, {results['seconds']:.0f} s. "
        f"Load generator: {results['loadgen']}. Load average before/after the run: "
        f"{results['load_average_before'][0]:.2f} / {results['load_average_after'][0]:.2f}.",
        "",
        f"Versions: {versions_line}.",
        "",
        "Figures are medians of repeats; every `x` is a ratio against a baseline from this "
        "same run (absolute figures on a 2-vCPU VM are slow: compare ratios). "
        "*other CPU* is the share of all CPUs that processes outside the benchmark used "
        "during that row's measurement: above ~10% the row is disturbed.",
    ]
    if results.get("micro"):
        parts += [
            "",
            "## Micro: one INFO call with 5 fields (str, int, float, bool, datetime) to a file",
            "",
            "Caller = wall time of the calling loop per call, for a burst below any queue's "
            "capacity (a writer thread runs at the same time on the other core). "
            "records/s = from the first call until every record is in the file. Peak RSS: "
            "one process logging up to the stated number of records as fast as it can. "
            "Each library runs in its own processes; every output line is parsed and each "
            'record must appear exactly once. asynclog runs with `overflow="block"` here '
            "so that every record is written.",
            "",
            micro_table(results["micro"]),
        ]
    parts += mix_section(results)
    if results.get("e2e"):
        e = results["e2e_profile"]
        parts += [
            "",
            "## End to end: FastAPI under gunicorn + uvicorn-worker",
            "",
            f"1 worker pinned to CPU 0; {results['loadgen']} pinned to CPU 1, "
            f"{e['connections']} keep-alive connections, {e['rounds']} rounds of "
            f"{e['duration']} s after {e['warmup']} s warm-up. The file-sink servers run "
            "side by side and are loaded in turn, round by round, each round starting one "
            "server later, so drift on the machine and the place in the round hit every mode "
            "alike; each pipe case runs alone. Each request logs 2 "
            "field-carrying lines plus an access line. Slow pipe: the reader drains 4 KiB "
            f"then sleeps 5 ms (~800 KiB/s). Stalled pipe: the reader stops for "
            f"{e['stall']} s in every round. Lines are counted after a SIGTERM shutdown; "
            "requests still in flight when a round ends are served but not counted, so "
            "lines can exceed 3 per counted request.",
            "",
            e2e_table(results["e2e"]),
        ]
    parts += sidecar_section(results)
    parts += ["", "## Targets", "", targets_table([Target(**t) for t in results["targets"]])]
    parts += ["", "## Commands", "", "```", *results["commands"], "```", ""]
    return "\n".join(parts)


# -- the sidecar ---------------------------------------------------------------------------------


def sidecar_section(results: dict[str, Any]) -> list[str]:
    """What one Fluent Bit sidecar carries, next to what one asynclog worker writes."""
    found = results.get("sidecar")
    if not found:
        return []
    parts = ["", "## Sidecar: Fluent Bit on the shipped fluent-bit.yaml", ""]
    if "skipped" in found:
        return [*parts, f"Skipped: {found['skipped']}."]
    worker = sidecar.worker_lines_per_s(results.get("e2e", []))
    repeats = min(len(v["runs"]) for v in found["variants"].values())
    rows = [
        "| config | lines/s | CPU s per 100k lines | lines per CPU-second "
        "| workers at full load per sidecar CPU | delivered lines/s | peak RSS |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, v in found["variants"].items():
        per_cpu = v["lines_per_cpu_s"]
        rows.append(
            f"| {name} | {_n(v['lines_per_s'])} | {v['cpu_s_per_100k']:.3f} | {_n(per_cpu)} "
            f"| {_n(None if worker is None else per_cpu / worker, 1)} "
            f"| {_n(v['delivered_lines_per_s'])} | {_mb(v['peak_rss'])} |"
        )
    worker_text = (
        f"one asynclog worker at full load writes {_n(worker)} lines/s (the e2e row "
        f'"{MODES["asynclog"]}", file sink: its requests/s x {LINES_PER_REQUEST} lines)'
        if worker is not None
        else "the e2e benchmark did not run, so there is no worker figure to compare with"
    )
    return [
        *parts,
        f"Fluent Bit {found['fluent_bit']}, pinned to one CPU, tails {found['lines']:,} lines "
        f"({found['bytes'] / MB:.0f} MB, {found['access_lines']:,} access lines) that asynclog "
        "wrote for the e2e request (two route lines and the access line), appended at once "
        "to the file it watches; its stdout (the log lines) is a pipe, as in a container. *logs*: "
        "`FLB_METRICS_MATCH=disabled`; *logs+metrics*: the default, with the RED metrics; "
        "*otlp* and *loki*: the default metrics, and the logs through the opentelemetry output "
        "to Loki's OTLP endpoint, or through the loki output to its push API, instead of "
        "stdout (a real Loki, on the other CPU). lines/s: until the tail has read every line; "
        "CPU: all of Fluent Bit's threads until the output (and /metrics) has every line "
        "(a network output: accepted by Loki); delivered lines/s: the lines over that time. "
        f"Medians of {repeats} runs each. In this run "
        f"{worker_text}.",
        *(
            f"{name}: skipped, {why}."
            for name, why in (found.get("skipped_variants") or {}).items()
        ),
        "",
        "\n".join(rows),
    ]


# -- plots ---------------------------------------------------------------------------------------


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    """Write the PNG plots; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    micro = [m for m in results.get("micro", []) if "error" not in m]
    if micro:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.55 * len(micro) + 1.8))
        labels = [m["name"] for m in micro]
        colors = ["#2a7" if n.startswith("asynclog") else "#888" for n in labels]
        for ax, key, title in (
            (ax1, "caller_ns", "caller cost, ns per call (lower is better)"),
            (ax2, "records_per_s", "records/s written to a file (higher is better)"),
        ):
            values = [m[key] for m in micro]
            ax.barh(labels, values, color=colors)
            ax.set_xscale("log")
            ax.invert_yaxis()
            ax.set_title(title, fontsize=10)
            for y, v in enumerate(values):
                ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
            ax.set_xlim(min(values) / 2, max(values) * 8)
        ax2.set_yticklabels([])
        fig.suptitle(
            "One INFO call with 5 fields (green: asynclog; median of repeats, "
            f"{results['machine']['cpus']} vCPU, {results['machine']['python']})",
            fontsize=11,
        )
        fig.tight_layout()
        path = out / "micro.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    e2e = [c for c in results.get("e2e", []) if "error" not in c]
    if e2e:
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
        labels = [f"{c['mode']}\n{c['sink']}" for c in e2e]
        xs = range(len(e2e))
        colors = ["#2a7" if c["mode"].startswith("asynclog") else "#888" for c in e2e]
        ax1.bar(xs, [c["requests_per_s"] for c in e2e], color=colors)
        ax1.set_ylabel("requests/s")
        ax1.set_title("throughput (higher is better)", fontsize=10)
        for x, c in zip(xs, e2e, strict=True):
            ax1.text(x, c["requests_per_s"], f"{c['requests_per_s']:,.0f}", ha="center",
                     va="bottom", fontsize=8)  # fmt: skip
        width = 0.27
        for i, (key, shade) in enumerate(
            (("p50_ms", "#9cf"), ("p90_ms", "#48c"), ("p99_ms", "#124"))
        ):
            ax2.bar([x + (i - 1) * width for x in xs], [c[key] for c in e2e], width,
                    label=key.removesuffix("_ms"), color=shade)  # fmt: skip
        ax2.set_yscale("log")
        ax2.set_ylabel("latency, ms (log)")
        ax2.set_title("latency percentiles (lower is better)", fontsize=10)
        ax2.legend(loc="upper left", fontsize=8)
        ax2.set_xticks(list(xs), labels, fontsize=8)
        for i in range(1, len(e2e)):
            if e2e[i]["sink"] != e2e[i - 1]["sink"]:
                for ax in (ax1, ax2):
                    ax.axvline(i - 0.5, linestyle="--", color="#bbb", linewidth=1)
        fig.suptitle(
            "FastAPI + gunicorn/uvicorn-worker, 1 worker (green: asynclog), "
            f"{results['loadgen']} "
            f"-c{results['e2e_profile']['connections']}",
            fontsize=11,
        )
        fig.tight_layout()
        path = out / "e2e.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# -- the record mix ------------------------------------------------------------------------------
#
# Each shape has its own baseline: stdlib sync JSON logging the same fields in the same run.

_MIX_COLORS = {
    "asynclog": "#2a7", "asynclog-stdlib": "#9d9", "stdlib-sync": "#444",
    "structlog-fast": "#777", "picologging": "#aaa", "loguru": "#ccc",
}  # fmt: skip


def _mix_by_shape(mix: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for m in mix:
        found.setdefault(m["shape"], {})
        if "error" not in m:
            found[m["shape"]][m["name"]] = m
    return found


def add_mix_ratios(mix: list[dict[str, Any]], baseline: str) -> None:
    """Annotate each mix row in place with its ratios against its shape's baseline (and
    structlog's records/s on that shape)."""
    by_shape = _mix_by_shape(mix)
    for m in mix:
        peers = by_shape[m["shape"]]
        base, structlog = peers.get(baseline), peers.get(STRUCTLOG)
        if "error" in m:
            continue
        if base:
            _add_timing_ratios(m, base)
        if structlog:
            m["throughput_x_structlog"] = m["records_per_s"] / structlog["records_per_s"]


def mix_targets(mix: list[dict[str, Any]], shapes: set[str]) -> list[Target]:
    """The mix's targets on each shape in *shapes* (today's shape has its own in the list)."""
    out = [
        g.check(Figures(peers), f"mix {shape}: ")
        for shape, peers in _mix_by_shape(mix).items()
        if shape in shapes
        for g in MIX_GOALS
    ]
    intact = [
        m.get("check", {}).get("intact", False)
        for m in mix
        if m["shape"] in shapes and m["name"].startswith(ASYNCLOG)
    ]
    out.append(_all_of("mix: asynclog's lines intact on every shape", intact))
    return out


def mix_table(mix: list[dict[str, Any]]) -> str:
    return table(MIX_COLUMNS, mix)


def mix_targets_table(mix: list[dict[str, Any]], labels: dict[str, str]) -> str:
    """One row per shape: asynclog's ratios on it, each against its target."""
    rows = [
        "| shape | " + " | ".join(f"{g.column} ({g.goal})" for g in MIX_GOALS) + " |",
        "|---|" + "--:|" * len(MIX_GOALS),
    ]
    for shape, peers in _mix_by_shape(mix).items():
        cells = [_met_cell(g.check(Figures(peers))) for g in MIX_GOALS]
        rows.append(f"| {shape}: {labels.get(shape, shape)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def mix_section(results: dict[str, Any]) -> list[str]:
    """The markdown section of the record mix (empty when it did not run)."""
    mix = results.get("mix")
    if not mix:
        return []
    labels = results["mix_shapes"]
    shapes = "; ".join(f"`{name}`: {label}" for name, label in labels.items())
    skipped = "".join(
        f" {name} is not measured: {why}." for name, why in results.get("skipped", {}).items()
    )
    today = ""
    if results.get("micro"):
        today = f" Rows of `{next(iter(labels))}` are the table above's."
    return [
        "",
        "## Micro: the record mix",
        "",
        f"The same INFO call with the fields of each shape ({shapes}), measured as above "
        "(no memory run): each library and pass is one process timing every shape in "
        "turn, the order rotating from pass to pass. Every `x` divides by stdlib sync JSON "
        "logging the same fields in this run (structlog's column: by structlog's fastest "
        "set-up on that shape). Datetimes and UUIDs are written as each library writes them "
        "(orjson: ISO 8601 with `T`; `json.dumps(default=str)`: with a space); each line is "
        f"read back and every field compared with what was logged.{skipped}{today}",
        "",
        mix_table(mix),
        "",
        "asynclog's targets on each shape:",
        "",
        mix_targets_table(mix, labels),
    ]


def plot_mix(results: dict[str, Any], out: Path) -> list[Path]:
    """The record mix's plot: caller cost and records/s per shape and library."""
    rows = [m for m in results.get("mix", []) if "error" not in m]
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(m["shape"] for m in rows))
    names = list(dict.fromkeys(m["name"] for m in rows))
    found = {(m["shape"], m["name"]): m for m in rows}
    height = 0.8 / len(names)
    fig, axes = plt.subplots(1, 2, figsize=(13, 1.8 + 0.22 * len(shapes) * len(names)))
    for ax, key, ratio, title in (
        (axes[0], "caller_ns", "caller_x", "caller cost, ns per call (lower is better)"),
        (axes[1], "records_per_s", "throughput_x", "records/s to a file (higher is better)"),
    ):
        for j, name in enumerate(names):
            ys, values, texts = [], [], []
            for i, shape in enumerate(shapes):
                m = found.get((shape, name))
                if m is not None:
                    ys.append(i + (j - (len(names) - 1) / 2) * height)
                    values.append(m[key])
                    texts.append(f" {m[key]:,.0f} ({_x(m.get(ratio))})")
            ax.barh(ys, values, height, color=_MIX_COLORS.get(name, "#bbb"), label=name)
            for y, v, text in zip(ys, values, texts, strict=True):
                ax.text(v, y, text, va="center", fontsize=7)
        ax.set_xscale("log")
        ax.set_yticks(range(len(shapes)), shapes)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        low, high = ax.get_xlim()
        ax.set_xlim(low, high * 4)
    axes[1].set_yticklabels([])
    axes[1].legend(loc="lower right", fontsize=7)
    fig.suptitle(
        "The record mix: one INFO call per shape, x = vs stdlib sync on that shape "
        "(green: asynclog; median of repeats, "
        f"{results['machine']['cpus']} vCPU, {results['machine']['python']})",
        fontsize=11,
    )
    fig.tight_layout()
    path = out / "mix.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def write(results: dict[str, Any], out: Path) -> list[Path]:
    """Write latest.json, latest.md and the plots into *out*."""
    out.mkdir(parents=True, exist_ok=True)
    paths = plot(results, out) + plot_mix(results, out)
    results["plots"] = [p.name for p in paths]
    (out / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "latest.md").write_text(markdown(results))
    return [out / "latest.md", out / "latest.json", *paths]


def terminal(results: dict[str, Any]) -> str:
    """The tables for the terminal (the markdown reads fine as plain text)."""
    return markdown(results).split("## Commands")[0].rstrip() + "\n"
