"""RED metrics for every gunicorn worker, as a real Prometheus scrapes them from the sidecar.

Two workers of the example app, recycled every few requests by `max_requests`, append their
access lines to one file; the real Fluent Bit tails it with the bundled fluent-bit.yaml (what
the Kubernetes sidecar runs) and serves the metrics; the real Prometheus scrapes them. What
PromQL returns must equal what the client saw, per route, method and status. Skipped where
Fluent Bit (FLUENT_BIT or PATH) or Prometheus and promtool (PROMETHEUS/PROMTOOL or PATH) are
absent; `.ci/run` installs Debian's prometheus package.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _fluentbit import (
    assert_no_errors_or_warnings,
    fluent_bit,
    gunicorn_serving,
    needs_fluent_bit,
    stop_process,
    wait_for,
)
from _prometheus import PROMETHEUS, PROMTOOL, Prometheus, prometheus_scraping

from conftest import ROOT, read_lines, run_python

pytestmark = [
    pytest.mark.integration,
    needs_fluent_bit,
    pytest.mark.skipif(
        not (PROMETHEUS and PROMTOOL),
        reason="no prometheus/promtool: apt-get install prometheus, or set PROMETHEUS and PROMTOOL",
    ),
]

# Small, so that both workers are replaced several times during the traffic below.
MAX_REQUESTS = 15
# Semconv's known methods; any other is counted as _OTHER.
KNOWN_METHODS = {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY",
                 "TRACE"}  # fmt: skip
BY_LABELS = "http_route, http_request_method, http_response_status_code"

Key = tuple[str, str, str]  # route, method label, status


@dataclass(frozen=True)
class Call:
    """One kind of request, and the route template its access line should carry."""

    method: str
    path: str
    route: str  # "" where no route matches
    body: dict[str, int] | None = None


CALLS = [
    Call("GET", "/items/{n}", "/items/{item_id}"),  # 200
    Call("POST", "/orders", "/orders", {"item_id": 3, "quantity": 2}),  # 201
    Call("POST", "/orders", "/orders", {"item_id": 999, "quantity": 1}),  # 404, known route
    Call("GET", "/no/such/{n}", ""),  # 404, no route at all
    Call("GET", "/fail", "/fail"),  # 500: an unhandled exception
    Call("DELETE", "/items/{n}", "/items/{item_id}"),  # 405
    Call("PURGE", "/items/{n}", "/items/{item_id}"),  # 405, a method outside the known set
    Call("HEAD", "/items/{n}", "/items/{item_id}"),  # 405
    Call("GET", "/health", "/health"),  # 200, but excluded from access lines by the app
    Call("GET", "/items/{n}", "/items/{item_id}"),
]
SLOW = Call("GET", "/slow", "/slow")  # 200 after 0.2 s: places the values in seconds
ROUNDS = 20
EXCLUDED = {"/health"}


def _send(port: int, call: Call, n: int, request_id: str) -> int | None:
    """The status the client got, or None when the connection broke before an answer (a
    worker stopping as it accepted it): then only the server knows whether it was served."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"x-request-id": request_id, "connection": "close"}
    body = None
    if call.body is not None:
        body = json.dumps(call.body).encode()
        headers["content-type"] = "application/json"
    try:
        connection.request(call.method, call.path.format(n=n), body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return int(response.status)
    except (ConnectionError, http.client.BadStatusLine):
        return None
    finally:
        connection.close()


def _label(method: str) -> str:
    return method if method in KNOWN_METHODS else "_OTHER"


def _vector(prometheus: Prometheus, promql: str) -> dict[Key, float]:
    # An empty label is no label in Prometheus: unmatched paths come back without http_route.
    return {
        (m.get("http_route", ""), m["http_request_method"], m["http_response_status_code"]): value
        for m, value in prometheus.query(promql)
    }


def _scalar(prometheus: Prometheus, promql: str) -> float | None:
    result = prometheus.query(promql)
    return result[0][1] if result else None


def _write_drops(path: Path) -> tuple[int, int]:
    """A process whose queue (1 record) overflows: its drop notices, summed and counted."""
    result = run_python(
        f"""
        import asynclog
        asynclog.configure(sink={str(path)!r}, format="json", queue_size=1)
        log = asynclog.get_logger("burst")
        for n in range(20_000):
            log.info("burst", n=n)
        asynclog.shutdown(timeout=10)
        """
    )
    assert result.returncode == 0, result.stderr
    notices = [line for line in read_lines(path) if line["logger"] == "asynclog"]
    dropped = sum(line["dropped"] for line in notices)
    assert dropped > 0, "the burst should overflow a one-record queue"
    return dropped, len(notices)


def _traffic(url: str) -> tuple[Counter[Key], list[str], int]:
    """Send every kind of call, round after round: what the client saw per (route, method
    label, status), the ids of requests left unanswered, and how many were /slow."""
    port = urllib.parse.urlsplit(url).port
    assert port is not None
    seen: Counter[Key] = Counter()
    unanswered: list[str] = []
    slow = 0
    for round_ in range(ROUNDS):
        for n, call in enumerate([*CALLS, SLOW] if round_ % 4 == 0 else CALLS):
            request_id = f"r{round_}-{n}"
            status = _send(port, call, n + 1, request_id)
            if status is None:
                unanswered.append(request_id)
            elif call.path not in EXCLUDED:
                seen[call.route, _label(call.method), str(status)] += 1
                slow += call is SLOW
    return seen, unanswered, slow


def _assert_promtool_accepts(exposition: str) -> None:
    check = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # Lint findings too (a counter without _total, a missing HELP, ...).
    assert (check.stdout + check.stderr).strip() == ""


def test_prometheus_counts_every_request_of_every_worker(tmp_path: Path, figures: Any) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    sink = log_dir / "app.log"
    recycle = {"GUNICORN_CMD_ARGS": f"--max-requests {MAX_REQUESTS} --max-requests-jitter 0"}
    with gunicorn_serving(ROOT, sink, workers=2, env=recycle) as app:
        dropped, notices = _write_drops(log_dir / "drops.log")
        with fluent_bit(ROOT / "fluent-bit.yaml", log_dir) as flb:
            target = f"127.0.0.1:{flb.metrics_port}"
            with prometheus_scraping(target, tmp_path / "prometheus") as prometheus:
                seen, unanswered, slow = _traffic(app.url)
                assert app.stop() == 0

                lines = read_lines(sink)
                messages = [line["message"] for line in lines]
                recycled = sum(m.startswith("Maximum request limit") for m in messages)
                booted = sum(m.startswith("Booting worker") for m in messages)
                assert recycled >= 3 and booted >= 4, "workers were recycled, replacements too"
                # A request whose connection broke counts if the server logged it.
                access = [line for line in lines if line["logger"] == "asynclog.access"]
                for line in access:
                    if line["request_id"] in unanswered:
                        key = (line["http.route"] or "", line["http.request.method"])
                        seen[(*key, str(line["http.response.status_code"]))] += 1
                assert len(unanswered) <= 3, unanswered
                assert len(access) == seen.total(), "one access line per request served"

                # Every status the issue names is in the traffic.
                statuses = {status for (_, _, status) in seen}
                assert {"200", "201", "404", "405", "500"} <= statuses
                assert ("", "GET", "404") in seen and ("/orders", "POST", "404") in seen
                assert any(method == "_OTHER" for (_, method, _) in seen)

                count = f"sum by ({BY_LABELS}) (http_server_request_duration_seconds_count)"
                every = (
                    f"sum by ({BY_LABELS}) "
                    '(http_server_request_duration_seconds_bucket{le="+Inf"})'
                )
                wait_for(
                    lambda: (
                        _vector(prometheus, count) == seen
                        and _scalar(prometheus, "sum(asynclog_dropped_records_sum)") == dropped
                    ),
                    60,
                    "Prometheus to have scraped every request and every drop",
                )
                result = _vector(prometheus, count)
                assert _vector(prometheus, every) == result
                # Seconds, not milliseconds: each /slow request slept 0.2 s.
                slow_sum = _scalar(
                    prometheus,
                    'sum(http_server_request_duration_seconds_sum{http_route="/slow"})',
                )
                assert slow_sum is not None and 0.2 * slow <= slow_sum < 5 * slow
                fast = 'http_server_request_duration_seconds_bucket{http_route="/slow",le="0.1"}'
                assert _scalar(prometheus, f"sum({fast})") == 0
                assert _scalar(prometheus, "sum(asynclog_dropped_records_count)") == notices
                assert set(prometheus.target_health()) == {"up"}

                _assert_promtool_accepts(flb.metrics())
            assert stop_process(flb.process, timeout=30) == 0
    assert_no_errors_or_warnings(flb.log)
    figures(
        requests=int(sum(result.values())),
        series=len(result),
        unanswered=len(unanswered),
        workers_recycled=recycled,
        dropped=dropped,
        promql=" ".join(f"{r or '-'}|{m}|{s}={v:.0f}" for (r, m, s), v in sorted(result.items())),
    )
