"""The Fluent Bit sidecar configuration: the classic reader, and what the bundled files promise."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from _fluentbit import (
    ConfigError,
    Pipeline,
    Section,
    expand,
    fluent_time_format_to_python,
    load_classic,
    load_yaml,
)

from asynclog._settings import Settings

from conftest import ROOT, read_lines, run_python

CLASSIC = ROOT / "fluent-bit.conf"
YAML = ROOT / "fluent-bit.yaml"
# Outputs that send over the network and so buffer on disk while their backend is down.
NETWORK_OUTPUTS = {"forward", "es", "loki", "opentelemetry"}
# The tag the metrics filters give the metrics they emit.
METRICS_TAG = "asynclog_metrics"


@pytest.fixture(name="pipelines", params=["classic", "yaml"])
def _pipelines(request: pytest.FixtureRequest) -> Pipeline:
    return load_classic(CLASSIC) if request.param == "classic" else load_yaml(YAML)


def _value(section_value: str | None, env: dict[str, str] | None = None) -> str:
    assert section_value is not None
    return expand(section_value, env or {})


def _size(text: str) -> int:
    match = re.fullmatch(r"(\d+)\s*([KMG]?)B?", text.strip().upper())
    assert match, f"not a Fluent Bit size: {text!r}"
    return int(match.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[match.group(2)]


def _true(text: str | None) -> bool:
    return (text or "").lower() in ("on", "true", "yes")


# The classic-format reader itself.


def test_reader_reads_sections_includes_and_variables(tmp_path: Path) -> None:
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "a.conf").write_text("[INPUT]\n    Name dummy\n    Tag  a\n")
    (tmp_path / "inputs" / "b.conf").write_text("[INPUT]\n    Name dummy\n    Tag  b\n")
    (tmp_path / "p.conf").write_text("[PARSER]\n    Name   j\n    Format json\n")
    (tmp_path / "main.conf").write_text(
        "# comment\n"
        "@SET LEVEL=debug\n"
        "[SERVICE]\n"
        "    Log_Level    ${LEVEL}\n"
        "    Parsers_File p.conf\n"
        "\n"
        "@INCLUDE inputs/*.conf\n"
        "[FILTER]\n"
        "    Name  modify\n"
        "    Match *\n"
        "    Add   a 1\n"
        "    Add   b two words\n"
    )
    pipeline = load_classic(tmp_path / "main.conf")
    assert [s.get("tag") for s in pipeline.inputs] == ["a", "b"]
    assert pipeline.parser_names() == {"j"}
    assert pipeline.filters[0].getall("ADD") == ["a 1", "b two words"]
    # @SET wins over the process environment, as in Fluent Bit.
    level = pipeline.service.get("log_level")
    assert level == "${LEVEL}"
    assert expand(level, {"LEVEL": "info"}, pipeline.variables) == "debug"


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("${A}", {}, ""),
        ("${A:-d}/x", {}, "d/x"),
        ("${A:-d}/x", {"A": ""}, "d/x"),
        ("${A:-d}/x", {"A": "y"}, "y/x"),
        ("${A:-/var/log}/*.log ${B}", {"B": "b"}, "/var/log/*.log b"),
    ],
)
def test_expand_follows_fluent_bit(value: str, env: dict[str, str], expected: str) -> None:
    assert expand(value, env) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("    Name x\n", "outside any section"),
        ("[INPUT]\nName x\n", "indented"),
        ("[INPUT]\n    Name x\n      Tag y\n", "indentation"),
        ("[INPUT]\n    Name\n", "no value"),
        ("[BOGUS]\n    Name x\n", "unknown section"),
        ("@INCLUDE missing-*.conf\n", "matches no file"),
        ("@FOO bar\n", "unknown command"),
    ],
)
def test_reader_rejects_what_fluent_bit_rejects(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "bad.conf"
    path.write_text(text)
    with pytest.raises(ConfigError, match=error):
        load_classic(path)


def test_time_format_translation() -> None:
    assert fluent_time_format_to_python("%Y-%m-%dT%H:%M:%S.%LZ") == "%Y-%m-%dT%H:%M:%S.%fZ"
    with pytest.raises(ConfigError):
        fluent_time_format_to_python("%S.%f")


# The bundled configuration.


def test_classic_and_yaml_describe_the_same_pipeline() -> None:
    classic, yaml_form = load_classic(CLASSIC), load_yaml(YAML)
    # The YAML form declares its parser inline; the classic one reads parsers.conf.
    assert classic.service.getall("parsers_file") == ["parsers.conf"]
    classic_service = [e for e in classic.service.normalized() if e[0] != "parsers_file"]
    assert classic_service == yaml_form.service.normalized()
    for kind in ("parsers", "inputs", "filters"):
        left = [s.normalized() for s in getattr(classic, kind)]
        right = [s.normalized() for s in getattr(yaml_form, kind)]
        assert left == right, kind
    # The one difference: the YAML form's loki output takes its labels from keys its
    # processors make (a bounded level; service_name and namespace from the record's
    # deployment fields, for an aggregator), which the classic format (no processors) cannot:
    # it reads the two from the environment and has no level label.
    assert [s.name for s in classic.outputs] == [s.name for s in yaml_form.outputs]
    from_processors = {
        "labels": (
            "job=asynclog, service_name=$_loki_service_name, namespace=$_loki_namespace,"
            " level=$_loki_level",
            "job=asynclog, service_name=${OTEL_SERVICE_NAME:-asynclog-example},"
            " namespace=${POD_NAMESPACE:-unknown}",
        ),
        "remove_keys": (
            "_loki_service_name, _loki_namespace, _loki_level, trace_id, span_id, request_id",
            "trace_id, span_id, request_id",
        ),
    }
    for left_output, right_output in zip(classic.outputs, yaml_form.outputs, strict=True):
        left, right = left_output.normalized(), right_output.normalized()
        if left_output.name == "loki":
            for key, (yaml_value, classic_value) in from_processors.items():
                assert (key, yaml_value) in right and (key, classic_value) in left, key
            right = [(k, from_processors[k][1] if k in from_processors else v) for k, v in right]
        assert left == right, left_output.name


def test_every_referenced_parser_exists(pipelines: Pipeline) -> None:
    assert pipelines.referenced_parsers(), "the tail input should name its parser"
    assert pipelines.referenced_parsers() <= pipelines.parser_names()


def test_listeners_are_on_localhost(pipelines: Pipeline) -> None:
    # Defaults, with nothing set: the health server and the OTLP receiver on loopback only.
    assert _value(pipelines.service.get("http_listen")) == "127.0.0.1"
    assert _true(pipelines.service.get("http_server"))
    assert _true(pipelines.service.get("health_check"))
    otlp = pipelines.plugin("inputs", "opentelemetry")
    # Not even an environment variable can move the OTLP receiver off loopback.
    assert otlp.get("listen") == "127.0.0.1"
    assert _value(otlp.get("port")) == "4318"
    for section in pipelines.inputs:
        listen = section.get("listen")
        assert listen is None or listen == "127.0.0.1", section.source
    metrics = pipelines.plugin("outputs", "prometheus_exporter")
    assert _value(metrics.get("host")) == "127.0.0.1"
    assert _value(metrics.get("port")) == "2021"
    assert _value(metrics.get("host"), {"FLB_METRICS_LISTEN": "10.0.0.7"}) == "10.0.0.7"


def test_log_level_comes_from_fluent_bits_own_variable(pipelines: Pipeline) -> None:
    # Fluent Bit reads FLB_LOG_LEVEL itself; with it set, a log_level key in the file makes
    # 4.2 and 5.1 refuse to start. tests/test_sidecar_fluentbit.py starts it that way.
    assert pipelines.service.get("log_level") is None


def test_parser_matches_asynclog_time(pipelines: Pipeline) -> None:
    tail = pipelines.plugin("inputs", "tail")
    parser = next(p for p in pipelines.parsers if p.name == tail.get("parser"))
    assert parser.get("format") == "json"
    assert parser.get("time_key") == "time"
    assert parser.get("time_format") == "%Y-%m-%dT%H:%M:%S.%LZ"
    assert _true(parser.get("time_keep"))


def test_time_format_parses_a_line_asynclog_wrote(log_path: Path) -> None:
    result = run_python(
        f"""
        import logging, asynclog
        asynclog.configure(sink={str(log_path)!r}, format="json")
        logging.getLogger("sidecar.check").warning("a line for the time parser")
        assert asynclog.shutdown(timeout=10)
        """
    )
    assert result.returncode == 0, result.stderr
    (line,) = read_lines(log_path)
    parser = load_classic(CLASSIC).parsers[0]
    python_format = fluent_time_format_to_python(_value(parser.get("time_format")))
    # The format's meaning: all of the string matches, the fraction is microseconds, and the
    # trailing Z is UTC (Fluent Bit applies no Time_Offset to a format ending in %S.%LZ).
    parsed = datetime.strptime(line["time"], python_format).replace(tzinfo=timezone.utc)
    assert parsed.strftime(python_format) == line["time"]
    assert len(line["time"].rsplit(".", 1)[1]) == len("123456Z")
    assert abs(datetime.now(timezone.utc) - parsed) < timedelta(minutes=5)


def test_tail_ships_from_the_volume_and_survives_restarts(pipelines: Pipeline) -> None:
    tail = pipelines.plugin("inputs", "tail")
    log_dir = "/var/log/asynclog"
    assert _value(tail.get("path")) == f"{log_dir}/*.log"
    assert _value(tail.get("path"), {"FLB_LOG_DIR": "/x"}) == "/x/*.log"
    assert Path(_value(tail.get("db"))).parent == Path(log_dir)
    assert Path(_value(pipelines.service.get("storage.path"))).parent == Path(log_dir)
    assert _true(tail.get("read_from_head"))
    # A line over the buffer is shipped cut, never skipped (nor does it stop the file).
    assert _true(tail.get("truncate_long_lines")) and tail.get("skip_long_lines") is None
    assert int(_value(tail.get("rotate_wait"))) >= 10
    assert int(_value(tail.get("refresh_interval"))) <= 10
    # Every line asynclog writes by default fits (it bounds them: tests/test_shorten.py), and
    # a cut foreign line, as the Loki output writes it (non-ASCII as \u escapes, 3x the bytes)
    # plus what the pipeline adds (~1 KB at most), fits Loki's default max_line_size (256 KiB).
    # The end-to-end check: tests/test_sidecar_long_lines.py.
    buffer_max_size = _size(_value(tail.get("buffer_max_size")))
    assert Settings.max_line_bytes < buffer_max_size
    assert 3 * buffer_max_size + 4_096 <= 256 * 1024
    assert _size(_value(tail.get("buffer_chunk_size"))) >= 32 * 1024
    assert tail.get("storage.type") == "filesystem"
    # Ignored once storage.type is filesystem: its presence would only mislead.
    assert tail.get("mem_buf_limit") is None
    assert int(_value(pipelines.service.get("storage.max_chunks_up"))) > 0


def test_outputs_are_chosen_by_environment(pipelines: Pipeline) -> None:
    names = [o.name for o in pipelines.outputs]
    assert sorted(names) == sorted(["stdout", "prometheus_exporter", *NETWORK_OUTPUTS])
    by_name = {o.name: o for o in pipelines.outputs}
    # Nothing set: stdout takes the log lines (not the metrics text), the exporter the metrics.
    assert _value(by_name["stdout"].get("match")) == "asynclog.*"
    assert by_name["prometheus_exporter"].get("match") == METRICS_TAG
    for name in NETWORK_OUTPUTS:
        output = by_name[name]
        assert _value(output.get("match")) == "disabled", name
        assert re.fullmatch(r"\$\{FLB_[A-Z]+_MATCH:-disabled\}", output.get("match") or "")
        assert _size(_value(output.get("storage.total_limit_size"))) > 0, name
        assert output.get("retry_limit") == "no_limits", name
        # The default host is never this pod: an OTLP output on 127.0.0.1:4318 would loop.
        assert _value(output.get("host")) not in ("127.0.0.1", "localhost"), name
    assert _value(by_name["es"].get("match"), {"FLB_ES_MATCH": "asynclog.*"}) == "asynclog.*"
    # No record tag is "disabled": the tail tags asynclog.*, the OTLP receiver "otel", the
    # metrics filters asynclog_metrics (which `asynclog.*` does not match).
    tags = {s.get("tag") for s in pipelines.inputs + pipelines.filters} - {None}
    assert tags == {"asynclog.*", "otel", METRICS_TAG}


def _filter(pipeline: Pipeline, alias: str) -> Section:
    (found,) = [f for f in pipeline.filters if f.get("alias") == alias]
    return found


def test_filter_adds_deployment_metadata(pipelines: Pipeline) -> None:
    # The last filter: it also removes the metrics' label copies, in the same pass.
    metadata = pipelines.filters[-1]
    assert metadata.get("alias") == "deployment_metadata"
    assert metadata.name == "modify"
    assert metadata.get("match") == "asynclog.*"
    # Set, not add: the deployment's values replace the app's fields of the same names.
    assert metadata.getall("add") == []
    added = dict(entry.split(" ", 1) for entry in metadata.getall("set"))
    assert added == {
        "service.name": "${OTEL_SERVICE_NAME:-asynclog-example}",
        "k8s.pod.name": "${POD_NAME:-unknown}",
        "k8s.namespace.name": "${POD_NAMESPACE:-unknown}",
        "k8s.node.name": "${NODE_NAME:-unknown}",
    }


# The RED metrics derived from the access lines.

# The semconv's advice for http.server.request.duration, in seconds.
# Each label of the histogram and the access-line field it comes from.
LABEL_FIELDS = {
    "http_route": "http.route",
    "http_request_method": "http.request.method",
    "http_response_status_code": "http.response.status_code",
}
SEMCONV_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]


def test_request_duration_histogram_follows_the_semantic_conventions(
    pipelines: Pipeline,
) -> None:
    histogram = _filter(pipelines, "http_server_metrics")
    assert histogram.name == "log_to_metrics"
    assert histogram.get("metric_mode") == "histogram"
    # <namespace>_<subsystem>_<name>, the Prometheus form of http.server.request.duration.
    name = "_".join(
        histogram.get(key) or "" for key in ("metric_namespace", "metric_subsystem", "metric_name")
    )
    assert name == "http_server_request_duration_seconds"
    assert histogram.get("value_field") == "$duration_s"
    assert [float(b) for b in histogram.getall("bucket")] == SEMCONV_BUCKETS
    assert histogram.getall("regex") == ["logger ^asynclog\\.access$"]
    assert histogram.get("tag") == METRICS_TAG
    assert int(histogram.get("flush_interval_sec") or 0) >= 1
    labels = dict(label.split(" ", 1) for label in histogram.getall("add_label"))
    # Each label reads a dot-free copy of its field (record accessors end a key at its first
    # dot), made on the access lines just before and removed by the last filter, which runs
    # whether or not the metrics are on.
    copy, last = _filter(pipelines, "metric_labels"), pipelines.filters[-1]
    copies = dict(entry.split(" ") for entry in copy.getall("copy"))
    assert {label: copies[field] for label, field in LABEL_FIELDS.items()} == {
        label: accessor.removeprefix("$") for label, accessor in labels.items()
    }
    assert copy.getall("condition") == ["Key_value_equals logger asynclog.access"]
    assert sorted(last.getall("remove")) == sorted(copies.values())
    assert last.get("match") == "asynclog.*"
    assert last.getall("condition") == []
    order = [f.get("alias") for f in pipelines.filters]
    assert order == [
        "metric_labels",
        "http_server_metrics",
        "asynclog_drop_metrics",
        "asynclog_unshipped_metrics",
        "deployment_metadata",
    ]


def test_drop_notices_become_a_counter(pipelines: Pipeline) -> None:
    drops = _filter(pipelines, "asynclog_drop_metrics")
    assert drops.name == "log_to_metrics"
    # A histogram of the notices' `dropped`: its _sum counts records, its _count notices.
    assert drops.get("metric_mode") == "histogram"
    assert drops.get("value_field") == "$dropped"
    # The notice's own message: asynclog's other lines (logger `asynclog`) have no `dropped`.
    assert drops.getall("regex") == ["message ^records dropped: queue full$"]
    assert drops.get("tag") == METRICS_TAG
    assert drops.getall("add_label") == []


def test_metrics_are_derived_unless_switched_off(pipelines: Pipeline) -> None:
    derived = [f for f in pipelines.filters if f.get("alias") != "deployment_metadata"]
    assert len(derived) == 4
    for section in derived:
        assert section.get("match") == "${FLB_METRICS_MATCH:-asynclog.*}"
        assert _value(section.get("match"), {"FLB_METRICS_MATCH": "disabled"}) == "disabled"
