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
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from _fluentbit import (
    FLUENT_BIT,
    METADATA,
    assert_no_errors_or_warnings,
    fluent_bit,
    gunicorn_serving,
    http_get,
    otlp_receiver,
    stop_process,
    wait_for,
)
from _loki import LOKI, LOKI_SKIP_REASON, Loki, LokiEntry, loki_serving

from conftest import ROOT, run_python

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not FLUENT_BIT, reason="no Fluent Bit: set FLUENT_BIT=/path/to/fluent-bit or put it on PATH"
    ),
    pytest.mark.skipif(LOKI is None, reason=LOKI_SKIP_REASON),
]

CONFIG = ROOT / "fluent-bit.yaml"
LEVELS = {"debug": 5, "info": 9, "warning": 13, "error": 17, "critical": 21}
# Loki labels come from the config alone; Loki adds `detected_level` as metadata by itself.
LOKI_LABELS = {"job", "service_name", "namespace", "level"}
LOKI_METADATA = ("trace_id", "span_id", "request_id")
# Keys the sidecar adds to each record: the tail's Path_Key and the deployment metadata.
ADDED = {"log.file.path", *METADATA}
# Keys out_opentelemetry reads for the LogRecord's own fields but still sends as attributes:
# with logs_body_key_attributes it removes only the body key (see sidecar/README.md).
REPEATED = {"level", "trace_id", "span_id", "severity_number"}
RAW_LINE = "a library's stray print, not JSON"
SERVICE = METADATA["service.name"]


@dataclass
class Written:
    """What the app wrote: its JSON lines, its raw lines, and the trace of one failed request."""

    lines: list[dict[str, Any]]
    raw: list[str]
    failed_trace_id: str

    @property
    def total(self) -> int:
        return len(self.lines) + len(self.raw)


def _write_traffic(url: str, sink: Path, requests: int = 12) -> None:
    """Requests through every kind of line: routes with fields, 404s, 500s with an exception."""
    for n in range(requests):
        path = "/fail" if n % 6 == 5 else "/no-such-route" if n % 6 == 4 else f"/items/{n}"
        http_get(f"{url}{path}", {"x-request-id": f"req-{n}"})
    # Bad input on the same stream: label lookalikes, a level outside the five, a raw line.
    result = run_python(
        f"""
        import logging, asynclog
        asynclog.configure(sink={str(sink)!r}, format="json")
        logging.addLevelName(25, "NOTICE")
        logging.getLogger("e2e.bad").log(25, "custom level", extra={{"service_name": "evil"}})
        asynclog.get_logger("e2e.bad").warning(
            "label lookalikes", service_name="evil-svc", namespace="evil-ns", job="evil-job"
        )
        assert asynclog.shutdown(timeout=10)
        with open({str(sink)!r}, "a") as stray:
            stray.write({RAW_LINE!r} + "\\n")
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
    return Written(lines, raw, failed[0])


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


def _check_loki_push(loki: Loki, written: Written) -> list[LokiEntry]:
    entries = loki.query('{job="asynclog"}')
    assert len(entries) == written.total, "every line once, the raw one too"
    assert set(loki.labels()) == LOKI_LABELS
    assert loki.label_values("service_name") == [SERVICE]
    assert loki.label_values("namespace") == [METADATA["k8s.namespace.name"]]
    assert set(loki.label_values("level")) <= {*LEVELS, "other"}
    assert loki.label_values("job") == ["asynclog"]

    by_line: Counter[str] = Counter()
    for entry in entries:
        assert set(entry.labels) == LOKI_LABELS, entry.labels
        assert set(entry.metadata) <= {*LOKI_METADATA, "detected_level"}, entry.metadata
        record = entry.json()
        if "log" in record and "message" not in record:
            assert record["log"] == RAW_LINE
            assert entry.labels["level"] == "other"
            continue
        level = record["level"]
        assert entry.labels["level"] == (level if level in LEVELS else "other")
        for key in LOKI_METADATA:
            assert key not in record, "in structured metadata, not in the line"
        assert _close_to(entry.timestamp_ns, record)
        assert record["k8s.pod.name"] == METADATA["k8s.pod.name"]
        kept = {k: v for k, v in record.items() if k not in ADDED}
        if record.get("service.name") not in (None, SERVICE):
            kept["service.name"] = record["service.name"]
        kept.update(entry.metadata)
        kept.pop("detected_level", None)
        by_line[_canonical(kept)] += 1
    expected = Counter(
        _canonical({k: v for k, v in line.items() if k not in ADDED}) for line in written.lines
    )
    assert by_line == expected, "each line with every field, ids from structured metadata"
    return entries


def test_loki_push_bounded_labels_structured_metadata_and_a_trace_query(tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    sink = log_dir / "app.log"
    with loki_serving(tmp_path / "loki") as loki:
        outputs = {
            "FLB_LOKI_MATCH": "asynclog.*",
            "FLB_LOKI_HOST": "127.0.0.1",
            "FLB_LOKI_PORT": str(loki.port),
        }
        with fluent_bit(CONFIG, log_dir, outputs) as flb:
            with gunicorn_serving(ROOT, sink, workers=2) as app:
                _write_traffic(app.url, sink)
                assert app.stop() == 0
            written = _read_written(sink)
            wait_for(
                lambda: len(loki.query('{job="asynclog"}')) >= written.total,
                60,
                "Loki to hold every line",
            )
            assert stop_process(flb.process, timeout=30) == 0
        _check_loki_push(loki, written)

        # The trace query of sidecar/README.md: no parser stage, exactly that request's lines.
        query = f'{{service_name="{SERVICE}"}} | trace_id="{written.failed_trace_id}"'
        found = [entry.json()["message"] for entry in loki.query(query)]
        expected = [
            line["message"] for line in written.lines if line.get("trace_id") == written.failed_trace_id
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
