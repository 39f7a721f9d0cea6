"""Helpers for the delivery tests: a real Grafana Loki on loopback, and LogQL queries.

`LOKI` is the binary: LOKI names one, else `../shared/tools/loki/loki.xz` (beside the project)
is unpacked once per run into a cache outside the repository (LOKI_CACHE, default
~/.cache/asynclog-tests). `loki_serving` starts a single-process Loki on free ports of
127.0.0.1 with its data in `data_dir`, waits for /ready and stops it by PID; starting it again
on the same `data_dir` restarts it on the same data. `Loki.query` runs a LogQL range query.
"""

from __future__ import annotations

import fcntl
import json
import lzma
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _fluentbit import free_port, http_text, ready_until_done

__all__ = ["LOKI", "LOKI_SKIP_REASON", "Loki", "LokiEntry", "loki_serving", "needs_loki"]

_ROOT = Path(__file__).resolve().parent.parent
_SHIPPED = _ROOT.parent / "shared" / "tools" / "loki" / "loki.xz"


def _unpacked(archive: Path) -> str | None:
    """The binary unpacked from `archive` into the cache, once (a lock guards parallel runs)."""
    cache = Path(os.environ.get("LOKI_CACHE") or Path.home() / ".cache" / "asynclog-tests")
    cache.mkdir(parents=True, exist_ok=True)
    stat = archive.stat()
    binary = cache / f"loki-{stat.st_size}-{int(stat.st_mtime)}"
    with (cache / "loki.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            partial = binary.with_suffix(".partial")
            with lzma.open(archive) as source, partial.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            partial.chmod(0o755)
            partial.rename(binary)
    return str(binary)


def _find() -> str | None:
    named = os.environ.get("LOKI")
    if named:
        return named if os.access(named, os.X_OK) else None
    on_path = shutil.which("loki")
    if on_path:
        return on_path
    return _unpacked(_SHIPPED) if _SHIPPED.is_file() else None


LOKI = _find()
LOKI_SKIP_REASON = "no Loki: set LOKI to a loki binary, or provide ../shared/tools/loki/loki.xz"
needs_loki = pytest.mark.skipif(LOKI is None, reason=LOKI_SKIP_REASON)

_ENCODING_FLAGS = "X-Loki-Response-Encoding-Flags"

_CONFIG = """\
auth_enabled: false
server:
  http_listen_address: 127.0.0.1
  http_listen_port: {http_port}
  grpc_listen_address: 127.0.0.1
  grpc_listen_port: {grpc_port}
  log_level: warn
common:
  instance_addr: 127.0.0.1
  path_prefix: {data}
  storage:
    filesystem:
      chunks_directory: {data}/chunks
      rules_directory: {data}/rules
  replication_factor: 1
  ring:
    kvstore:
      store: inmemory
schema_config:
  configs:
    - from: 2024-01-01
      store: tsdb
      object_store: filesystem
      schema: v13
      index:
        prefix: index_
        period: 24h
# A single process needs no wait for ring peers: ready in ~2 s instead of ~15 s.
ingester:
  lifecycler:
    min_ready_duration: 0s
    final_sleep: 0s
limits_config:
  allow_structured_metadata: true
  reject_old_samples: false
  max_entries_limit_per_query: 100000
  ingestion_rate_mb: 64
  ingestion_burst_size_mb: 128
  per_stream_rate_limit: 64MB
  per_stream_rate_limit_burst: 128MB
analytics:
  reporting_enabled: false
"""


@dataclass(frozen=True)
class LokiEntry:
    """One log line as Loki returns it: its stream's labels, structured metadata and line."""

    labels: dict[str, str]
    metadata: dict[str, str]
    timestamp_ns: int
    line: str

    def json(self) -> dict[str, Any]:
        """The line parsed as JSON."""
        value = json.loads(self.line)
        assert isinstance(value, dict), self.line
        return value


@dataclass
class Loki:
    """A running Loki: its process, base URL (host:port too) and its own log."""

    process: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def query(
        self,
        logql: str,
        limit: int = 100_000,
        since_s: float = 6 * 3600,
        start_s: float | None = None,
        end_s: float | None = None,
    ) -> list[LokiEntry]:
        """Every entry a LogQL log query returns over the last `since_s` seconds (or from the
        Unix time `start_s` to `end_s`), oldest first."""
        now = time.time_ns()
        start = now - int(since_s * 1e9) if start_s is None else int(start_s * 1e9)
        end = now + 60 * 10**9 if end_s is None else int(end_s * 1e9)
        params = {
            "query": logql,
            "limit": str(limit),
            "start": str(start),
            "end": str(end),
            "direction": "forward",
        }
        url = f"{self.url}/loki/api/v1/query_range?{urllib.parse.urlencode(params)}"
        # Without this flag Loki folds structured metadata into the stream's labels.
        request = urllib.request.Request(url, headers={_ENCODING_FLAGS: "categorize-labels"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        assert body["data"]["resultType"] == "streams", body
        entries = []
        for stream in body["data"]["result"]:
            labels = stream["stream"]
            for value in stream["values"]:
                categorized = value[2] if len(value) > 2 else {}
                metadata = categorized.get("structuredMetadata") or {}
                entries.append(LokiEntry(dict(labels), dict(metadata), int(value[0]), value[1]))
        entries.sort(key=lambda entry: entry.timestamp_ns)
        return entries

    def label_values(self, label: str) -> list[str]:
        """Every value `label` has in the stored streams."""
        body = json.loads(http_text(f"{self.url}/loki/api/v1/label/{label}/values"))
        return list(body.get("data") or [])

    def labels(self) -> list[str]:
        """Every label name in the stored streams."""
        body = json.loads(http_text(f"{self.url}/loki/api/v1/labels"))
        return list(body.get("data") or [])


@contextmanager
def loki_serving(data_dir: Path, port: int | None = None) -> Iterator[Loki]:
    """A single-process Loki with its data in `data_dir`, on `port` (or a free one)."""
    assert LOKI is not None, LOKI_SKIP_REASON
    data_dir.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port = port or free_port(), free_port()
    config = data_dir / "loki.yaml"
    config.write_text(_CONFIG.format(http_port=http_port, grpc_port=grpc_port, data=data_dir))
    log = data_dir / f"loki-{http_port}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [LOKI, f"-config.file={config}"], stdout=out, stderr=out, cwd=data_dir
        )
    url = f"http://127.0.0.1:{http_port}"
    with ready_until_done(process, log, f"{url}/ready", "loki", 90):
        yield Loki(process, url, http_port, log)
