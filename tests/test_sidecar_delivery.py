"""Nothing lost between the app and a real Loki: the aggregator tier, and outages of each part.

A steady stream of numbered lines (tests/_stream.py, asynclog's defaults) is shipped by the real
Fluent Bit on the shipped configs into a real Loki 3.4.6; every test counts each `seq` in what
Loki returns (missing, duplicates) and records lines sent, lines found, duplicates and the time
to catch up after the fault (docs/guarantees.md quotes them). The streams are shorter than the
issue's 60 s to keep CI's time bounded: RATE lines a second for the seconds each test names.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _fluentbit import (
    FLUENT_BIT,
    METADATA,
    FluentBit,
    OtlpReceiver,
    fluent_bit,
    free_port,
    gunicorn_serving,
    otlp_receiver,
    wait_for,
)
from _loki import Loki, LokiEntry, loki_serving, needs_loki

from conftest import ROOT, assert_accounted, run_python

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        FLUENT_BIT is None, reason="no Fluent Bit: set FLUENT_BIT or put it on PATH"
    ),
    needs_loki,
]

SIDECAR = ROOT / "fluent-bit.yaml"
AGGREGATOR = ROOT / "sidecar" / "fluent-bit-aggregator.yaml"
RATE = 500
# Bounds on a loaded machine, never assertions on time: how long Fluent Bit's retries (backoff
# from 5 s) may take to deliver everything after a fault.
DELIVERED_WITHIN_S = 240
QUERY = '{job="asynclog"}'
# Each poll reads every line back: not more often, to leave the machine to the pipeline.
POLL_S = 1.0
# Loki is read in windows this long (see entries()).
WINDOW_S = 5


@dataclass
class Stream:
    """A running tests/_stream.py: `count` lines from seq `first`, into `sink`."""

    process: subprocess.Popen[bytes]
    sink: Path
    first: int
    count: int
    started: float  # Unix time

    def written_so_far(self) -> int:
        """How many of its lines are in the file now."""
        return self.sink.read_bytes().count(b'"seq":') if self.sink.exists() else 0

    def finish(self) -> int:
        """Wait for the stream to end; the lines it sent (asynclog wrote and dropped none)."""
        out, _ = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, out
        assert_accounted(json.loads(out), written=self.count, dropped=0)
        return self.count


def start_stream(sink: Path, seconds: float, first: int = 0) -> Stream:
    script = ROOT / "tests" / "_stream.py"
    command = [sys.executable, str(script), str(sink), str(RATE), str(seconds), str(first)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT)
    return Stream(process, sink, first, int(RATE * seconds), time.time())


def entries(loki: Loki, since: float) -> list[LokiEntry]:
    """Every line from the Unix time `since` on, read in windows of WINDOW_S seconds.

    Loki 3.4.6 restarted on its data answered no range query spanning both the chunks it had
    flushed when stopped and the ones it took after restarting (the query ran into the client's
    timeout), while each short window answered in milliseconds.
    """
    found: list[LokiEntry] = []
    start, now = int(since) - 1, time.time()
    while start < now + WINDOW_S:
        found += loki.query(QUERY, start_s=start, end_s=start + WINDOW_S)
        start += WINDOW_S
    return found


def seqs_in_loki(loki: Loki, since: float) -> Counter[int]:
    """How many times Loki holds each seq written from the Unix time `since` on."""
    found: Counter[int] = Counter()
    for entry in entries(loki, since):
        record = entry.json()
        if record.get("logger") == "delivery":
            found[int(record["seq"])] += 1
    return found


@dataclass
class Delivery:
    """Lines sent against lines found in Loki, and how long catching up took."""

    sent: int
    found: int
    missing: list[int]
    duplicates: int
    catch_up_s: float

    def figures(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "found": self.found,
            "missing": len(self.missing),
            "duplicates": self.duplicates,
            "catch_up_s": round(self.catch_up_s, 1),
        }


def delivered(
    loki: Loki, stream: Stream, since: float, lost: Callable[[], int] | None = None
) -> Delivery:
    """Wait until Loki holds every line of the finished `stream` (bounded), then count them.

    `since` is the monotonic time the last fault ended: the catch-up is how long after it the
    last line arrived. Where `lost()` lines were counted as deleted unshipped, it waits for the
    rest: until at most that many are missing and three polls in a row find nothing new."""
    sent = stream.finish()
    wanted = set(range(stream.first, stream.first + sent))
    deadline = time.monotonic() + DELIVERED_WITHIN_S
    counts: list[int] = []
    while time.monotonic() < deadline:  # else counted below: the test fails naming the missing
        try:
            found = len(wanted & set(seqs_in_loki(loki, stream.started)))
        except OSError as error:  # a query that timed out on a loaded machine
            print(f"Loki query failed: {error}", file=sys.stderr)
            found = 0
        counts.append(found)
        if found == sent:
            break
        if lost is not None and found >= sent - lost() and len(set(counts[-4:])) == 1:
            break
        time.sleep(POLL_S)
    catch_up = time.monotonic() - since
    # A duplicate may trail the last new line (a retried batch): count after a short settle.
    time.sleep(3)
    found = seqs_in_loki(loki, stream.started)
    ours = {seq: n for seq, n in found.items() if seq in wanted}
    return Delivery(
        sent=sent,
        found=sum(ours.values()),
        missing=sorted(wanted - set(ours)),
        duplicates=sum(n - 1 for n in ours.values()),
        catch_up_s=catch_up,
    )


def loki_env(loki: Loki) -> dict[str, str]:
    return {
        "FLB_STDOUT_MATCH": "disabled",
        "FLB_METRICS_MATCH": "disabled",
        "FLB_LOKI_MATCH": "asynclog.*",
        "FLB_LOKI_HOST": "127.0.0.1",
        "FLB_LOKI_PORT": str(loki.port),
    }


@contextmanager
def sidecar(log_dir: Path, env: dict[str, str], name: str = "sidecar") -> Iterator[FluentBit]:
    """The sidecar on the shipped fluent-bit.yaml, tailing `log_dir`."""
    log_dir.mkdir(exist_ok=True)
    with fluent_bit(SIDECAR, log_dir, env, name=name) as process:
        yield process


# The aggregator's own deployment, unlike the sidecars' (METADATA): no line may carry it.
AGGREGATOR_METADATA = {
    "OTEL_SERVICE_NAME": "aggregator-svc",
    "POD_NAME": "aggregator-pod",
    "POD_NAMESPACE": "aggregator-ns",
    "NODE_NAME": "aggregator-node",
}


@contextmanager
def aggregator(
    storage: Path,
    port: int,
    loki: Loki,
    name: str = "aggregator",
    otlp: OtlpReceiver | None = None,
) -> Iterator[FluentBit]:
    """The aggregator on sidecar/fluent-bit-aggregator.yaml, in a deployment of its own:
    forward in on `port`, to Loki (and to `otlp` if given)."""
    storage.mkdir(exist_ok=True)
    env = {
        **loki_env(loki),
        **AGGREGATOR_METADATA,
        "FLB_FORWARD_PORT": str(port),
        "FLB_STORAGE_DIR": str(storage),
    }
    if otlp is not None:
        env.update(FLB_OTEL_MATCH="asynclog.*", FLB_OTEL_HOST="127.0.0.1")
        env.update(FLB_OTEL_PORT=str(otlp.port))
    with fluent_bit(AGGREGATOR, storage, env, name=name) as process:
        yield process


def forward_env(port: int) -> dict[str, str]:
    """A sidecar that sends its log lines to the aggregator on `port`, and nothing else."""
    return {
        "FLB_STDOUT_MATCH": "disabled",
        "FLB_METRICS_MATCH": "disabled",
        "FLB_FORWARD_MATCH": "asynclog.*",
        "FLB_FORWARD_HOST": "127.0.0.1",
        "FLB_FORWARD_PORT": str(port),
    }


def assert_exactly_once(delivery: Delivery) -> None:
    assert not delivery.missing, f"{len(delivery.missing)} lines missing: {delivery.missing[:20]}"
    assert delivery.duplicates == 0, delivery


def assert_at_least_once(delivery: Delivery) -> None:
    assert not delivery.missing, f"{len(delivery.missing)} lines missing: {delivery.missing[:20]}"


# Two requests' lines, written in spans (asynclog takes their ids), and a record whose own
# fields are named like the deployment's and like the labels: it must not set any of them.
_TRACED = """
    import asynclog
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())
    asynclog.configure(sink={sink!r}, format="json")
    log, tracer = asynclog.get_logger("traced"), trace.get_tracer("traced")
    for request, lines in (("req-a", 3), ("req-b", 2)):
        with tracer.start_as_current_span(request):
            for n in range(lines):
                log.info("traced", request_id=request, n=n)
    log.warning("lookalikes", service_name="evil-svc", namespace="evil-ns", **{{
        "service.name": "evil-svc", "k8s.namespace.name": "evil-ns", "k8s.pod.name": "evil-pod",
    }})
    assert asynclog.shutdown(timeout=10)
