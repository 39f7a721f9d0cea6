"""The sidecar's outputs against real receivers: what Loki stored and what an OTLP receiver
decoded, from lines a real app wrote.

The app is the example app under gunicorn, writing to the file the sidecar (the shipped
`fluent-bit.yaml`, a real Fluent Bit) tails. The receivers are real and on loopback: Grafana
Loki 3.4 (`tests/_loki.py`; its push API and its OTLP endpoint), and a second Fluent Bit whose
`opentelemetry` input decodes OTLP/HTTP and prints it as OTLP/JSON. Each test skips with the
reason where a binary is absent; CI provides both.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from _fluentbit import (
    METADATA,
    FluentBit,
    OtlpReceiver,
    assert_no_errors_or_warnings,
    fluent_bit,
    gunicorn_serving,
    http_get,
    needs_fluent_bit,
    otlp_receiver,
    stop_process,
    wait_for,
)
from _loki import Loki, loki_serving, needs_loki

from conftest import ROOT, run_python

pytestmark = [
    pytest.mark.integration,
    needs_fluent_bit,
    needs_loki,
]

CONFIG = ROOT / "fluent-bit.yaml"
LEVELS = {"debug": 5, "info": 9, "warning": 13, "error": 17, "critical": 21}
# Loki labels come from the config alone; Loki adds `detected_level` as metadata by itself.
LOKI_LABELS = {"job", "service_name", "namespace", "level"}
LOKI_METADATA = ("trace_id", "span_id", "request_id")
# Keys the sidecar adds to each record: the tail's Path_Key and the deployment metadata.
ADDED = {"log.file.path", *METADATA}
RAW_LINE = "a library's stray print, not JSON"
SERVICE = METADATA["service.name"]


@dataclass
class Written:
    """What the app wrote: its JSON lines, its raw lines, the trace of one failed request, and
    the file (the tail's `log.file.path`)."""

    lines: list[dict[str, Any]]
    raw: list[str]
    failed_trace_id: str
    path: str

    @property
    def total(self) -> int:
        return len(self.lines) + len(self.raw)

    @property
    def access(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["logger"] == "asynclog.access"]


def _write_traffic(url: str, sink: Path, requests: int = 12) -> None:
    """Requests through every kind of line: routes with fields, 404s, 500s with an exception."""
    for n in range(requests):
        path = "/fail" if n % 6 == 5 else "/no-such-route" if n % 6 == 4 else f"/items/{n}"
        http_get(f"{url}{path}", {"x-request-id": f"req-{n}"})
    # Bad input on the same stream: a raw line (the lines after it must arrive too), label
    # lookalikes, a level outside the five.
    result = run_python(
        f"""
        import logging, asynclog
        with open({str(sink)!r}, "a") as stray:
            stray.write({RAW_LINE!r} + "\\n")
        asynclog.configure(sink={str(sink)!r}, format="json")
        logging.addLevelName(25, "NOTICE")
        logging.getLogger("e2e.bad").log(25, "custom level", extra={{"service_name": "evil"}})
        asynclog.get_logger("e2e.bad").warning(
            "label lookalikes", service_name="evil-svc", namespace="evil-ns", job="evil-job",
            **{{"service.name": "evil-svc", "k8s.namespace.name": "evil-ns",
                "k8s.pod.name": "evil-pod", "k8s.node.name": "evil-node"}},
        )
        assert asynclog.shutdown(timeout=10)
        """
    )
    assert result.returncode == 0, result.stderr


def _read_written(sink: Path) -> Written:
    lines: list[dict[str, Any]] = []
    raw: list[str] = []
    for text in sink.read_text(encoding="utf-8").split("\n")[:-1]:
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            raw.append(text)
    failed = [line["trace_id"] for line in lines if line["message"] == "about to fail"]
    return Written(lines, raw, failed[0], str(sink))


def _through_the_sidecar(
    tmp_path: Path,
    outputs: dict[str, str],
    delivered: Callable[[Written], bool],
    spans: bool = False,
) -> tuple[FluentBit, Written]:
    """The app's traffic (`_write_traffic`, two gunicorn workers) through a real Fluent Bit
    running the shipped config with `outputs`, until `delivered(written)`; Fluent Bit then
    stops cleanly. With `spans`, the app also exports its spans to the sidecar's OTLP input."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    sink = log_dir / "app.log"
    with fluent_bit(CONFIG, log_dir, outputs) as flb:
        env = (
            {
                "ASYNCLOG_SPANS": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{flb.otlp_port}",
            }
            if spans
            else None
        )
        with gunicorn_serving(ROOT, sink, workers=2, env=env) as app:
            _write_traffic(app.url, sink)
            assert app.stop() == 0
        written = _read_written(sink)
        wait_for(lambda: delivered(written), 60, "the receiver to hold every line")
        assert stop_process(flb.process, timeout=30) == 0
    return flb, written


def _traced(written: Written) -> list[str]:
    """The messages of the failed request's lines."""
    trace_id = written.failed_trace_id
    return [line["message"] for line in written.lines if line.get("trace_id") == trace_id]


def _instant_ns(text: str) -> int:
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


def _close_to(ns: int, line: dict[str, Any]) -> bool:
    """`ns` is the line's `time`: Fluent Bit reads %L through a double, so 1 us behind at most."""
    return 0 <= _instant_ns(line["time"]) - ns <= 1000


def _canonical(value: Any) -> str:
    """Comparable text: floats to 12 significant digits, as msgpack may round."""

    def normal(item: Any) -> Any:
        if isinstance(item, float):
            return float(f"{item:.12g}")
        if isinstance(item, dict):
            return {k: normal(v) for k, v in item.items()}
        if isinstance(item, list):
            return [normal(v) for v in item]
        return item

    return json.dumps(normal(value), sort_keys=True, ensure_ascii=False)


# Loki, native push.


def _check_loki_push(loki: Loki, written: Written) -> None:
    entries = loki.query('{job="asynclog"}')
    assert len(entries) == written.total, "every line once, the raw one too"
    assert set(loki.labels()) == LOKI_LABELS
    assert loki.label_values("service_name") == [SERVICE]
    assert loki.label_values("namespace") == [METADATA["k8s.namespace.name"]]
    # The custom level and the raw line: `other`, not a value of their own.
    assert set(loki.label_values("level")) == {"info", "warning", "error", "other"}
    assert loki.label_values("job") == ["asynclog"]

    by_line: Counter[str] = Counter()
    raw = 0
    for entry in entries:
        assert set(entry.labels) == LOKI_LABELS, entry.labels
        assert set(entry.metadata) <= {*LOKI_METADATA, "detected_level"}, entry.metadata
        record = entry.json()
        if "log" in record and "message" not in record:
            assert record["log"] == RAW_LINE
            assert entry.labels["level"] == "other"
            raw += 1
            continue
        level = record["level"]
        assert entry.labels["level"] == (level if level in LEVELS else "other")
        for key in LOKI_METADATA:
            assert key not in record, "in structured metadata, not in the line"
        assert _close_to(entry.timestamp_ns, record)
        # The deployment's values, over the app's fields of the same names (label lookalikes).
        assert {key: record[key] for key in METADATA} == METADATA
        kept = {k: v for k, v in record.items() if k not in ADDED}
        kept.update(entry.metadata)
        kept.pop("detected_level", None)
        by_line[_canonical(kept)] += 1
    expected = Counter(
        _canonical({k: v for k, v in line.items() if k not in ADDED}) for line in written.lines
    )
    assert by_line == expected, "each line with every field, ids from structured metadata"
    assert raw == len(written.raw) == 1


def test_loki_push_bounded_labels_structured_metadata_and_a_trace_query(tmp_path: Path) -> None:
    with loki_serving(tmp_path / "loki") as loki:
        outputs = {
            "FLB_LOKI_MATCH": "asynclog.*",
            "FLB_LOKI_HOST": "127.0.0.1",
            "FLB_LOKI_PORT": str(loki.port),
        }
        flb, written = _through_the_sidecar(
            tmp_path, outputs, lambda w: len(loki.query('{job="asynclog"}')) >= w.total
        )
        _check_loki_push(loki, written)

        # The trace query of sidecar/README.md: no parser stage, exactly that request's lines.
        query = f'{{service_name="{SERVICE}"}} | trace_id="{written.failed_trace_id}"'
        found = [entry.json()["message"] for entry in loki.query(query)]
        expected = [
            line["message"]
            for line in written.lines
            if line.get("trace_id") == written.failed_trace_id
        ]
        assert sorted(found) == sorted(expected)
        assert len(found) == 3, found  # the route's line, the error line, the access line

        # "All 5xx of a route" (sidecar/README.md).
        fives = loki.query(
            f'{{service_name="{SERVICE}"}} | json | http_route="/fail"'
            " | http_response_status_code >= 500"
        )
        failed = [
            line
            for line in written.lines
            if line.get("http.route") == "/fail" and line.get("http.response.status_code", 0) >= 500
        ]
        assert len(fives) == len(failed) > 0
        # The stdout output still prints the raw line, as a record of its own.
        assert any(record.get("log") == RAW_LINE for record in flb.records())
    assert_no_errors_or_warnings(flb.log)


# OTLP.


def _any_value(value: dict[str, Any]) -> Any:
    """An OTLP/JSON AnyValue as the Python value it carries (an empty one is None)."""
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values") or []]
    if "kvlistValue" in value:
        return _attributes(value["kvlistValue"].get("values") or [])
    return None


def _attributes(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        assert pair["key"] not in found, f"{pair['key']} twice"
        found[pair["key"]] = _any_value(pair.get("value") or {})
    return found


def _expected_attributes(line: dict[str, Any], path: str) -> dict[str, Any]:
    """A line's attributes: every field but message, time and the deployment, the exception
    flattened to semconv names, and the tail's path. `level`, `trace_id`, `span_id` and the
    `severity_number` helper stay too: out_opentelemetry, with logs_body_key_attributes,
    removes only the body key (sidecar/README.md, "Fluent Bit 5.1.1")."""
    expected = {k: v for k, v in line.items() if k not in ("message", "time", "exception")}
    for key in ("service.name", "k8s.pod.name", "k8s.namespace.name", "k8s.node.name"):
        expected.pop(key, None)
    for key, value in (line.get("exception") or {}).items():
        expected[f"exception.{key}"] = value
    if line["level"] in LEVELS:
        expected["severity_number"] = LEVELS[line["level"]]
    expected["log.file.path"] = path
    return expected


def _check_log_records(
    records: list[tuple[dict[str, Any], dict[str, Any]]], written: Written
) -> dict[str, Any]:
    """Every line is one LogRecord as the issue asks; returns the access line of the failed
    request, decoded."""
    resource = dict(METADATA)
    path = written.path
    received: Counter[str] = Counter()
    raw = []
    access: dict[str, Any] = {}
    for record_resource, record in records:
        assert _attributes(record_resource.get("attributes") or []) == resource
        body = _any_value(record.get("body") or {})
        attributes = _attributes(record.get("attributes") or [])
        if body == RAW_LINE:
            assert attributes == {"log.file.path": path}
            raw.append(record)
            continue
        decoded = {
            "body": body,
            "severityText": record.get("severityText"),
            "severityNumber": record.get("severityNumber"),
            "timeUnixNano": int(record["timeUnixNano"]),
            "traceId": record.get("traceId"),
            "spanId": record.get("spanId"),
            "attributes": attributes,
        }
        received[_canonical({**decoded, "timeUnixNano": None})] += 1
        if (
            record.get("traceId") == written.failed_trace_id
            and attributes.get("logger") == "asynclog.access"
        ):
            access = decoded
    expected: Counter[str] = Counter()
    for line in written.lines:
        expected[_canonical({
            "body": line["message"],
            "severityText": line["level"],
            "severityNumber": LEVELS.get(line["level"]),
            "timeUnixNano": None,
            "traceId": line.get("trace_id"),
            "spanId": line.get("span_id"),
            "attributes": _expected_attributes(line, path),
        })] += 1  # fmt: skip
    assert received == expected, "one LogRecord per line, nothing dropped"
    assert len(raw) == len(written.raw)
    # The time, to the microsecond (Fluent Bit's %L parse can trail it by one).
    times = sorted(int(r["timeUnixNano"]) for _, r in records if r.get("severityText"))
    lines = sorted(_instant_ns(line["time"]) for line in written.lines)
    assert all(0 <= want - got <= 1000 for got, want in zip(times, lines, strict=True))
    assert access, "the failed request's access line"
    return access


def test_otlp_logs_traces_and_metrics_reach_a_collector(tmp_path: Path) -> None:
    with otlp_receiver(tmp_path / "receiver") as receiver:
        outputs = {
            "FLB_OTEL_MATCH": "*",
            "FLB_OTEL_HOST": "127.0.0.1",
            "FLB_OTEL_PORT": str(receiver.port),
        }

        def delivered(written: Written) -> bool:
            """Every line, every request's span, and every request in the histogram."""
            counted = Counter(
                (line["http.route"] or "", line["http.request.method"],
                 str(line["http.response.status_code"]))
                for line in written.access
            )  # fmt: skip
            return (
                len(receiver.log_records()) >= written.total
                and len(receiver.spans()) >= len(written.access)
                and _histogram_counts(receiver) == counted
            )

        flb, written = _through_the_sidecar(tmp_path, outputs, delivered, spans=True)
    access = written.access
    decoded = _check_log_records(receiver.log_records(), written)
    assert decoded["body"] == "GET /fail 500" and decoded["severityNumber"] == 17

    # Spans as the app exported them, with the trace ids of the lines: each request's server
    # span is the one whose id its lines carry, under the app's own Resource (the sidecar's
    # log processors never touch traces).
    by_id = {(span["traceId"], span["spanId"]): (res, span) for res, span in receiver.spans()}
    for line in access:
        resource, span = by_id[line["trace_id"], line["span_id"]]
        assert _attributes(resource["attributes"])["service.name"] == "asynclog-example"
        assert not any(key.startswith("k8s.") for key in _attributes(resource["attributes"]))
        assert span["kind"] == 2, span  # SERVER
        attributes = _attributes(span.get("attributes") or [])
        for key in ("http.request.method", "url.path", "http.response.status_code"):
            assert attributes[key] == line[key], (key, span)
        assert attributes.get("http.route") == line["http.route"]
    assert_no_errors_or_warnings(flb.log)


def _histogram_counts(receiver: OtlpReceiver) -> Counter[tuple[str, str, str]]:
    """The request histogram's count per (route, method, status) in the latest export."""
    latest: Counter[tuple[str, str, str]] = Counter()
    for export in receiver.exports():
        for resource_metrics in export.get("resourceMetrics") or []:
            for scope_metrics in resource_metrics.get("scopeMetrics") or []:
                for metric in scope_metrics.get("metrics") or []:
                    if metric.get("name") != "http_server_request_duration_seconds":
                        continue
                    found: Counter[tuple[str, str, str]] = Counter()
                    for point in metric["histogram"]["dataPoints"]:
                        labels = _attributes(point.get("attributes") or [])
                        key = (labels["http_route"], labels["http_request_method"],
                               labels["http_response_status_code"])  # fmt: skip
                        found[key] += int(point["count"])
                    latest = found
    return latest


def test_otlp_logs_into_lokis_otlp_endpoint(tmp_path: Path) -> None:
    with loki_serving(tmp_path / "loki") as loki:
        outputs = {
            "FLB_OTEL_MATCH": "asynclog.*",
            "FLB_OTEL_HOST": "127.0.0.1",
            "FLB_OTEL_PORT": str(loki.port),
            "FLB_OTEL_LOGS_URI": "/otlp/v1/logs",
        }
        everything = f'{{service_name="{SERVICE}"}}'
        flb, written = _through_the_sidecar(
            tmp_path, outputs, lambda w: len(loki.query(everything)) >= w.total
        )
        entries = loki.query(everything)
        query = f'{{service_name="{SERVICE}"}} | trace_id="{written.failed_trace_id}"'
        traced = sorted(entry.line for entry in loki.query(query))
    assert_no_errors_or_warnings(flb.log)

    assert len(entries) == written.total
    # The Resource makes the streams: the service, not `unknown_service`, and what Loki's
    # defaults index of the k8s attributes.
    resource = {
        "service_name": SERVICE,
        "k8s_namespace_name": METADATA["k8s.namespace.name"],
        "k8s_pod_name": METADATA["k8s.pod.name"],
    }
    assert all(entry.labels == resource for entry in entries)
    received = Counter(
        (entry.line, *(entry.metadata.get(key) for key in (*LOKI_METADATA, "severity_text")))
        for entry in entries
    )
    expected = Counter(
        (line["message"], *(line.get(key) for key in (*LOKI_METADATA, "level")))
        for line in written.lines
    )
    expected.update((raw, None, None, None, None) for raw in written.raw)
    assert received == expected
    assert traced == sorted(_traced(written))
    assert len(traced) == 3, traced
