"""End to end with a real Fluent Bit: the bundled config ships what the app wrote, and turns
its access lines into the metrics Prometheus scrapes.

Runs when FLUENT_BIT names a fluent-bit binary (4.2.5 or newer; CI runs 5.1.1) or one is on
PATH; skipped otherwise. `--dry-run` checks only syntax, so Fluent Bit is started for real here
and its own log is checked for errors and unknown properties.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from _fluentbit import (
    FLUENT_BIT,
    METADATA,
    assert_no_errors_or_warnings,
    fluent_bit,
    free_port,
    gunicorn_serving,
    http_get,
    needs_fluent_bit,
    stop_process,
    wait_for,
)
from _prometheus import Labels, samples

from conftest import ROOT, read_lines, run_python

pytestmark = [
    pytest.mark.integration,
    needs_fluent_bit,
]
# What the pipeline adds to each record: the parsed time (stdout output), the source file
# (tail Path_Key) and the deployment metadata (modify filter).
ADDED = {"timestamp", "log.file.path", *METADATA}
HISTOGRAM = "http_server_request_duration_seconds"


def _requests(url: str, batch: str, count: int) -> None:
    for n in range(count):
        path = "/fail" if n % 10 == 9 else f"/items/{n}"
        http_get(f"{url}{path}", {"x-request-id": f"{batch}-{n}"})
    http_get(f"{url}/marker/{batch}-{urllib.parse.quote('ünïcødé')}")


def _canonical(record: dict[str, Any]) -> str:
    """A record as comparable text: floats to 12 significant digits, as msgpack may round."""

    def normal(value: Any) -> Any:
        if isinstance(value, float):
            return float(f"{value:.12g}")
        if isinstance(value, dict):
            return {k: normal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [normal(v) for v in value]
        return value

    return json.dumps(normal(record), sort_keys=True, ensure_ascii=False)


def _instant(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def _send_span(port: int, name: str) -> None:
    result = run_python(
        f"""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = TracerProvider()
        exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:{port}/v1/traces", timeout=30)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("sidecar-e2e").start_as_current_span({name!r}):
            pass
        provider.shutdown()
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Failed to export" not in result.stderr, result.stderr