"""
LOKI_LABELS = {"job", "service_name", "namespace", "level"}


def write_traced(sink: Path) -> list[dict[str, Any]]:
    """Write _TRACED's lines to `sink`; the lines as written."""
    result = run_python(_TRACED.format(sink=str(sink)))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in sink.read_text(encoding="utf-8").splitlines()]


def test_sidecar_to_aggregator_to_loki_delivers_every_line(tmp_path: Path, figures: Any) -> None:
    """Every line, labelled with the pod's deployment (not the aggregator's), ids as Loki's
    structured metadata; the OTLP output beside it carries the pod's deployment too."""
    port = free_port()
    with (
        loki_serving(tmp_path / "loki") as loki,
        otlp_receiver(tmp_path / "receiver") as receiver,
        aggregator(tmp_path / "aggregator", port, loki, otlp=receiver),
        sidecar(tmp_path / "logs", forward_env(port)),
    ):
        traced = write_traced(tmp_path / "logs" / "traced.log")
        stream = start_stream(tmp_path / "logs" / "app.log", seconds=10)
        delivery = delivered(loki, stream, time.monotonic())
        # What Loki stored is the record asynclog wrote, with the sidecar's metadata.
        (entry,) = [e for e in entries(loki, stream.started) if e.json().get("seq") == 0]
        labels = {name: loki.label_values(name) for name in loki.labels()}
        trace_id, service = traced[0]["trace_id"], METADATA["service.name"]
        by_trace = loki.query(f'{{service_name="{service}"}} | trace_id="{trace_id}"')
        (lookalike,) = loki.query('{job="asynclog"} |= "lookalikes"')
        wait_for(lambda: len(receiver.log_records()) >= delivery.sent, 30, "the OTLP receiver")
        records = receiver.log_records()
    figures(**delivery.figures())
    assert_exactly_once(delivery)
    assert entry.json()["message"] == "delivery"

    # Labels: the sidecar's pod, bounded; the aggregator's own values nowhere.
    assert set(labels) == LOKI_LABELS, labels
    assert labels["service_name"] == [METADATA["service.name"]]
    assert labels["namespace"] == [METADATA["k8s.namespace.name"]]
    assert labels["job"] == ["asynclog"]
    assert set(labels["level"]) == {"info", "warning"}
    # Ids as structured metadata, not in the line; a trace query without a parser stage.
    ids = ("trace_id", "span_id", "request_id")
    written_a = [line for line in traced if line.get("trace_id") == trace_id]
    assert len(by_trace) == len(written_a) == 3
    assert sorted(tuple(e.metadata.get(key) for key in ids) for e in by_trace) == sorted(
        tuple(line[key] for key in ids) for line in written_a
    )
    assert all(not set(ids) & set(e.json()) for e in by_trace), "not in the line"
    # The app's own fields named like the deployment's: the deployment's values won.
    assert lookalike.labels["service_name"] == METADATA["service.name"]
    assert lookalike.json()["service.name"] == METADATA["service.name"]
    assert lookalike.json()["k8s.namespace.name"] == METADATA["k8s.namespace.name"]
    assert lookalike.json()["service_name"] == "evil-svc"  # in the line, not a label

    # OTLP through the aggregator: the pod's deployment in each LogRecord's attributes (see
    # test_sidecar_manifests.py for why not the Resource); nothing of the aggregator's.
    aggregator_values = set(AGGREGATOR_METADATA.values())
    for resource, record in records:
        in_resource = {a["value"].get("stringValue") for a in resource.get("attributes") or []}
        assert not aggregator_values & in_resource, resource
        attributes = {a["key"]: a["value"].get("stringValue") for a in record["attributes"]}
        assert {key: attributes.get(key) for key in METADATA} == METADATA
    otlp_traced = [r for _, r in records if r.get("traceId") == trace_id]
    assert sorted(r["spanId"] for r in otlp_traced) == sorted(line["span_id"] for line in written_a)


