"""Helpers for the sidecar tests: a reader for Fluent Bit configurations, and real processes.

`load_classic` reads the classic format: `[SECTION]` headers, `key value` lines, `#` comments,
`@INCLUDE` (a glob, relative to the including file) and `@SET`. `load_yaml` reads the YAML
format. Both return the same `Pipeline`, with `${NAME}` and `${NAME:-default}` left in place;
`expand` substitutes them like Fluent Bit 4.2.5+ (an `@SET` variable wins over the process
environment, and an empty variable counts as unset).

`gunicorn_serving` runs the example app under sidecar/gunicorn.conf.py on a free port of
127.0.0.1, `fluent_bit` runs the real Fluent Bit (FLUENT_BIT, or `fluent-bit` on PATH) on a
bundled config, `otlp_receiver` runs it as an OTLP/HTTP receiver whose exports a test decodes,
and `stop_process` stops what a test started, by PID, with bounded waits.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from _server import free_port, wait_for

__all__ = [
    "FLUENT_BIT",
    "METADATA",
    "ConfigError",
    "FluentBit",
    "Gunicorn",
    "OtlpReceiver",
    "Pipeline",
    "Section",
    "assert_no_errors_or_warnings",
    "expand",
    "fluent_bit",
    "fluent_time_format_to_python",
    "free_port",
    "gunicorn_serving",
    "http_get",
    "http_text",
    "load_classic",
    "load_yaml",
    "needs_fluent_bit",
    "otlp_receiver",
    "stop_process",
    "wait_for",
]

_VARIABLE = re.compile(r"\$\{([^}:]+)(?::-([^}]*))?\}")
_BOOLEANS = {
    "on": "true",
    "true": "true",
    "yes": "true",
    "off": "false",
    "false": "false",
    "no": "false",
}


class ConfigError(ValueError):
    """The file is not valid in the format it claims to be."""


@dataclass
class Section:
    """One `[NAME]` section (or one YAML list item): its entries, in file order."""

    kind: str
    entries: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""
    # A plugin's processors (YAML only: the classic format has none), as the YAML holds them.
    processors: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: str | None = None) -> str | None:
        """The last value of `key` (case-insensitive), as Fluent Bit lets a later one win."""
        values = self.getall(key)
        return values[-1] if values else default

    def getall(self, key: str) -> list[str]:
        """Every value of a key that may repeat, such as a modify filter's `Add`."""
        key = key.lower()
        return [value for name, value in self.entries if name == key]

    @property
    def name(self) -> str:
        return (self.get("name") or "").lower()

    def normalized(self) -> list[tuple[str, str]]:
        """Entries with booleans spelled one way, sorted, for comparing two formats."""
        return sorted((key, _BOOLEANS.get(value.lower(), value)) for key, value in self.entries)


