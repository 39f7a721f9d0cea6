"""Helpers for the metrics tests: the Prometheus text format, and a real Prometheus.

`samples` reads an exposition into {(name, labels): value}. `prometheus_scraping` runs the
real Prometheus (PROMETHEUS, or `prometheus` on PATH; Debian's package in CI) on 127.0.0.1
with a temporary configuration and data directory, scraping one target every second, and
stops it by PID; `Prometheus.query` runs an instant PromQL query through its HTTP API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from _fluentbit import free_port, http_text, ready_until_done

__all__ = [
    "PROMETHEUS",
    "PROMTOOL",
    "Labels",
    "Prometheus",
    "prometheus_scraping",
    "samples",
]

Labels = frozenset[tuple[str, str]]


def _binary(variable: str, name: str) -> str | None:
    found = os.environ.get(variable) or shutil.which(name)
    return found if found and os.access(found, os.X_OK) else None


PROMETHEUS = _binary("PROMETHEUS", "prometheus")
PROMTOOL = _binary("PROMTOOL", "promtool")

# One sample line: name, optional {labels}, value (timestamps are not used here).
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(exposition: str) -> dict[tuple[str, Labels], float]:
    """Every sample of a Prometheus text exposition, keyed by name and label set."""
    found: dict[tuple[str, Labels], float] = {}
    for line in exposition.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        pairs = frozenset(_LABEL.findall(labels or ""))
        assert (name, pairs) not in found, f"duplicate sample: {line!r}"
        found[name, pairs] = float(value)
    return found


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: each series' labels and value."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        body = json.loads(http_text(url))
        assert body["status"] == "success", body
        assert body["data"]["resultType"] == "vector", body
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]

    def target_health(self) -> list[str]:
        """The health of each active scrape target ("up", "down" or "unknown")."""
        body = json.loads(http_text(f"{self.url}/api/v1/targets"))
        return [target["health"] for target in body["data"]["activeTargets"]]


@contextmanager
def prometheus_scraping(target: str, workdir: Path) -> Iterator[Prometheus]:
    """Prometheus scraping `target` (host:port, /metrics) every second, as job `asynclog`."""
    assert PROMETHEUS is not None
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: asynclog\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = free_port()
    log = workdir / "prometheus.log"
    command = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    with ready_until_done(process, log, f"{url}/-/ready", "prometheus", 60):
        yield Prometheus(process, url, log)