def test_backend_outage_loses_nothing(tmp_path: Path, figures: Any) -> None:
    """Loki stops for 15 s mid-stream and restarts on the same data and port."""
    data = tmp_path / "loki"
    with loki_serving(data) as loki:
        port = loki.port
        with sidecar(tmp_path / "logs", loki_env(loki)):
            stream = start_stream(tmp_path / "logs" / "app.log", seconds=20)
            time.sleep(5)
            loki.process.terminate()
            loki.process.wait(60)
            time.sleep(15)
            with loki_serving(data, port=port) as again:
                restarted = time.monotonic()
                delivery = delivered(again, stream, restarted)
    figures(**delivery.figures(), outage_s=15)
    assert_exactly_once(delivery)


def test_sidecar_sigkill_loses_nothing(tmp_path: Path, figures: Any) -> None:
    """The sidecar is SIGKILLed mid-stream and started again 5 s later on the same volume."""
    log_dir = tmp_path / "logs"
    with loki_serving(tmp_path / "loki") as loki:
        with sidecar(log_dir, loki_env(loki)) as first:
            stream = start_stream(log_dir / "app.log", seconds=20)
            time.sleep(8)
            first.process.kill()
            first.process.wait(30)
        time.sleep(5)
        with sidecar(log_dir, loki_env(loki), name="sidecar-restarted"):
            restarted = time.monotonic()
            delivery = delivered(loki, stream, restarted)
    figures(**delivery.figures())
    assert_at_least_once(delivery)


