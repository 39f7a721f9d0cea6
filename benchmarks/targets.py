"""Ratios and targets: each target is one `Goal` (wording, metric, limit), evaluated by one
function on the main run's figures and on each shape of the record mix.

Every ratio divides by a baseline measured in the same run: stdlib sync JSON for the
micro benchmark (and, in the mix, for each shape), the no-logging server (file sink) end to
end, and a mode's own file-sink figures for its pipe sinks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.e2e import PROXIED

MB = 1 << 20
# Worker RSS growth allowed under a slow or stalled pipe, and for the micro memory run.
RSS_ALLOWANCE = 50 * MB
ASYNCLOG = "asynclog"
STRUCTLOG = "structlog-fast"


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


def evaluate(micro: list[dict[str, Any]], e2e: list[dict[str, Any]]) -> list[Target]:
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


# -- the record mix ------------------------------------------------------------------------------
#
# Each shape has its own baseline: stdlib sync JSON logging the same fields in the same run.


def mix_by_shape(mix: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for m in mix:
        found.setdefault(m["shape"], {})
        if "error" not in m:
            found[m["shape"]][m["name"]] = m
    return found


def add_mix_ratios(mix: list[dict[str, Any]], baseline: str) -> None:
    """Annotate each mix row in place with its ratios against its shape's baseline (and
    structlog's records/s on that shape)."""
    by_shape = mix_by_shape(mix)
    for m in mix:
        peers = by_shape[m["shape"]]
        base, structlog = peers.get(baseline), peers.get(STRUCTLOG)
        if "error" in m:
            continue
        if base:
            _add_timing_ratios(m, base)
        if structlog:
            m["throughput_x_structlog"] = m["records_per_s"] / structlog["records_per_s"]


def evaluate_mix(mix: list[dict[str, Any]], shapes: set[str]) -> list[Target]:
    """The mix's targets on each shape in *shapes* (today's shape has its own in the list)."""
    out = [
        g.check(Figures(peers), f"mix {shape}: ")
        for shape, peers in mix_by_shape(mix).items()
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
