"""What one Fluent Bit sidecar carries: lines/s and CPU per 100k lines with the shipped config.

The sidecar tails the file every worker appends to. Here it runs the bundled
``fluent-bit.yaml`` unchanged, as the Kubernetes sidecar does, pinned to one CPU, with its
stdout output (the default, the app's log lines) writing to a pipe, as in a container, in two
forms, and with each network output instead of stdout, delivering to a real receiver:

- ``logs``: ``FLB_METRICS_MATCH=disabled``, log shipping only;
- ``logs+metrics``: the default, which also derives the RED metrics from the access lines;
- ``otlp``: the default metrics, logs as OTLP LogRecords (the opentelemetry output and its
  processors) to Loki's OTLP endpoint;
- ``loki``: the default metrics, logs to Loki's push API (labels, structured metadata).

The receiver is a real Grafana Loki (``tests/_loki.py``: LOKI, or ``../shared/tools/loki``),
one fresh instance per run, on the harness's CPU, not the sidecar's; without it those two
variants are skipped and the report says why.

The input is what one asynclog worker writes for the end-to-end benchmark's request: two
field-carrying lines from the route and the access line, written by asynclog itself. Fluent
Bit starts on an empty ``app.log``; the whole file is then appended at once, and the sidecar's
CPU time (all its threads) is read when its output has handled every line (stdout: printed;
a network output: its ``proc_records``, the records the receiver accepted) and, with metrics,
when /metrics counts every access line. lines/s is the ingest rate: the lines over
the time until the tail input's read offset reaches the end of the file (parsing and filters
run as it reads); CPU per 100k lines includes the output.

Set ``FLUENT_BIT=/path/to/fluent-bit`` (or put it on PATH); without it the step is skipped
and the report says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil  # type: ignore[import-untyped]  # no stubs in the bench extra

from benchmarks import e2e, loadgen

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "fluent-bit.yaml"
_NETWORK = {"FLB_STDOUT_MATCH": "disabled"}
VARIANTS = {
    "logs": {"FLB_METRICS_MATCH": "disabled"},
    "logs+metrics": {},
    "otlp": _NETWORK | {"FLB_OTEL_MATCH": "asynclog.*", "FLB_OTEL_LOGS_URI": "/otlp/v1/logs"},
    "loki": _NETWORK | {"FLB_LOKI_MATCH": "asynclog.*"},
}
# The variants that deliver to the receiver, with their output's alias in the config, and the
# host and port variables pointed at the receiver.
NETWORK_OUTPUTS = {
    "otlp": ("out_otel", "FLB_OTEL_HOST", "FLB_OTEL_PORT"),
    "loki": ("out_loki", "FLB_LOKI_HOST", "FLB_LOKI_PORT"),
}
HISTOGRAM_COUNT = "http_server_request_duration_seconds_count"
# How long one run may take, beyond what its lines need at a very slow 20k lines/s.
SLACK_SECONDS = 60.0


@dataclass(frozen=True)
class SidecarProfile:
    requests: int  # worker requests in the input file: three lines each
    repeats: int  # runs per variant, alternating between the variants


PROFILES = {
    "quick": SidecarProfile(requests=10_000, repeats=1),
    "default": SidecarProfile(requests=150_000, repeats=3),
    "full": SidecarProfile(requests=400_000, repeats=5),
}


def binary() -> str | None:
    """The Fluent Bit to measure: FLUENT_BIT, or `fluent-bit` on PATH."""
    found = os.environ.get("FLUENT_BIT") or shutil.which("fluent-bit")
    return found if found and os.access(found, os.X_OK) else None


def version(fluent_bit: str) -> str:
    out = subprocess.run(
        [fluent_bit, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    first = out.stdout.strip().splitlines()
    return first[0].removeprefix("Fluent Bit ") if first else "?"


# The input: what asynclog writes for the end-to-end benchmark's requests.
_WRITER = """
import sys
import asynclog

path, requests = sys.argv[1], int(sys.argv[2])
asynclog.configure(sink=path, format="json", overflow="block", queue_size=100_000)
log = asynclog.get_logger("example")
access = asynclog.get_logger("asynclog.access")
for n in range(requests):
    status = 404 if n % 50 == 49 else 200
    micros = 900 + (n * 7919) % 40_000
    with asynclog.bound(request_id=f"{n:032x}"):
        log.info("item fetched", item_id=42, source="catalog")
        log.info("price computed", item_id=42, price=51.99, currency="EUR")
        access.log(
            30 if status >= 400 else 20, "%s %s %s", "GET", "/items/42", status,
            **{
                "http.request.method": "GET",
                "url.path": "/items/42",
                "http.route": "/items/{item_id}",
                "http.response.status_code": status,
                "duration_ms": micros / 1000,
                "duration_s": micros / 1_000_000,
                "client.address": "127.0.0.1",
                "user_agent.original": "wrk",
            },
        )