def test_aggregator_stop_and_sigkill_lose_nothing(tmp_path: Path, figures: Any) -> None:
    """In the path sidecar -> aggregator -> Loki, the aggregator is stopped (SIGTERM) for 10 s,
    then SIGKILLed and started again 5 s later, on the same buffer each time."""
    port, storage = free_port(), tmp_path / "aggregator"
    with loki_serving(tmp_path / "loki") as loki, sidecar(tmp_path / "logs", forward_env(port)):
        stream = start_stream(tmp_path / "logs" / "app.log", seconds=30)
        with aggregator(storage, port, loki, name="aggregator-1") as first:
            time.sleep(5)
            first.process.terminate()
            first.process.wait(60)
        time.sleep(10)
        with aggregator(storage, port, loki, name="aggregator-2") as second:
            time.sleep(8)
            second.process.kill()
            second.process.wait(30)
        time.sleep(5)
        with aggregator(storage, port, loki, name="aggregator-3"):
            restarted = time.monotonic()
            delivery = delivered(loki, stream, restarted)
    figures(**delivery.figures())
    assert_at_least_once(delivery)


# Overload: the app writes faster than the sidecar ships. A CPU limit throttles a container by
# stopping it for part of each period; here the sidecar is stopped outright (SIGSTOP) while
# the stream goes on, then resumed (SIGCONT).