def _write_long_lines(sink: Path) -> None:
    """Lines from asynclog itself over its max_line_bytes, written shortened: a 150 KB
    exception and a 2 MB field (tests/test_sidecar_long_lines.py follows one into Loki)."""
    result = run_python(
        f"""
        import logging, asynclog
        asynclog.configure(sink={str(sink)!r}, format="json")
        log = logging.getLogger("e2e.long")
        try:
            raise ValueError("x" * 150_000)
        except ValueError:
            log.exception("long exception line")
        log.warning("long field line", extra={{"blob": "y" * 2_000_000}})
        log.warning("after the long line")
        assert asynclog.shutdown(timeout=10)
        """
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("config", ["fluent-bit.conf", "fluent-bit.yaml"])
def test_fluent_bit_ships_every_record_across_rotation(tmp_path: Path, config: str) -> None:
    version = subprocess.run(
        [str(FLUENT_BIT), "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    found = re.search(r"v(\d+)\.(\d+)\.(\d+)", version)
    assert found and tuple(map(int, found.groups())) >= (4, 2, 5), f"needs 4.2.5+: {version}"
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    sink, rotated = log_dir / "app.log", log_dir / "app.log.1"
    with gunicorn_serving(ROOT, sink, workers=2) as app:
        # Written before the sidecar starts: Read_from_Head ships these too.
        _requests(app.url, "before", 20)
        # `*`: the OTLP span too (and, once a second, the metrics as text).
        with fluent_bit(ROOT / config, log_dir, {"FLB_STDOUT_MATCH": "*"}) as flb:
            _requests(app.url, "running", 30)
            # Rename-style rotation: asynclog notices within a second and reopens app.log;
            # Fluent Bit keeps reading the renamed file for Rotate_Wait.
            os.rename(sink, rotated)
            _requests(app.url, "rotating", 10)
            wait_for(sink.exists, 30, "asynclog to reopen app.log")
            _requests(app.url, "after", 20)
            assert app.stop() == 0
            _write_long_lines(sink)
            _send_span(flb.otlp_port, "sidecar-e2e-span")

            old, new = read_lines(rotated), read_lines(sink)
            assert old and new, "both files hold lines"
            shipped = old + new
            expected = Counter(_canonical(line) for line in shipped)
            # Every access line is one observation too, under its route, method and status.
            counted = Counter(
                (line["http.route"] or "", line["http.request.method"], str(
                    line["http.response.status_code"]
                ))
                for line in shipped
                if line["logger"] == "asynclog.access"
            )  # fmt: skip
            wait_for(
                lambda: (
                    len(flb.records()) >= len(shipped)
                    and "sidecar-e2e-span" in flb.stdout.read_text(errors="replace")
                    and _counts(flb.metrics()) == counted
                ),
                60,
                "Fluent Bit to print every record and the span, and count every request",
            )
            assert stop_process(flb.process, timeout=30) == 0

    records = flb.records()
    for record in records:
        # The parsed time is asynclog's `time`. Fluent Bit reads %L through a double and
        # truncates to whole nanoseconds (flb_parser_json.c), so .008190 can come out .008189.
        lag = _instant(record["time"]) - _instant(record["timestamp"])
        assert timedelta(0) <= lag <= timedelta(microseconds=1), record
        assert {k: record[k] for k in METADATA} == METADATA
        assert record["log.file.path"] in (str(sink), str(rotated))
    received = Counter(_canonical({k: v for k, v in r.items() if k not in ADDED}) for r in records)
    assert received == expected, "every line exactly once, with all its fields"
    for message in ("long exception line", "long field line", "after the long line"):
        assert any(r["message"] == message for r in records), message

    assert_no_errors_or_warnings(flb.log)


def _counts(exposition: str) -> Counter[tuple[str, str, str]]:
    """The histogram's _count per (route, method, status)."""
    found: Counter[tuple[str, str, str]] = Counter()
    for (name, labels), value in samples(exposition).items():
        if name == f"{HISTOGRAM}_count":
            by = dict(labels)
            key = (by["http_route"], by["http_request_method"], by["http_response_status_code"])
            found[key] = int(value)
    return found


def _access_line(route: str | None, method: str, status: int, seconds: float) -> dict[str, Any]:
    """An access line as asynclog writes it (the sidecar reads nothing else)."""
    line: dict[str, Any] = {
        "time": "2026-12-03T07:00:00.123456Z",
        "level": "info" if status < 400 else "warning" if status < 500 else "error",
        "logger": "asynclog.access",
        "message": f"{method} /x {status}",
        "http.request.method": method,
        "url.path": "/x",
        "http.route": route,
        "http.response.status_code": status,
        "duration_ms": round(seconds * 1000, 3),
        "duration_s": seconds,
        "client.address": "127.0.0.1",
        "user_agent.original": "probe",
        "request_id": "r1",
    }
    if method == "_OTHER":
        line["http.request.method_original"] = "PURGE"
    return line


# (route, method, status, duration_s) of each access line: bucket bounds are inclusive.
ACCESS_LINES = [
    ("/items/{item_id}", "GET", 200, 0.005),
    ("/items/{item_id}", "GET", 200, 0.0050001),
    ("/items/{item_id}", "GET", 200, 0.2),
    ("/items/{item_id}", "GET", 200, 10.0),
    ("/items/{item_id}", "GET", 200, 12.5),
    ("/items/{item_id}", "_OTHER", 405, 0.001),
    ("/orders", "POST", 404, 0.003),
    (None, "GET", 404, 0.0015),
    (None, "GET", 404, 0.09),
    ("/fail", "GET", 500, 0.075),
]
DROP_NOTICES = [17, 3]


def _expected_samples() -> dict[tuple[str, Labels], float]:
    """The exposition the access lines and drop notices above must give, computed here."""
    buckets = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
    expected: dict[tuple[str, Labels], float] = {}

    def histogram(
        name: str, labels: dict[str, str], values: list[float], bounds: list[float]
    ) -> None:
        base = frozenset(labels.items())
        for bound in bounds:
            le = frozenset({*base, ("le", str(float(bound)))})
            expected[f"{name}_bucket", le] = sum(v <= bound for v in values)
        expected[f"{name}_bucket", frozenset({*base, ("le", "+Inf")})] = len(values)
        expected[f"{name}_sum", base] = sum(values)
        expected[f"{name}_count", base] = len(values)

    series: dict[tuple[str, str, str], list[float]] = {}
    for route, method, status, seconds in ACCESS_LINES:
        series.setdefault((route or "", method, str(status)), []).append(seconds)
    for (route, method, status), values in series.items():
        labels = {
            "http_route": route,
            "http_request_method": method,
            "http_response_status_code": status,
        }
        histogram(HISTOGRAM, labels, values, buckets)
    drops = [float(n) for n in DROP_NOTICES]
    histogram("asynclog_dropped_records", {}, drops, [1, 10, 100, 1000, 10000])
    return expected


@pytest.mark.parametrize("config", ["fluent-bit.conf", "fluent-bit.yaml"])
def test_access_lines_become_a_semconv_histogram(tmp_path: Path, config: str) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    lines = [_access_line(*line) for line in ACCESS_LINES]
    # Not counted: asynclog's error line (it has a route too), another logger, a lookalike,
    # asynclog's own line about something else.
    lines.insert(2, {**lines[0], "logger": "asynclog.error", "message": "unhandled exception"})
    lines.insert(4, {**lines[0], "logger": "asynclog.accessx"})
    lines.insert(6, {"time": lines[0]["time"], "level": "info", "logger": "shop", "message": "x"})
    lines.insert(7, {
        "time": lines[0]["time"], "level": "warning", "logger": "asynclog",
        "message": "another library changed: an internal asynclog relies on is gone",
    })  # fmt: skip
    for n, dropped in enumerate(DROP_NOTICES):
        lines.insert(3 * n + 1, {
            "time": lines[0]["time"], "level": "warning", "logger": "asynclog",
            "message": "records dropped: queue full", "pid": 7, "dropped": dropped,
            "dropped_total": sum(DROP_NOTICES[: n + 1]),
        })  # fmt: skip
    (log_dir / "app.log").write_text("".join(json.dumps(line) + "\n" for line in lines))
    # The defaults, but a log level from Fluent Bit's own variable, which a log_level key in
    # the file used to turn into a refusal to start.
    with fluent_bit(ROOT / config, log_dir, {"FLB_LOG_LEVEL": "debug"}) as flb:
        expected = _expected_samples()

        def exposed() -> bool:
            found = samples(flb.metrics())
            return found.keys() == expected.keys() and all(
                found[key] == pytest.approx(value, rel=1e-12) for key, value in expected.items()
            )

        wait_for(exposed, 30, "the exposition to hold every access line and drop notice")
        assert len(flb.records()) == len(lines)
        assert stop_process(flb.process, timeout=30) == 0
    assert "[debug]" in flb.log.read_text(errors="replace")
    # Shipped as written: the copies the labels were read from are gone again, and stdout
    # (by default) prints the log lines only, never the metrics.
    received = [_canonical({k: v for k, v in r.items() if k not in ADDED}) for r in flb.records()]
    assert received == [_canonical(line) for line in lines]
    stdout = flb.stdout.read_text(errors="replace").splitlines()
    assert all(line.startswith("{") for line in stdout), stdout
    assert_no_errors_or_warnings(flb.log)


@pytest.mark.parametrize("config", ["fluent-bit.conf", "fluent-bit.yaml"])
def test_metrics_can_be_switched_off(tmp_path: Path, config: str) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    line = _access_line("/items/{item_id}", "GET", 200, 0.01)
    (log_dir / "app.log").write_text(json.dumps(line) + "\n")
    with fluent_bit(ROOT / config, log_dir, {"FLB_METRICS_MATCH": "disabled"}) as flb:
        wait_for(lambda: len(flb.records()) == 1, 30, "the line to be shipped")
        time.sleep(2)  # two metrics intervals
        assert flb.metrics() == ""
        assert stop_process(flb.process, timeout=30) == 0
    assert [{k: v for k, v in r.items() if k not in ADDED} for r in flb.records()] == [line]
    assert_no_errors_or_warnings(flb.log)


class _Backend(BaseHTTPRequestHandler):
    """Elasticsearch's /_bulk, recording bodies: no Elasticsearch or OpenSearch can run here.
    Loki and OTLP are checked against real receivers (test_sidecar_receivers.py)."""

    received: ClassVar[list[tuple[str, bytes]]] = []
    headers_seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append((self.path, body))
        self.headers_seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        reply, kind = b'{"took":1,"errors":false,"items":[]}', "application/json"
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _backends() -> Iterator[tuple[int, list[tuple[str, bytes]]]]:
    """An HTTP backend on 127.0.0.1, for one test."""
    _Backend.received = []
    _Backend.headers_seen = []
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield http.server_address[1], _Backend.received
    finally:
        http.shutdown()
        http.server_close()
        thread.join(5)


@pytest.mark.parametrize("config", ["fluent-bit.conf", "fluent-bit.yaml"])
def test_outputs_selected_by_environment_deliver(tmp_path: Path, config: str) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    marker = "output-marker-7f3a"
    forward_port = free_port()
    # The forward output waits for in_forward's ack: the real aggregator receives, printing
    # what arrives on its stdout.
    with (
        _backends() as (http_port, received),
        fluent_bit(
            ROOT / "sidecar" / "fluent-bit-aggregator.yaml",
            tmp_path / "aggregator",
            {
                "FLB_STDOUT_MATCH": "*",
                "FLB_FORWARD_PORT": str(forward_port),
                "FLB_STORAGE_DIR": str(tmp_path / "aggregator"),
            },
            name="aggregator",
        ) as aggregator,
    ):
        outputs = {
            "FLB_STDOUT_MATCH": "disabled",
            "FLB_FORWARD_MATCH": "*",
            "FLB_FORWARD_HOST": "127.0.0.1",
            "FLB_FORWARD_PORT": str(forward_port),
            "FLB_ES_MATCH": "asynclog.*",
            "FLB_ES_HOST": "127.0.0.1",
            "FLB_ES_PORT": str(http_port),
            "FLB_ES_USER": "elastic",
            "FLB_ES_PASSWORD": "s3cret",
        }
        # Written first, so the tail finds the file at startup rather than a refresh later.
        result = run_python(
            f"""
            import logging, asynclog
            asynclog.configure(sink={str(log_dir / "app.log")!r}, format="json")
            logging.getLogger("e2e.outputs").warning({marker!r})
            assert asynclog.shutdown(timeout=10)
            """
        )
        assert result.returncode == 0, result.stderr
        with fluent_bit(ROOT / config, log_dir, outputs) as flb:
            _send_span(flb.otlp_port, "output-span-7f3a")

            def bodies(prefix: str) -> bytes:
                return b"".join(body for path, body in list(received) if path.startswith(prefix))

            def delivered() -> bool:
                return (
                    marker.encode() in bodies("/_bulk")
                    and marker in aggregator.stdout.read_text(errors="replace")
                    and "output-span-7f3a" in aggregator.stdout.read_text(errors="replace")
                )

            wait_for(delivered, 60, "every output to deliver")
            assert stop_process(flb.process, timeout=30) == 0
    assert flb.records() == [], "stdout was switched off"
    bulk = [json.loads(line) for line in bodies("/_bulk").splitlines()]
    (document,) = [d for d in bulk if d.get("message") == marker]
    assert document["service.name"] == METADATA["service.name"]
    assert "@timestamp" in document
    # Credentials only where set: an unset user sends no Authorization header at all.
    basic = "Basic " + base64.b64encode(b"elastic:s3cret").decode()
    for path, headers in _Backend.headers_seen:
        assert headers["authorization"] == basic, path
    assert_no_errors_or_warnings(flb.log)


@pytest.mark.parametrize("config", ["fluent-bit.conf", "fluent-bit.yaml"])
def test_every_output_switched_on_passes_fluent_bits_dry_run(config: str) -> None:
    """Elasticsearch and OpenSearch cannot run here: their output is checked by configuration
    only, with every network output on (Fluent Bit checks each plugin's properties)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLB_")}
    env.update(
        {f"FLB_{name}_MATCH": "asynclog.*" for name in ("ES", "LOKI", "OTEL", "FORWARD")},
        FLB_ES_TLS="on",
        FLB_ES_USER="elastic",
        FLB_ES_PASSWORD="s3cret",
    )
    result = subprocess.run(
        [str(FLUENT_BIT), "-c", str(ROOT / config), "--dry-run"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration test is successful" in result.stdout + result.stderr