assert asynclog.shutdown(timeout=60)
"""


def write_input(path: Path, requests: int) -> int:
    """Write the input file with asynclog; returns its line count."""
    subprocess.run(
        [sys.executable, "-c", _WRITER, str(path), str(requests)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        timeout=600,
    )
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


# One run.


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _loki() -> tuple[Any, str | None]:
    """tests/_loki.py's `loki_serving` and the Loki binary (None if absent): one way to run the
    receiver, shared with the delivery tests."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import _loki  # type: ignore[import-not-found]  # tests/ is not a package

    return _loki.loki_serving, _loki.LOKI


def _proc_records(http_port: int, alias: str) -> int:
    """How many records the output `alias` has delivered (Fluent Bit's own counter)."""
    try:
        metrics = json.loads(_get(f"http://127.0.0.1:{http_port}/api/v1/metrics"))
    except urllib.error.HTTPError as error:
        if error.code == 404:  # served once Fluent Bit has collected its metrics the first time
            return 0
        raise
    return int(metrics["output"][alias]["proc_records"])


def _histogram_count(exposition: str) -> int:
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in exposition.splitlines()
        if line.startswith(HISTOGRAM_COUNT)
    )


class _LineCounter:
    """Counts the lines Fluent Bit's stdout output writes to its pipe, on a thread."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.pipe = pipe
        self.lines = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while chunk := self.pipe.read1(1 << 16):
            self.lines += chunk.count(b"\n")

    def join(self) -> None:
        self._thread.join(30)


@contextlib.contextmanager
def _fluent_bit(
    fluent_bit: str, log_dir: Path, env: dict[str, str]
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, int]]]:
    """Fluent Bit on the shipped config, pinned to the server CPU, its stdout a pipe (as in a
    container); yields the process and its ports."""
    ports = {"http": _free_port(), "otlp": _free_port(), "metrics": _free_port()}
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLB_")}
    environ |= env | {
        "FLB_LOG_DIR": str(log_dir),
        "FLB_HTTP_PORT": str(ports["http"]),
        "FLB_OTLP_PORT": str(ports["otlp"]),
        "FLB_METRICS_PORT": str(ports["metrics"]),
    }
    log = log_dir.parent / "fluent-bit.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            loadgen.pinned([fluent_bit, "-c", str(CONFIG)], e2e.SERVER_CPU),
            stdout=subprocess.PIPE,
            stderr=err,
            env=environ,
        )
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError("fluent-bit exited: " + " | ".join(tail))
            try:
                _get(f"http://127.0.0.1:{ports['http']}/api/v1/health")
            except OSError:  # not listening yet, or not healthy yet
                return False
            return True

        _wait(healthy, 30, "Fluent Bit's health check")
        yield proc, ports
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _read_offset(pid: int, path: Path) -> Callable[[], int]:
    """How far the tail input has read `path`: the offset of Fluent Bit's descriptor for it."""
    found = [
        fd
        for fd in os.listdir(f"/proc/{pid}/fd")
        if os.path.realpath(f"/proc/{pid}/fd/{fd}") == str(path)
    ]
    if not found:
        raise RuntimeError(f"Fluent Bit (pid {pid}) has no descriptor for {path}")
    info = Path(f"/proc/{pid}/fdinfo/{found[0]}")

    def offset() -> int:
        for line in info.read_text().splitlines():
            if line.startswith("pos:"):
                return int(line.split()[1])
        raise RuntimeError(f"no pos in {info}")

    return offset