def notices(output: Path) -> list[dict[str, Any]]:
    """The rotation's stderr lines saying what the disk budget deleted unshipped."""
    found = []
    for line in output.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"log lines deleted unshipped"' in line:
            found.append(json.loads(line))
    return found


def rotations(loki: Loki, since: float) -> int:
    return sum(
        1
        for entry in entries(loki, since)
        if entry.json().get("message", "").startswith("rotated ")
    )


@contextmanager
def stopped(process: subprocess.Popen[bytes]) -> Iterator[None]:
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


def test_overload_within_the_budget_rotates_without_deleting_unshipped_lines(
    tmp_path: Path, figures: Any
) -> None:
    """Rotation every ~5 s at RATE; the sidecar stopped for 8 s: app.log.1 waits for it."""
    log_dir, rotate = tmp_path / "logs", 256 * 1024
    log_dir.mkdir()
    env = {"LOG_ROTATE_BYTES": str(rotate)}  # the default budget: three times that
    with (
        loki_serving(tmp_path / "loki") as loki,
        sidecar(log_dir, loki_env(loki)) as shipper,
        gunicorn_serving(ROOT, log_dir / "app.log", workers=1, env=env) as app,
    ):
        stream = start_stream(log_dir / "app.log", seconds=30)
        time.sleep(6)
        with stopped(shipper.process):
            time.sleep(8)
        resumed = time.monotonic()
        delivery = delivered(loki, stream, resumed)
        rotated = rotations(loki, stream.started)
    figures(**delivery.figures(), rotations=rotated, stopped_s=8)
    assert_exactly_once(delivery)
    assert rotated >= 3, "app.log rotated several times"
    assert notices(app.output) == []


def test_overload_past_the_budget_counts_what_it_deletes(tmp_path: Path, figures: Any) -> None:
    """The sidecar stopped for longer than the budget holds: the rotation deletes the oldest
    unshipped lines and says how many, on stderr; Loki misses exactly those."""
    log_dir, rotate = tmp_path / "logs", 128 * 1024
    log_dir.mkdir()
    env = {"LOG_ROTATE_BYTES": str(rotate), "LOG_DISK_BUDGET_BYTES": str(3 * rotate)}
    with (
        loki_serving(tmp_path / "loki") as loki,
        sidecar(log_dir, {**loki_env(loki), "FLB_METRICS_MATCH": "asynclog.*"}) as shipper,
        gunicorn_serving(ROOT, log_dir / "app.log", workers=1, env=env) as app,
    ):
        stream = start_stream(log_dir / "app.log", seconds=20)
        time.sleep(2)
        with stopped(shipper.process):
            time.sleep(15)
        resumed = time.monotonic()
        delivery = delivered(
            loki, stream, resumed, lambda: sum(n["lines"] for n in notices(app.output))
        )
        counted = notices(app.output)
        in_loki = [e.json() for e in entries(loki, stream.started)]
        lost = sum(notice["lines"] for notice in counted)
        metric = "asynclog_unshipped_lines_deleted_sum"
        wait_for(lambda: f"{metric} {lost}\n" in shipper.metrics(), 30, f"{metric} {lost}")
    figures(**delivery.figures(), counted_lost=lost, stopped_s=15)
    assert counted, "the budget forced a deletion, and said so"
    assert delivery.missing, "the budget forced a deletion"
    assert delivery.duplicates == 0
    # Besides the stream's lines, those files held only a few of the master's own lines
    # ("rotated ...", the notices themselves): every missing line is counted.
    assert 0 <= lost - len(delivery.missing) <= 5 * len(counted)
    # The same notices reached Loki from unshipped.log, and the sidecar's metric (above).
    shipped = [r for r in in_loki if r.get("message") == "log lines deleted unshipped"]
    assert sorted(r["lines"] for r in shipped) == sorted(n["lines"] for n in counted)
