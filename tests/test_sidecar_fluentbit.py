"""End to end with a real Fluent Bit: the bundled config ships what the app wrote.

Runs when FLUENT_BIT names a fluent-bit binary (4.2.5 or newer) or one is on PATH; skipped
otherwise. `--dry-run` checks only syntax, so Fluent Bit is started for real here and its own
log is checked for errors and unknown properties.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from _fluentbit import free_port, gunicorn_serving, http_get, stop_process, wait_for

from conftest import ROOT, read_lines, run_python

FLUENT_BIT = os.environ.get("FLUENT_BIT") or shutil.which("fluent-bit")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not FLUENT_BIT, reason="no Fluent Bit: set FLUENT_BIT=/path/to/fluent-bit or put it on PATH"
    ),
]

METADATA = {
    "service.name": "svc-e2e",
    "k8s.pod.name": "pod-e2e",
    "k8s.namespace.name": "ns-e2e",
    "k8s.node.name": "node-e2e",
}
# What the pipeline adds to each record: the parsed time (stdout output), the source file
# (tail Path_Key) and the deployment metadata (modify filter).
ADDED = {"timestamp", "log.file.path", *METADATA}
# Expected in Fluent Bit's log: the shutdown notice, and the skipped over-long line.
EXPECTED_WARNINGS = ("service will shutdown in max", "Skipping long lines")


@dataclass
class FluentBit:
    process: subprocess.Popen[bytes]
    stdout: Path
    log: Path
    otlp_port: int

    def records(self) -> list[dict[str, Any]]:
        """The JSON lines the stdout output printed (trace dumps are not JSON lines)."""
        text = self.stdout.read_text(encoding="utf-8", errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@contextmanager
def fluent_bit(
    config: Path, log_dir: Path, outputs: dict[str, str] | None = None
) -> Iterator[FluentBit]:
    """Fluent Bit on `config`, tailing `log_dir`, listening on free ports of 127.0.0.1."""
    http_port, otlp_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLB_")}
    env.update(outputs or {})
    env.update(
        FLB_LOG_DIR=str(log_dir),
        FLB_HTTP_PORT=str(http_port),
        FLB_OTLP_PORT=str(otlp_port),
        OTEL_SERVICE_NAME=METADATA["service.name"],
        POD_NAME=METADATA["k8s.pod.name"],
        POD_NAMESPACE=METADATA["k8s.namespace.name"],
        NODE_NAME=METADATA["k8s.node.name"],
    )
    stdout, log = log_dir.parent / "fluent-bit.out", log_dir.parent / "fluent-bit.log"
    assert FLUENT_BIT is not None
    with stdout.open("wb") as out, log.open("wb") as err:
        process = subprocess.Popen([FLUENT_BIT, "-c", str(config)], stdout=out, stderr=err, env=env)
    running = FluentBit(process, stdout, log, otlp_port)
    health = f"http://127.0.0.1:{http_port}/api/v1/health"

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"fluent-bit exited: {log.read_text(errors='replace')}")
        try:
            return http_get(health, timeout=2) == 200
        except OSError:  # not listening yet
            return False

    try:
        wait_for(healthy, 30, "Fluent Bit's health check")
        yield running
    finally:
        if process.poll() is None:
            stop_process(process, timeout=30)


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
        exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:{port}/v1/traces", timeout=10)
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
    """Lines from asynclog itself: a 150 KB exception line (shipped) and a 2 MB one (skipped)."""
    result = run_python(
        f"""
        import logging, asynclog
        asynclog.configure(sink={str(sink)!r}, format="json")
        log = logging.getLogger("e2e.long")
        try:
            raise ValueError("x" * 150_000)
        except ValueError:
            log.exception("long exception line")
        log.warning("too long to ship", extra={{"blob": "y" * 2_000_000}})
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
        with fluent_bit(ROOT / config, log_dir) as flb:
            _requests(app.url, "running", 30)
            # Rename-style rotation: asynclog notices within a second and reopens app.log;
            # Fluent Bit keeps reading the renamed file for Rotate_Wait.
            os.rename(sink, rotated)
            _requests(app.url, "rotating", 10)
            wait_for(sink.exists, 10, "asynclog to reopen app.log")
            _requests(app.url, "after", 20)
            assert app.stop() == 0
            _write_long_lines(sink)
            _send_span(flb.otlp_port, "sidecar-e2e-span")

            old, new = read_lines(rotated), read_lines(sink)
            assert old and new, "both files hold lines"
            shipped = [line for line in old + new if len(json.dumps(line)) < 1_000_000]
            assert len(shipped) == len(old) + len(new) - 1
            expected = Counter(_canonical(line) for line in shipped)
            wait_for(
                lambda: (
                    len(flb.records()) >= len(shipped)
                    and "sidecar-e2e-span" in flb.stdout.read_text(errors="replace")
                ),
                60,
                "Fluent Bit to print every record and the span",
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
    assert any(r["message"] == "long exception line" for r in records)
    assert any(r["message"] == "after the long line" for r in records)

    _assert_no_errors_or_warnings(flb.log)


def _assert_no_errors_or_warnings(log: Path) -> None:
    """Fluent Bit's own log has no error or warning beyond the expected ones."""
    problems = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if re.search(r"\[\s*(error|warn)\]|unknown configuration property", line)
        and not any(ok in line for ok in EXPECTED_WARNINGS)
    ]
    assert not problems, "\n".join(problems)


