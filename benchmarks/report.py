"""The report files: ``latest.md``, ``latest.json`` and the PNG plots, from a run's results
(its ratios and targets come from ``benchmarks.targets``)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import sidecar
from benchmarks.e2e import LINES_PER_REQUEST, MODES
from benchmarks.targets import MB, MIX_GOALS, Figures, Target, mix_by_shape

PACKAGES = (
    "asynclog", "orjson", "structlog", "loguru", "aiologger", "aiofiles", "fastapi",
    "starlette", "gunicorn", "uvicorn", "uvicorn-worker", "opentelemetry-sdk",
    "opentelemetry-instrumentation-fastapi", "matplotlib",
)  # fmt: skip


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


def table(
    columns: tuple[Column, ...],
    rows: list[dict[str, Any]],
    failed: Callable[[dict[str, Any]], str | None] = lambda _: None,
) -> str:
    """A markdown table: one line per row, one cell per column (`failed` may give a row that
    did not run a line of its own)."""
    lines = [
        "| " + " | ".join(heading for heading, _, _ in columns) + " |",
        "|" + "".join(f"{align}|" for _, align, _ in columns),
    ]
    for r in rows:
        lines.append(failed(r) or "| " + " | ".join(cell(r) for _, _, cell in columns) + " |")
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


def _e2e_label(c: dict[str, Any]) -> str:
    return MODES.get(c["mode"], c["mode"])


def _e2e_failed(c: dict[str, Any]) -> str | None:
    """A case that did not run: its mode, its sink and why, the other cells empty."""
    if "error" not in c:
        return None
    return f"| {_e2e_label(c)} | {c['sink']} | ERROR: {c['error']} |" + " |" * 10


E2E_COLUMNS: tuple[Column, ...] = (
    ("mode", "---", _e2e_label),
    ("sink", "---", lambda c: str(c["sink"])),
    ("req/s", "--:", lambda c: _n(c["requests_per_s"])),
    ("x no logging", "--:", lambda c: _x(c.get("rps_x_none"))),
    ("x own file sink", "--:", lambda c: _x(c.get("rps_x_file"))),
    ("p50 ms", "--:", lambda c: _n(c["p50_ms"], 1)),
    ("p90 ms", "--:", lambda c: _n(c["p90_ms"], 1)),
    ("p99 ms", "--:", lambda c: _n(c["p99_ms"], 1)),
    ("max ms", "--:", lambda c: _n(c["max_ms_worst"], 1)),
    ("worker RSS idle -> peak", "---",
     lambda c: f"{_mb(c['worker_idle_rss'])} -> {_mb(c['worker_peak_rss'])}"),
    ("lines / requests", "---", _lines_cell),
    ("dropped", "--:", lambda c: _n(c["dropped"]) if c["mode"].startswith("asynclog") else "-"),
    _OTHER_CPU,
)  # fmt: skip


def e2e_table(e2e: list[dict[str, Any]]) -> str:
    return table(E2E_COLUMNS, e2e, _e2e_failed)


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

_MIX_COLORS = {
    "asynclog": "#2a7", "asynclog-stdlib": "#9d9", "stdlib-sync": "#444",
    "structlog-fast": "#777", "picologging": "#aaa", "loguru": "#ccc",
}  # fmt: skip


def mix_table(mix: list[dict[str, Any]]) -> str:
    return table(MIX_COLUMNS, mix)


def mix_targets_table(mix: list[dict[str, Any]], labels: dict[str, str]) -> str:
    """One row per shape: asynclog's ratios on it, each against its target."""
    rows = [
        "| shape | " + " | ".join(f"{g.column} ({g.goal})" for g in MIX_GOALS) + " |",
        "|---|" + "--:|" * len(MIX_GOALS),
    ]
    for shape, peers in mix_by_shape(mix).items():
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
        "set-up on that shape). Datetimes, UUIDs and enum members are written as each library "
        "writes them (orjson: ISO 8601 with `T`, an enum member's value; "
        "`json.dumps(default=str)`: with a space, the member's name); each line is "
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
