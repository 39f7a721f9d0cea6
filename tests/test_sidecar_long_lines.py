"""A long line is never dropped: end to end through the shipped Fluent Bit config into a real
Loki, a record with a 3 MB field arrives shortened and marked, between its neighbours.

Needs a Fluent Bit (FLUENT_BIT or on PATH) and a Loki (LOKI, or ../shared/tools/loki/loki.xz);
skipped otherwise. The unit tests of the shortening are in tests/test_shorten.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from _fluentbit import (
    assert_no_errors_or_warnings,
    fluent_bit,
    needs_fluent_bit,
    wait_for,
)
from _loki import LokiEntry, loki_serving, needs_loki

from asynclog._line import format_time
from asynclog._settings import Settings

from conftest import ROOT, read_lines, run_python

pytestmark = [
    pytest.mark.integration,
    needs_fluent_bit,
    needs_loki,
]
NOTES = "asynclog.substituted"
AROUND = 300  # lines before and after the long records
LOKI_MAX_LINE_SIZE = 256 * 1024  # Loki's default max_line_size ("256KB"); it refuses longer


def _write_with_asynclog(sink: Path) -> None:
    """What an app writes by default: lines numbered by `seq`, and among them a record with a
    3 MB field, a stdlib exception with a 3 MB message, and one with 3 MB of non-ASCII text."""
    result = run_python(
        f"""
        import logging, asynclog
        asynclog.configure(sink={str(sink)!r}, format="json")
        log = asynclog.get_logger("e2e.long")
        for seq in range({AROUND}):
            log.info("before", seq=seq)
        log.info("huge field", seq={AROUND}, blob="b" * 3_000_000, kept="k" * 100)
        try:
            raise ValueError("v" * 3_000_000)
        except ValueError:
            std = logging.getLogger("e2e.stdlib")
            std.exception("huge exception", extra={{"seq": {AROUND + 1}}})
        log.info("huge unicode", seq={AROUND + 2}, text="日本é" * 500_000)
        for seq in range({AROUND + 3}, {2 * AROUND + 3}):
            log.info("after", seq=seq)
        assert asynclog.shutdown(timeout=30)
        """,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def _foreign_lines(path: Path) -> bytes:
    """Another writer's over-long line (no bound), between two ordinary ones."""
    now = format_time(time.time())
    lines = [
        {"time": now, "level": "info", "message": "foreign", "seq": "f0"},
        {"time": now, "level": "info", "message": "long", "seq": "f1", "blob": "f" * 400_000},
        {"time": now, "level": "info", "message": "foreign", "seq": "f2"},
    ]
    data = b"".join(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE) for line in lines)
    path.write_bytes(data)
    return data.split(b"\n")[1]


def _stored(entries: list[LokiEntry]) -> dict[Any, dict[str, Any]]:
    """Loki's lines by `seq` (a cut foreign line by the `seq` in its text); fails on a `seq`
    stored twice."""
    found: dict[Any, dict[str, Any]] = {}
    for entry in entries:
        line = entry.json()
        # What the loki output moved out of the line (`level`, a label) goes back in.
        for key, value in {**entry.labels, **entry.metadata}.items():
            line.setdefault(key, value)
        seq = line.get("seq")
        if seq is None and isinstance(line.get("log"), str) and '"seq":"f1"' in line["log"]:
            seq = "f1"
        assert seq not in found, f"seq {seq} stored twice"
        found[seq] = line
    return found