class _Backend(BaseHTTPRequestHandler):
    """Elasticsearch's /_bulk, Loki's push API and an OTLP/HTTP collector, recording bodies."""

    received: ClassVar[list[tuple[str, bytes]]] = []
    headers_seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append((self.path, body))
        self.headers_seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path.startswith("/_bulk"):
            reply, kind = b'{"took":1,"errors":false,"items":[]}', "application/json"
        else:
            reply, kind = b"", "application/x-protobuf"
        self.send_response(204 if self.path.startswith("/loki/") else 200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _backends() -> Iterator[tuple[int, int, list[tuple[str, bytes]], bytearray]]:
    """An HTTP backend and a raw TCP forward receiver on 127.0.0.1, for one test."""
    _Backend.received = []
    _Backend.headers_seen = []
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    forward = socket.create_server(("127.0.0.1", 0))
    forward.settimeout(0.2)
    forwarded = bytearray()
    stop = threading.Event()

    def drain(connection: socket.socket) -> None:
        with connection:
            connection.settimeout(0.2)
            while not stop.is_set():
                try:
                    chunk = connection.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    return
                forwarded.extend(chunk)

    def receive() -> None:
        # Each output worker opens its own connection.
        while not stop.is_set():
            try:
                connection, _ = forward.accept()
            except TimeoutError:
                continue
            threading.Thread(target=drain, args=(connection,), daemon=True).start()

    threads = [
        threading.Thread(target=http.serve_forever, daemon=True),
        threading.Thread(target=receive, daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield http.server_address[1], forward.getsockname()[1], _Backend.received, forwarded
    finally:
        stop.set()
        http.shutdown()
        http.server_close()
        forward.close()
        for thread in threads:
            thread.join(5)


@pytest.mark.parametrize("config", ["fluent-bit.conf", "fluent-bit.yaml"])
def test_outputs_selected_by_environment_deliver(tmp_path: Path, config: str) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    marker = "output-marker-7f3a"
    with _backends() as (http_port, forward_port, received, forwarded):
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
            "FLB_LOKI_MATCH": "asynclog.*",
            "FLB_LOKI_HOST": "127.0.0.1",
            "FLB_LOKI_PORT": str(http_port),
            "FLB_LOKI_TENANT": "team-a",
            "FLB_OTEL_MATCH": "*",
            "FLB_OTEL_HOST": "127.0.0.1",
            "FLB_OTEL_PORT": str(http_port),
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
                    and marker.encode() in bodies("/loki/api/v1/push")
                    and marker.encode() in bodies("/v1/logs")
                    and b"output-span-7f3a" in bodies("/v1/traces")
                    and marker.encode() in forwarded
                )

            wait_for(delivered, 60, "every output to deliver")
            assert stop_process(flb.process, timeout=30) == 0
    assert flb.records() == [], "stdout was switched off"
    bulk = [json.loads(line) for line in bodies("/_bulk").splitlines()]
    (document,) = [d for d in bulk if d.get("message") == marker]
    assert document["service.name"] == METADATA["service.name"]
    assert "@timestamp" in document
    (push,) = [json.loads(b) for p, b in received if p.startswith("/loki/")]
    labels = push["streams"][0]["stream"]
    assert labels == {
        "job": "asynclog",
        "service_name": "svc-e2e",
        "namespace": "ns-e2e",
        "level": "warning",
    }
    # Credentials only where set: an unset user sends no Authorization header at all.
    basic = "Basic " + base64.b64encode(b"elastic:s3cret").decode()
    for path, headers in _Backend.headers_seen:
        if path.startswith("/_bulk"):
            assert headers["authorization"] == basic
        else:
            assert "authorization" not in headers, path
        if path.startswith("/loki/"):
            assert headers["x-scope-orgid"] == "team-a"
    _assert_no_errors_or_warnings(flb.log)