def run_once(
    fluent_bit: str, source: Path, lines: int, access_lines: int, variant: str, workdir: Path
) -> dict[str, Any]:
    """Append `source` to the file a fresh sidecar tails; measure until all of it is handled."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    if variant not in NETWORK_OUTPUTS:
        return _run_once(fluent_bit, source, lines, access_lines, variant, workdir, {})
    loki_serving, _ = _loki()
    _, host, port = NETWORK_OUTPUTS[variant]
    with loki_serving(workdir / "loki") as loki:
        receiver = {host: "127.0.0.1", port: str(loki.port)}
        return _run_once(fluent_bit, source, lines, access_lines, variant, workdir, receiver)


def _run_once(
    fluent_bit: str,
    source: Path,
    lines: int,
    access_lines: int,
    variant: str,
    workdir: Path,
    receiver: dict[str, str],
) -> dict[str, Any]:
    log_dir = workdir / "logs"
    log_dir.mkdir(parents=True)
    target = log_dir / "app.log"
    target.touch()
    size = source.stat().st_size
    output = NETWORK_OUTPUTS[variant][0] if variant in NETWORK_OUTPUTS else None
    with _fluent_bit(fluent_bit, log_dir, VARIANTS[variant] | receiver) as (proc, ports):
        assert proc.stdout is not None
        printed = _LineCounter(proc.stdout)
        # taskset execs Fluent Bit in place, so the PID is Fluent Bit's own.
        process = psutil.Process(proc.pid)
        offset = _read_offset(proc.pid, target)
        peak_rss = process.memory_info().rss
        cpu_before, start = _cpu_seconds(process), time.monotonic()
        with source.open("rb") as src, target.open("ab") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        read_at = None

        def done() -> bool:
            nonlocal read_at, peak_rss
            peak_rss = max(peak_rss, process.memory_info().rss)
            if read_at is None and offset() >= size:
                read_at = time.monotonic()
            if read_at is None:
                return False
            if output is None and printed.lines < lines:
                return False
            if output is not None and _proc_records(ports["http"], output) < lines:
                return False
            if variant == "logs":
                return True
            exposition = _get(f"http://127.0.0.1:{ports['metrics']}/metrics").decode()
            return _histogram_count(exposition) >= access_lines

        _wait(done, SLACK_SECONDS + lines / 20_000, "the sidecar to handle every line")
        cpu = _cpu_seconds(process) - cpu_before
        handled = time.monotonic() - start
    printed.join()
    assert read_at is not None
    if printed.lines != (0 if output else lines):
        raise RuntimeError(f"the sidecar printed {printed.lines:,} lines of {lines:,}")
    return {
        "variant": variant,
        "lines": lines,
        "lines_per_s": lines / (read_at - start),
        "cpu_s": cpu,
        "cpu_s_per_100k": cpu / lines * 100_000,
        "lines_per_cpu_s": lines / cpu,
        "handled_s": handled,
        "delivered_lines_per_s": lines / handled,
        "peak_rss": peak_rss,
    }


def run(profile_name: str, workdir: Path, note: Callable[[str], None]) -> dict[str, Any]:
    """Both variants, alternating, `repeats` times; medians per variant."""
    fluent_bit = binary()
    if fluent_bit is None:
        return {"skipped": "no Fluent Bit: set FLUENT_BIT=/path/to/fluent-bit or put it on PATH"}
    profile = PROFILES[profile_name]
    source = workdir / "sidecar-input.log"
    note(f"writing {3 * profile.requests:,} lines with asynclog")
    lines = write_input(source, profile.requests)
    access_lines = sum(1 for line in source.open("rb") if b'"asynclog.access"' in line)
    _, loki = _loki()
    variants_run = [v for v in VARIANTS if loki is not None or v not in NETWORK_OUTPUTS]
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants_run}
    with e2e.load_cpu_only():
        for repeat in range(profile.repeats):
            for variant in variants_run:
                note(f"{variant} {repeat + 1}/{profile.repeats}")
                runs[variant].append(
                    run_once(
                        fluent_bit, source, lines, access_lines, variant, workdir / "sidecar-run"
                    )
                )
    shutil.rmtree(workdir / "sidecar-run", ignore_errors=True)
    size = source.stat().st_size
    source.unlink()
    variants = {}
    for variant, found in runs.items():
        variants[variant] = {
            key: statistics.median(r[key] for r in found)
            for key in (
                "lines_per_s",
                "delivered_lines_per_s",
                "cpu_s_per_100k",
                "lines_per_cpu_s",
                "peak_rss",
            )
        } | {"runs": found}
    return {
        "fluent_bit": version(fluent_bit),
        "config": CONFIG.name,
        "lines": lines,
        "access_lines": access_lines,
        "bytes": size,
        "variants": variants,
        **({} if loki is not None else {"skipped_variants": {
            name: "no Loki: set LOKI to a loki binary, or provide ../shared/tools/loki/loki.xz"
            for name in NETWORK_OUTPUTS
        }}),
    }  # fmt: skip


def workers_per_cpu(sidecar: dict[str, Any], e2e_cases: list[dict[str, Any]]) -> float | None:
    """How many asynclog workers at full load one sidecar CPU keeps up with, with metrics:
    the sidecar's lines per CPU-second over one worker's lines/s in this run's e2e."""
    worker = worker_lines_per_s(e2e_cases)
    variants = sidecar.get("variants", {})
    if worker is None or "logs+metrics" not in variants:
        return None
    return float(variants["logs+metrics"]["lines_per_cpu_s"]) / worker


def worker_lines_per_s(e2e_cases: list[dict[str, Any]]) -> float | None:
    """One asynclog worker at full load (e2e, tracing off, file sink): lines it writes per s."""
    for case in e2e_cases:
        if case["mode"] == "asynclog" and case["sink"] == "file" and "error" not in case:
            return float(case["requests_per_s"]) * e2e.LINES_PER_REQUEST
    return None