@dataclass
class Pipeline:
    """A whole configuration: service settings, parsers and the three plugin lists."""

    service: Section = field(default_factory=lambda: Section("service"))
    parsers: list[Section] = field(default_factory=list)
    inputs: list[Section] = field(default_factory=list)
    filters: list[Section] = field(default_factory=list)
    outputs: list[Section] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def parser_names(self) -> set[str]:
        return {p.name for p in self.parsers}

    def referenced_parsers(self) -> set[str]:
        """Parser names that inputs and filters use (tail `Parser`, parser filter `Parser`)."""
        names: set[str] = set()
        for section in self.inputs + self.filters:
            for key in ("parser", "docker_mode_parser", "parser_firstline"):
                names.update(v.lower() for v in section.getall(key))
        return names

    def plugin(self, kind: str, name: str) -> Section:
        """The only plugin of `kind` ("inputs", ...) named `name`."""
        found = [s for s in getattr(self, kind) if s.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one {name!r} in {kind}, found {len(found)}")
        return found[0]


def expand(
    value: str, environ: Mapping[str, str], variables: Mapping[str, str] | None = None
) -> str:
    """Substitute `${NAME}` and `${NAME:-default}` as Fluent Bit does."""

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = (variables or {}).get(name) or environ.get(name) or ""
        if not found and default is not None:
            return default
        return found

    return _VARIABLE.sub(substitute, value)


def fluent_time_format_to_python(time_format: str) -> str:
    """A strptime format for Python equal in meaning to a Fluent Bit `Time_Format`.

    Fluent Bit reads `%L` as the fraction of a second (it accepts up to nine digits; Python's
    `%f` up to six, which is what asynclog writes). Every other directive used here means the
    same in both.
    """
    if "%f" in time_format:
        raise ConfigError("%f is not a Fluent Bit directive; Fluent Bit spells it %L")
    return time_format.replace("%L", "%f")


def load_classic(path: str | os.PathLike[str]) -> Pipeline:
    """Parse a classic-format file and the parsers files its `[SERVICE]` names."""
    pipeline = Pipeline()
    _read_classic(Path(path), pipeline, seen=set(), main=True)
    base = Path(path).parent
    for parsers_file in pipeline.service.getall("parsers_file"):
        parsers_path = base / expand(parsers_file, os.environ, pipeline.variables)
        if not parsers_path.is_file():
            raise ConfigError(f"{path}: Parsers_File {parsers_file} does not exist")
        _read_classic(parsers_path, pipeline, seen=set(), main=False)
    return pipeline


def _read_classic(path: Path, pipeline: Pipeline, seen: set[Path], main: bool) -> None:
    real = path.resolve()
    if real in seen:
        raise ConfigError(f"{path}: included twice")
    seen.add(real)
    pipeline.files.append(path)
    current: Section | None = None
    indent: str | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{path}:{number}"
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("@"):
            if line != stripped:
                raise ConfigError(f"{where}: commands start at column 0")
            _command(stripped, path, pipeline, seen, main, where)
            continue
        if stripped.startswith("["):
            if line != stripped or not stripped.endswith("]"):
                raise ConfigError(f"{where}: malformed section header {stripped!r}")
            current = _new_section(stripped[1:-1].strip().lower(), pipeline, main, where)
            indent = None
            continue
        if current is None:
            raise ConfigError(f"{where}: entry outside any section")
        leading = line[: len(line) - len(line.lstrip())]
        if not leading:
            raise ConfigError(f"{where}: entries must be indented under their section")
        if indent is None:
            indent = leading
        elif leading != indent:
            raise ConfigError(f"{where}: indentation differs from the section's first entry")
        key, _, value = stripped.partition(" ")
        value = value.strip()
        if not value:
            raise ConfigError(f"{where}: key {key!r} has no value")
        current.entries.append((key.lower(), value))


def _command(
    line: str, path: Path, pipeline: Pipeline, seen: set[Path], main: bool, where: str
) -> None:
    command, _, argument = line.partition(" ")
    argument = argument.strip()
    if command.upper() == "@INCLUDE":
        pattern = argument if os.path.isabs(argument) else str(path.parent / argument)
        matches = sorted(glob.glob(pattern))
        if not matches:
            raise ConfigError(f"{where}: @INCLUDE {argument} matches no file")
        for match in matches:
            _read_classic(Path(match), pipeline, seen, main)
    elif command.upper() == "@SET":
        name, equals, value = argument.partition("=")
        if not equals or not name.strip():
            raise ConfigError(f"{where}: @SET needs NAME=VALUE")
        pipeline.variables[name.strip()] = value.strip()
    else:
        raise ConfigError(f"{where}: unknown command {command}")


def _new_section(kind: str, pipeline: Pipeline, main: bool, where: str) -> Section:
    if not main and kind not in ("parser", "multiline_parser"):
        raise ConfigError(f"{where}: a parsers file holds only [PARSER] sections, not [{kind}]")
    if kind == "service":
        return pipeline.service
    lists = {
        "input": pipeline.inputs,
        "filter": pipeline.filters,
        "output": pipeline.outputs,
        "parser": pipeline.parsers,
    }
    if kind not in lists:
        raise ConfigError(f"{where}: unknown section [{kind}]")
    section = Section(kind, source=where)
    lists[kind].append(section)
    return section


def load_yaml(path: str | os.PathLike[str]) -> Pipeline:
    """Parse a YAML-format file. Every scalar stays a string, as Fluent Bit reads them."""
    text = Path(path).read_text(encoding="utf-8")
    # BaseLoader keeps `on`, `5` and `true` as the strings Fluent Bit sees.
    document = yaml.load(text, Loader=yaml.BaseLoader)
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: not a mapping")
    unknown = set(document) - {"service", "parsers", "pipeline", "env", "includes"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}")
    pipeline = Pipeline(files=[Path(path)])
    pipeline.variables.update(document.get("env") or {})
    pipeline.service = _yaml_section("service", document.get("service") or {}, path)
    pipeline.parsers = [_yaml_section("parser", p, path) for p in document.get("parsers") or []]
    flow = document.get("pipeline") or {}
    for key in ("inputs", "filters", "outputs"):
        sections = [_yaml_section(key[:-1], item, path) for item in flow.get(key) or []]
        setattr(pipeline, key, sections)
    for parsers_file in pipeline.service.getall("parsers_file"):
        _read_classic(Path(path).parent / parsers_file, pipeline, seen=set(), main=False)
    return pipeline


def _yaml_section(kind: str, mapping: object, path: str | os.PathLike[str]) -> Section:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{path}: a {kind} must be a mapping, not {mapping!r}")
    section = Section(kind, source=str(path))
    for key, value in mapping.items():
        if key == "processors" and kind in ("input", "output"):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: a {kind}'s processors must be a mapping")
            section.processors = value
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            if not isinstance(item, str):
                raise ConfigError(f"{path}: {kind} key {key!r} holds {item!r}")
            section.entries.append((key.lower(), item))
    return section


# Real processes for the sidecar tests: gunicorn serving the example app, and Fluent Bit.


def http_get(url: str, headers: Mapping[str, str] | None = None, timeout: float = 30) -> int:
    """GET `url` on a new connection and return the status code (4xx and 5xx included)."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.read()
        return int(error.code)


def http_text(url: str, timeout: float = 30) -> str:
    """The body of a GET that must answer 200, as text."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode("utf-8"))


def stop_process(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM `process` and wait; SIGKILL it and its children by PID if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        process.wait(10)
        raise


@contextmanager
def ready_until_done(
    process: subprocess.Popen[bytes], log: Path, ready_url: str, what: str, timeout: float
) -> Iterator[None]:
    """Wait until `ready_url` answers 200 (raising with `log` if `process` exits first), run the
    block, then stop `process` by PID if it still runs."""

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')}")
        try:
            return http_get(ready_url, timeout=2) == 200
        except OSError:  # not listening yet
            return False

    try:
        wait_for(ready, timeout, f"{what} to be ready")
        yield
    finally:
        if process.poll() is None:
            stop_process(process, timeout=30)


@dataclass
class Gunicorn:
    """A gunicorn master started with sidecar/gunicorn.conf.py on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    url: str
    output: Path

    def stop(self) -> int:
        return stop_process(self.process)


@contextmanager
def gunicorn_serving(
    root: Path,
    sink: Path,
    workers: int = 2,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> Iterator[Gunicorn]:
    """Serve example.app:app with `workers` workers that all append to `sink`; `args` are
    gunicorn options that override the configuration file's."""
    port = free_port()
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": str(root),
        "ASYNCLOG_SINK": str(sink),
        "ASYNCLOG_FORMAT": "json",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(workers),
    }
    output = sink.with_name(sink.name + ".gunicorn-output")
    command = [sys.executable, "-m", "gunicorn", "--config", "sidecar/gunicorn.conf.py"]
    with output.open("wb") as out:
        process = subprocess.Popen(
            [*command, *args, "example.app:app"], cwd=root, env=env, stdout=out, stderr=out
        )
    server = Gunicorn(process, f"http://127.0.0.1:{port}", output)
    try:
        started = "Application startup complete."

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {output.read_text(errors='replace')}")
            text = sink.read_text(errors="replace") if sink.exists() else ""
            return text.count(started) >= workers

        wait_for(ready, 60, f"{workers} workers to start")
        yield server
    finally:
        if process.poll() is None:
            stop_process(process)


# The real Fluent Bit: FLUENT_BIT names the binary (.ci/run sets it), else `fluent-bit` on PATH.
FLUENT_BIT = os.environ.get("FLUENT_BIT") or shutil.which("fluent-bit")
if FLUENT_BIT and not os.access(FLUENT_BIT, os.X_OK):
    FLUENT_BIT = None  # a FLUENT_BIT pointing nowhere counts as absent
# The mark of every test that runs it.
needs_fluent_bit = pytest.mark.skipif(
    not FLUENT_BIT, reason="no Fluent Bit: set FLUENT_BIT=/path/to/fluent-bit or put it on PATH"
)

# What the tests run Fluent Bit with, for the deployment metadata the modify filter adds.
METADATA = {
    "service.name": "svc-e2e",
    "k8s.pod.name": "pod-e2e",
    "k8s.namespace.name": "ns-e2e",
    "k8s.node.name": "node-e2e",
}
# Expected in Fluent Bit's log: the shutdown notice.
EXPECTED_WARNINGS = ("service will shutdown in max",)


@dataclass
class FluentBit:
    """A running Fluent Bit: its process, its stdout and its own log, and its ports."""

    process: subprocess.Popen[bytes]
    stdout: Path
    log: Path
    otlp_port: int
    metrics_port: int

    def records(self) -> list[dict[str, Any]]:
        """The JSON lines the stdout output printed (trace and metrics dumps are not)."""
        text = self.stdout.read_text(encoding="utf-8", errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def metrics(self) -> str:
        """What the prometheus_exporter output serves at /metrics now."""
        return http_text(f"http://127.0.0.1:{self.metrics_port}/metrics")


@contextmanager
def fluent_bit(
    config: Path, log_dir: Path, env: Mapping[str, str] | None = None, name: str = "fluent-bit"
) -> Iterator[FluentBit]:
    """Fluent Bit on `config`, tailing `log_dir`, listening on free ports of 127.0.0.1, with
    METADATA as its deployment; `env` adds variables (outputs, log level) or replaces the
    deployment's. Its stdout and log are `name`.out and `name`.log beside `log_dir` (a restart
    under another name keeps the first ones)."""
    http_port, otlp_port, metrics_port = free_port(), free_port(), free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLB_")}
    environ.update(
        OTEL_SERVICE_NAME=METADATA["service.name"],
        POD_NAME=METADATA["k8s.pod.name"],
        POD_NAMESPACE=METADATA["k8s.namespace.name"],
        NODE_NAME=METADATA["k8s.node.name"],
    )
    environ.update(env or {})
    environ.update(
        FLB_LOG_DIR=str(log_dir),
        FLB_HTTP_PORT=str(http_port),
        FLB_OTLP_PORT=str(otlp_port),
        FLB_METRICS_PORT=str(metrics_port),
    )
    stdout, log = log_dir.parent / f"{name}.out", log_dir.parent / f"{name}.log"
    assert FLUENT_BIT is not None
    with stdout.open("wb") as out, log.open("wb") as err:
        process = subprocess.Popen(
            [FLUENT_BIT, "-c", str(config)], stdout=out, stderr=err, env=environ
        )
    health = f"http://127.0.0.1:{http_port}/api/v1/health"
    with ready_until_done(process, log, health, "fluent-bit", 60):
        yield FluentBit(process, stdout, log, otlp_port, metrics_port)


def assert_no_errors_or_warnings(log: Path) -> None:
    """Fluent Bit's own log has no error or warning beyond the expected ones."""
    problems = [
        line
        for line in log.read_text(errors="replace").splitlines()
        if re.search(r"\[\s*(error|warn)\]|unknown configuration property", line)
        and not any(ok in line for ok in EXPECTED_WARNINGS)
    ]
    assert not problems, "\n".join(problems)


# A second Fluent Bit as the OTLP receiver: its opentelemetry input on loopback, and a stdout
# output printing every export it decoded as one OTLP/JSON document a line.
_RECEIVER = """\
service:
  flush: 1
  http_server: on
  http_listen: 127.0.0.1
  http_port: {http_port}
pipeline:
  inputs:
    - name: opentelemetry
      listen: 127.0.0.1
      port: {port}
  outputs:
    - name: stdout
      match: "*"
      format: otlp_json
"""


@dataclass
class OtlpReceiver:
    """A running OTLP/HTTP receiver: its port, and what it decoded."""

    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    log: Path

    def exports(self) -> list[dict[str, Any]]:
        """Every export request received, as OTLP/JSON (resourceLogs, resourceSpans, ...)."""
        text = self.stdout.read_text(encoding="utf-8", errors="replace")
        return [json.loads(line) for line in text.split("\n") if line.startswith("{")]

    def log_records(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Every LogRecord received, with the Resource it came under."""
        return [
            (resource_logs.get("resource") or {}, record)
            for export in self.exports()
            for resource_logs in export.get("resourceLogs") or []
            for scope_logs in resource_logs.get("scopeLogs") or []
            for record in scope_logs.get("logRecords") or []
        ]

    def spans(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Every span received, with the Resource it came under."""
        return [
            (resource_spans.get("resource") or {}, span)
            for export in self.exports()
            for resource_spans in export.get("resourceSpans") or []
            for scope_spans in resource_spans.get("scopeSpans") or []
            for span in scope_spans.get("spans") or []
        ]


@contextmanager
def otlp_receiver(workdir: Path) -> Iterator[OtlpReceiver]:
    """The real Fluent Bit as an OTLP/HTTP receiver on a free port of 127.0.0.1."""
    assert FLUENT_BIT is not None
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, port = free_port(), free_port()
    config = workdir / "receiver.yaml"
    config.write_text(_RECEIVER.format(http_port=http_port, port=port))
    stdout, log = workdir / "receiver.out", workdir / "receiver.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FLB_")}
    with stdout.open("wb") as out, log.open("wb") as err:
        process = subprocess.Popen(
            [FLUENT_BIT, "-c", str(config)], stdout=out, stderr=err, env=environ
        )
    health = f"http://127.0.0.1:{http_port}/"
    with ready_until_done(process, log, health, "the OTLP receiver", 60):
        yield OtlpReceiver(process, port, stdout, log)