@pytest.mark.parametrize("config", ["fluent-bit.yaml", "fluent-bit.conf"])
def test_a_3_mb_record_reaches_loki_shortened_and_marked(
    tmp_path: Path, config: str, figures: Any
) -> None:
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    sink = log_dir / "app.log"
    _write_with_asynclog(sink)
    written = read_lines(sink)
    assert [line["seq"] for line in written] == list(range(2 * AROUND + 3))
    assert max(len(line) + 1 for line in sink.read_bytes().split(b"\n")[:-1]) <= (
        Settings.max_line_bytes
    )
    foreign = _foreign_lines(log_dir / "foreign.log")
    expected = {*range(2 * AROUND + 3), "f0", "f1", "f2"}

    with loki_serving(tmp_path / "loki") as loki:
        env = {
            "FLB_LOKI_MATCH": "asynclog.*",
            "FLB_LOKI_HOST": "127.0.0.1",
            "FLB_LOKI_PORT": str(loki.port),
            "FLB_STDOUT_MATCH": "disabled",
        }
        query = '{job="asynclog"}'
        started = time.monotonic()
        with fluent_bit(ROOT / config, log_dir, env) as flb:
            wait_for(
                lambda: len(loki.query(query)) >= len(expected),
                120,
                f"Loki to store all {len(expected)} lines",
            )
            caught_up = time.monotonic() - started
        entries = loki.query(query)  # Fluent Bit has stopped: anything sent late is in
    figures(
        sent=len(expected), found=len(entries), duplicates=len(entries) - len(expected),
        catch_up_s=round(caught_up, 1),
    )  # fmt: skip
    stored = _stored(entries)
    assert set(stored) == expected, "every line exactly once"
    assert_no_errors_or_warnings(flb.log)

    by_seq = {line["seq"]: line for line in written}
    # The 3 MB field: shortened, and the line says so, with its size before and after.
    huge = stored[AROUND]
    assert huge["message"] == "huge field" and huge["kept"] == "k" * 100
    assert set(huge["blob"]) == {"b"} and 30_000 < len(huge["blob"]) < Settings.max_line_bytes
    assert (
        huge[NOTES]
        == by_seq[AROUND][NOTES]
        == [
            f"blob: 3000002 bytes shortened to {len(huge['blob']) + 2} "
            f"(max_line_bytes {Settings.max_line_bytes})"
        ]
    )
    exception = stored[AROUND + 1]
    assert exception["message"] == "huge exception"
    assert exception["exception"]["type"] == "ValueError"
    assert exception["exception"]["message"].startswith("vvvv")
    assert {note.split(":")[0] for note in exception[NOTES]} == {
        "exception.message", "exception.stacktrace",
    }  # fmt: skip
    assert stored[AROUND + 2]["text"].startswith("日本é日本é")
    assert any(note.startswith("text: ") for note in stored[AROUND + 2][NOTES])
    # Every other line arrived with all its fields (the pipeline adds some).
    for seq, line in by_seq.items():
        assert {k: stored[seq].get(k) for k in line} == line, seq
    # The foreign line, over the sidecar's buffer: cut, unparsed, but shipped.
    cut = stored["f1"]["log"]
    assert foreign.decode().startswith(cut) and 60_000 < len(cut) < len(foreign)
    # Loki keeps no line over its max_line_size, so every stored line is under it whatever
    # was sent (the `seq` check above is what shows none was discarded). What the default bound
    # relies on: the loki output grows asynclog's line at most 3x (non-ASCII as \u escapes),
    # plus what the pipeline adds, which leaves room under Loki's limit.
    grown = [len(e.line.encode()) for e in entries if isinstance(e.json().get("seq"), int)]
    assert max(grown) <= 3 * Settings.max_line_bytes + 4_096 < LOKI_MAX_LINE_SIZE, max(grown)


def _readme_agent_config() -> str:
    """The node-level agent's config that sidecar/README.md shows under "On stdout"."""
    text = (ROOT / "sidecar" / "README.md").read_text()
    section = text.split("### On stdout", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_a_node_agent_joins_what_the_runtime_split(tmp_path: Path) -> None:
    """asynclog's lines on stdout, as containerd and CRI-O store them: a line over 16 KiB as
    `P` (partial) entries of 16 KiB and a last `F` one. The README's agent config (the `cri`
    multiline parser) gives back every line whole, parsed."""
    sink = tmp_path / "stdout.jsonl"
    result = run_python(
        f"""
        import asynclog
        asynclog.configure(sink={str(sink)!r}, format="json")
        log = asynclog.get_logger("e2e.cri")
        for seq in range(20):
            log.info("line", seq=seq, text="日本é" * (seq * 500), blob="b" * (seq * 2_000))
        log.info("huge", seq=20, blob="b" * 3_000_000)
        assert asynclog.shutdown(timeout=30)
        """
    )
    assert result.returncode == 0, result.stderr
    written = read_lines(sink)
    entries = []
    for line in sink.read_bytes().split(b"\n")[:-1]:
        parts = [line[i : i + 16_384] for i in range(0, len(line), 16_384)]
        for n, part in enumerate(parts):
            flag = b"F" if n == len(parts) - 1 else b"P"
            entries.append(b"2026-12-05T06:00:00.000000000Z stdout " + flag + b" " + part + b"\n")
    assert sum(b" P " in entry[:40] for entry in entries) > 20  # lines were split
    containers = tmp_path / "containers"
    containers.mkdir()
    (containers / "app_default_app-0123.log").write_bytes(b"".join(entries))
    config = tmp_path / "agent.yaml"
    agent = _readme_agent_config().replace("/var/log/containers/", f"{containers}/")
    config.write_text(
        "service:\n  flush: 1\n  http_server: on\n  http_listen: 127.0.0.1\n"
        "  http_port: ${FLB_HTTP_PORT}\n  health_check: on\n"
        + agent
        + "  outputs:\n    - name: stdout\n      match: kube.*\n      format: json_lines\n"
    )
    with fluent_bit(config, containers) as flb:
        wait_for(lambda: len(flb.records()) >= len(written), 60, "every line to be joined")
    records = flb.records()
    assert len(records) == len(written)
    for record, line in zip(records, written, strict=True):
        assert {k: record.get(k) for k in line} == line, line["seq"]
    assert_no_errors_or_warnings(flb.log)
