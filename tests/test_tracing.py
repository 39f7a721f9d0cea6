"""Tracing under install(app): one server span per request whatever the backend, spans as
lines, sampling, ids without a recorded span, FastAPI's own telemetry; and the tracing
modules' parts on their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _fastapi_app import (
    client_fixture,  # noqa: F401 (the `client` fixture, used by name)
    lines_of,
    make_app,
)
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.trace import SpanKind, Status, StatusCode

import asynclog
from asynclog._redact import Redactor
from asynclog._sampling import SwitchableSampler, sampler
from asynclog._server_span import ids_only_span, method_fields, request_method
from asynclog._settings import AppSettings
from asynclog._spans import span_fields
from asynclog._tracing import own_span_tracer

from conftest import QUIET, run_python

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_the_span_and_the_error_line_name_unknown_methods_as_the_access_line_does(
    log_path: Path,
) -> None:
    app = make_app(log_path, spans="log", http_known_methods={"HEAD"})  # GET is unknown here
    with TestClient(app) as client:
        client.get("/items/7")
        with pytest.raises(RuntimeError, match="boom"):
            client.get("/boom")
    spans = lines_of(log_path, "asynclog.span")
    assert [s["span.name"] for s in spans] == ["HTTP /items/{item_id}", "HTTP /boom"]
    for span in spans:
        assert span["attributes"]["http.request.method"] == "_OTHER"
        assert span["attributes"]["http.request.method_original"] == "GET"
    [error] = lines_of(log_path, "asynclog.error")
    assert (error["http.request.method"], error["http.request.method_original"]) == (
        "_OTHER",
        "GET",
    )


@pytest.mark.parametrize("backend", ["asynclog", "native", "instrumentor"])
def test_spans_as_lines_one_per_request_same_trace(log_path: Path, backend: str) -> None:
    with TestClient(make_app(log_path, spans="log", tracing_backend=backend)) as client:
        client.get("/items/9")
        client.get("/items/10")
    lines = lines_of(log_path)
    spans = [line for line in lines if line["logger"] == "asynclog.span"]
    access = [line for line in lines if line["logger"] == "asynclog.access"]
    assert len(spans) == 2
    assert [s["trace_id"] for s in spans] == [a["trace_id"] for a in access]
    assert [s["span_id"] for s in spans] == [a["span_id"] for a in access]
    assert spans[0]["span.kind"] == "server"
    assert spans[0]["attributes"]["http.route"] == "/items/{item_id}"
    assert spans[0]["duration_ms"] > 0


@pytest.mark.parametrize("backend", ["asynclog", "native", "instrumentor"])
def test_no_send_or_receive_spans(log_path: Path, backend: str) -> None:
    with TestClient(make_app(log_path, spans="log", tracing_backend=backend)) as client:
        client.get("/stream")
    spans = [line["message"] for line in lines_of(log_path, "asynclog.span")]
    assert spans == ["GET /stream"]


def test_unsampled_requests_still_get_trace_ids(log_path: Path) -> None:
    with TestClient(make_app(log_path, spans="log", trace_ratio=0.0)) as client:
        client.get("/items/1")
    lines = lines_of(log_path)
    assert not [line for line in lines if line["logger"] == "asynclog.span"]
    [access] = [line for line in lines if line["logger"] == "asynclog.access"]
    assert len(access["trace_id"]) == 32


def test_tracing_off_means_no_ids(log_path: Path) -> None:
    with TestClient(make_app(log_path, tracing=False)) as client:
        client.get("/items/1")
    [access] = lines_of(log_path, "asynclog.access")
    assert "trace_id" not in access


def test_incoming_traceparent_is_continued(client: TestClient, log_path: Path) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    client.get("/items/1", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    [access] = lines_of(log_path, "asynclog.access")
    assert access["trace_id"] == trace_id


def test_sdk_disabled_and_user_provider_are_honoured(tmp_path: Path) -> None:
    code = """
        import os, sys
        from fastapi import FastAPI
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        import asynclog
        if sys.argv[1] == "user":
            mine = TracerProvider()
            trace.set_tracer_provider(mine)
        app = FastAPI()
        asynclog.install(app, sink=sys.argv[2], watchdog=False, startup_checks=False)
        provider = trace.get_tracer_provider()
        print(type(provider).__name__, sys.argv[1] != "user" or provider is mine)
        """
    disabled = run_python(
        code.replace("sys.argv[1]", "'disabled'").replace("sys.argv[2]", repr(str(tmp_path / "a"))),
        env={"OTEL_SDK_DISABLED": "true"},
    )
    assert disabled.stdout.split() == ["ProxyTracerProvider", "True"], disabled.stderr
    user = run_python(
        code.replace("sys.argv[1]", "'user'").replace("sys.argv[2]", repr(str(tmp_path / "b")))
    )
    assert user.stdout.split() == ["TracerProvider", "True"], user.stderr


def test_ids_only_when_nothing_is_exported(log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # spans="none" with asynclog's own provider: every line still gets ids, but no SDK span is
    # started (its cost is the largest part of tracing).
    from opentelemetry.sdk.trace import Tracer

    started: list[str] = []
    original = Tracer.start_span

    def counting(self: Tracer, name: str, *args: Any, **kwargs: Any) -> Any:
        started.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(Tracer, "start_span", counting)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with TestClient(make_app(log_path)) as client:
        client.get("/items/1", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
        client.get("/items/2")
    assert started == []
    first, second = lines_of(log_path, "asynclog.access")
    assert first["trace_id"] == trace_id
    assert len(second["trace_id"]) == 32 and second["trace_id"] != trace_id
    assert first["span_id"] != "00f067aa0ba902b7"


def test_fastapi_stops_asking_for_providers_nobody_set(log_path: Path) -> None:
    app = FastAPI()
    asynclog.install(app, sink=str(log_path), **QUIET)
    assert app._telemetry["metrics"] and app._telemetry["logs"]
    with TestClient(app):
        assert not app._native_telemetry.enabled()
        assert not app._telemetry["metrics"] and not app._telemetry["logs"]


def test_fastapi_metrics_stay_on_with_a_meter_provider(log_path: Path) -> None:
    from opentelemetry.sdk.metrics import MeterProvider

    app = FastAPI(telemetry={"meter_provider": MeterProvider()})
    asynclog.install(app, sink=str(log_path), **QUIET)
    with TestClient(app):
        assert app._telemetry["metrics"] and app._native_telemetry.enabled()


# The tracing modules on their own, without an app.


@pytest.mark.parametrize(
    ("name", "argument"),
    [
        ("always_on", ""),
        ("always_off", ""),
        ("parentbased_always_on", ""),
        ("PARENTBASED_ALWAYS_OFF", ""),
        ("traceidratio", "0.25"),
        ("parentbased_traceidratio", "0.5"),
        ("parentbased_traceidratio", "half"),  # a bad argument means 1.0, as in the SDK
    ],
)
def test_otel_traces_sampler_is_read_as_the_sdk_reads_it(
    monkeypatch: pytest.MonkeyPatch, name: str, argument: str
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    ours = sampler(AppSettings())
    assert ours.get_description() == sampling._get_from_env_or_default().get_description()


def test_the_sampler_follows_trace_ratio_then_the_variable_then_spans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    described = {
        "ratio": sampler(AppSettings(trace_ratio=0.1, spans="log")).get_description(),
        "none": sampler(AppSettings(spans="none")).get_description(),
        "log": sampler(AppSettings(spans="log")).get_description(),
    }
    assert described == {
        "ratio": sampling.ParentBased(sampling.TraceIdRatioBased(0.1)).get_description(),
        "none": sampling.ParentBased(sampling.ALWAYS_OFF).get_description(),
        "log": sampling.ParentBased(sampling.ALWAYS_ON).get_description(),
    }
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", " no-such-sampler ")
    assert sampler(AppSettings(spans="none")).get_description() == (
        sampling.ParentBased(sampling.ALWAYS_ON).get_description()
    )
    # trace_ratio wins over the variable.
    assert sampler(AppSettings(trace_ratio=0.0)).get_description() == (
        sampling.ParentBased(sampling.TraceIdRatioBased(0.0)).get_description()
    )


def test_a_switchable_sampler_decides_as_the_sampler_it_holds() -> None:
    switchable = SwitchableSampler(sampling.ALWAYS_OFF)
    assert not switchable.should_sample(None, 1, "span").decision.is_sampled()
    switchable.inner = sampling.ALWAYS_ON
    assert switchable.should_sample(None, 1, "span").decision.is_sampled()
    assert switchable.get_description() == "asynclog(AlwaysOnSampler)"


def test_span_fields_mask_secrets_in_url_attributes_and_name_the_parent() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("outer") as outer:
        inner = tracer.start_span("GET /items", kind=SpanKind.SERVER)
        inner.set_attributes(
            {
                "url.full": "https://h/items?token=abc&page=2",
                "url.query": "api_key=k&page=2",
                "http.route": "/items?token=kept",  # not a URL attribute: as given
            }
        )
        inner.add_event("retry", {"attempt": 2})
        inner.set_status(Status(StatusCode.ERROR, "upstream failed"))
        inner.end()
    fields = span_fields(inner, Redactor(frozenset({"token", "api_key"})))
    assert fields["attributes"] == {
        "url.full": "https://h/items?token=%5BREDACTED%5D&page=2",
        "url.query": "api_key=%5BREDACTED%5D&page=2",
        "http.route": "/items?token=kept",
    }
    assert fields["parent_span_id"] == format(outer.get_span_context().span_id, "016x")
    assert (fields["span.name"], fields["span.kind"], fields["status"]) == (
        "GET /items",
        "server",
        "error",
    )
    assert fields["status.description"] == "upstream failed"
    assert [e["name"] for e in fields["events"]] == ["retry"]
    assert fields["events"][0]["attributes"] == {"attempt": 2}


def test_ids_only_with_asynclogs_own_provider_exporting_nothing() -> None:
    # A provider asynclog did not create may export through processors it cannot see.
    _, ids_only = own_span_tracer(TracerProvider(), AppSettings(spans="none"))
    assert not ids_only


def test_one_method_rule_for_the_access_line_the_error_line_and_the_span() -> None:
    known = frozenset({"GET", "_OTHER"})
    assert request_method("GET", known) == ("GET", True)
    assert request_method("get", known) == ("_OTHER", False)  # case-sensitive, as HTTP
    assert request_method("_OTHER", known) == ("_OTHER", True)  # listed: the client's own
    assert method_fields("GET", known) == {"http.request.method": "GET"}
    assert list(method_fields("PURGE", known).items()) == [
        ("http.request.method", "_OTHER"),
        ("http.request.method_original", "PURGE"),
    ]


def test_an_ids_only_span_continues_an_incoming_trace_or_starts_one() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent = propagate.extract({"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    continued = ids_only_span(parent).get_span_context()
    assert format(continued.trace_id, "032x") == trace_id
    assert continued.trace_flags.sampled  # the upstream's decision is kept
    assert continued.span_id not in (0, 0x00F067AA0BA902B7)
    fresh = [ids_only_span(None).get_span_context() for _ in range(2)]
    assert all(c.is_valid and not c.trace_flags.sampled for c in fresh)
    assert fresh[0].trace_id != fresh[1].trace_id
    assert not ids_only_span(None).is_recording()
