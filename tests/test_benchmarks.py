"""``python -m benchmarks --quick`` end to end: the report's structure and counts, never speed."""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from benchmarks import loadgen, report, sidecar, targets
from benchmarks.ablate import parse_variant
from benchmarks.e2e import CASES, MODES, target
from benchmarks.peers import MIX_PEERS, PEERS
from benchmarks.records import (
    AT,
    FIVE,
    MESSAGE,
    REQUEST_ID,
    SHAPES,
    check_json_lines,
    check_records,
    fields,
)

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(name="report", scope="module")
def _report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(name="results", scope="module")
def _results(report: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((report / "latest.json").read_text())
    return data


@pytest.mark.integration  # runs the benchmark or its servers
@pytest.mark.timeout(300)
def test_report_files_are_written(report: Path) -> None:
    """The markdown, the JSON and both plots land in --out, and the plots are PNGs."""
    for name in ("latest.md", "latest.json", "micro.png", "mix.png", "e2e.png"):
        assert (report / name).stat().st_size > 0, name
    for name in ("micro.png", "mix.png", "e2e.png"):
        assert (report / name).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.integration  # runs the benchmark or its servers
@pytest.mark.timeout(300)
def test_every_library_is_measured_and_checked(results: dict[str, Any]) -> None:
    """Each micro peer has figures, and its output lines were read back and counted."""
    by_name = {m["name"]: m for m in results["micro"]}
    assert set(by_name) == set(PEERS) - set(results["skipped"])
    for name, m in by_name.items():
        assert "error" not in m, (name, m.get("error"))
        assert m["caller_ns"] > 0 and m["records_per_s"] > 0
        assert m["rss_peak"] > 0 and m["rss_records"] > 0
        check = m["check"]
        assert (
            check["lines"]
            == check["valid"] + check["corrupt"] + check["duplicates"] + check["other"]
        )
        assert check["valid"] > sum(m["throughput_records"])


@pytest.mark.integration  # runs the benchmark or its servers
@pytest.mark.timeout(300)
def test_every_shape_of_the_mix_runs_against_every_mix_peer(results: dict[str, Any]) -> None:
    """Each shape x peer has figures, ratios against that shape's stdlib row, and every line
    read back; asynclog's three targets are evaluated on each shape the mix measured."""
    peers = [name for name in MIX_PEERS if name not in results["skipped"]]
    rows = {(m["shape"], m["name"]): m for m in results["mix"]}
    assert list(rows) == [(shape, name) for shape in SHAPES for name in peers]
    assert results["mix_shapes"] == {name: s.label for name, s in SHAPES.items()}
    for key, m in rows.items():
        assert "error" not in m, (key, m.get("error"))
        assert m["caller_ns"] > 0 and m["records_per_s"] > 0
        assert m["check"]["intact"], key
        assert m["check"]["valid"] > sum(m["throughput_records"]), key
        assert m["caller_x"] > 0 and m["throughput_x_structlog"] > 0
    for shape in SHAPES:
        assert rows[(shape, "stdlib-sync")]["throughput_x"] == 1.0
        assert rows[(shape, "structlog-fast")]["throughput_x_structlog"] == 1.0
    mix_targets = [t["what"] for t in results["targets"] if t["what"].startswith("mix ")]
    assert len(mix_targets) == 3 * (len(SHAPES) - 1)
    assert not any(t.startswith(f"mix {FIVE.name}:") for t in mix_targets)
    intact = next(t for t in results["targets"] if t["what"].startswith("mix: asynclog's lines"))
    assert intact["met"] and intact["unit"] == f"/{2 * (len(SHAPES) - 1)}"


@pytest.mark.integration  # runs the benchmark or its servers
@pytest.mark.timeout(300)
def test_every_mode_and_sink_is_served(results: dict[str, Any]) -> None:
    """Each e2e case served requests, and logging modes wrote lines for them."""
    cases = {(c["mode"], c["sink"]): c for c in results["e2e"]}
    assert set(cases) == {(c.mode, c.sink) for c in CASES}
    for key, c in cases.items():
        assert "error" not in c, (key, c.get("error"))
        assert c["requests_served"] > 0 and c["requests_per_s"] > 0
        assert 0 < c["p50_ms"] <= c["p99_ms"] <= c["max_ms_worst"]
        if c["mode"] != "none":
            assert c["lines_valid"] + c["dropped"] > 0, key


@pytest.mark.integration  # runs the benchmark or its servers
@pytest.mark.timeout(300)
def test_markdown_names_every_library_mode_and_target(
    report: Path, results: dict[str, Any]
) -> None:
    """The markdown has a row per library, per case and per target, and the commands."""
    text = (report / "latest.md").read_text()
    for m in results["micro"]:
        assert f"| {m['label']} |" in text
    for m in results["mix"]:
        assert f"| {m['shape']} | {m['label']} |" in text
    for name, label in results["mix_shapes"].items():
        assert f"| {name}: {label} |" in text
    for c in results["e2e"]:
        assert f"| {c['sink']} |" in text
    for t in results["targets"]:
        assert f"| {t['what']} |" in text
    assert "python -m benchmarks --quick" in text
    assert results["loadgen"] in ("wrk", "builtin")
    assert results["profile"] == "quick"


@pytest.mark.integration  # runs the benchmark or its servers
@pytest.mark.timeout(300)
def test_sidecar_is_measured_next_to_a_worker_or_skipped(
    report: Path, results: dict[str, Any]
) -> None:
    """With a Fluent Bit, both configs have figures and the report sets them against one
    worker's lines/s from the same run; without one, the report says why it is missing."""
    found = results["sidecar"]
    text = (report / "latest.md").read_text()
    assert "## Sidecar: Fluent Bit on the shipped fluent-bit.yaml" in text
    if sidecar.binary() is None:
        assert "FLUENT_BIT" in found["skipped"]
        assert f"Skipped: {found['skipped']}" in text
        return
    assert found["lines"] == 3 * sidecar.PROFILES["quick"].requests
    skipped = set(found.get("skipped_variants") or {})
    assert set(found["variants"]) == set(sidecar.VARIANTS) - skipped
    for name in skipped:
        assert f"{name}: skipped, no Loki" in text
    for name, variant in found["variants"].items():
        assert variant["lines_per_s"] > 0 and variant["cpu_s_per_100k"] > 0, name
        assert variant["peak_rss"] > 0
        (row,) = [line for line in text.splitlines() if line.startswith(f"| {name} |")]
        workers = float(row.split(" | ")[4].replace(",", ""))
        assert workers == pytest.approx(
            variant["lines_per_cpu_s"] / sidecar.worker_lines_per_s(results["e2e"]), abs=0.06
        )


def _timing_rows(shape: str, asynclog_records_per_s: float) -> list[dict[str, Any]]:
    """One shape's rows: stdlib sync, structlog and asynclog, with its lines read back intact."""
    return [
        {"shape": shape, "name": name, "label": name, "caller_ns": caller, "records_per_s": rps,
         "check": {"intact": True, "lines": 10, "corrupt": 0, "duplicates": 0, "missing": 0}}
        for name, caller, rps in (
            ("stdlib-sync", 1000.0, 1000.0),
            ("structlog-fast", 500.0, 2000.0),
            ("asynclog", 50.0, asynclog_records_per_s),
        )
    ]  # fmt: skip


def test_the_mix_applies_the_micro_record_targets_to_every_shape() -> None:
    """Each mix shape gets the micro table's record targets with its own figures, and the
    per-shape table renders the same evaluation: met, missed, or not measured."""
    mix = _timing_rows("fast", 7000.0) + _timing_rows("slow", 5000.0)
    mix.append({"shape": "lost", "name": "asynclog", "label": "asynclog", "error": "boom"})
    targets.add_mix_ratios(mix, "stdlib-sync")
    found = {t.what: t for t in targets.evaluate_mix(mix, {"fast", "slow", "lost"})}
    goals = targets.MIX_GOALS
    assert [g.column for g in goals] == [
        "caller x stdlib sync", "records/s x stdlib sync", "records/s x structlog fast",
    ]  # fmt: skip
    assert set(found) == {
        f"mix {shape}: {g.what}" for shape in ("fast", "slow", "lost") for g in goals
    } | {"mix: asynclog's lines intact on every shape"}
    assert found["mix fast: asynclog records/s vs stdlib sync"].met is True
    slow = found["mix slow: asynclog records/s vs stdlib sync"]
    assert (slow.value, slow.goal, slow.met) == (5.0, ">= 6x", False)
    assert found["mix slow: asynclog records/s vs structlog fast"].value == 2.5
    assert found["mix lost: asynclog native caller cost vs stdlib sync"].met is None
    rows = _timing_rows("five", 5000.0)
    targets.add_ratios(rows, [], "stdlib-sync")
    micro = {t.what: t for t in targets.evaluate(rows, [])}
    assert micro["micro: asynclog records/s vs stdlib sync"].value == slow.value
    table = report.mix_targets_table(mix, {"slow": "the slow one"}).splitlines()
    assert table[0] == (
        "| shape | caller x stdlib sync (<= 0.1x) | records/s x stdlib sync (>= 6x) "
        "| records/s x structlog fast (>= 2.5x) |"
    )
    assert "| slow: the slow one | 0.05x met | 5.00x **MISSED** | 2.50x met |" in table
    assert "| lost: lost | not measured | not measured | not measured |" in table


def _line(seq: int) -> bytes:
    return orjson.dumps({"message": MESSAGE, **fields(seq)}) + b"\n"


def test_asynclog_modes_apply_the_forwarded_headers_once_as_the_sidecar_ships_them() -> None:
    """Behind nginx, uvicorn's proxy headers and asynclog's middleware would both apply them;
    the asynclog modes turn uvicorn's off as sidecar/gunicorn.conf.py does, the others keep it."""
    for mode in MODES:
        config = target(mode, "stdout").config
        if not mode.startswith("asynclog"):
            assert config is None, mode
            continue
        assert config is not None, mode
        for hooks in (
            runpy.run_path(config),
            runpy.run_path(str(REPO / "sidecar" / "gunicorn.conf.py")),
        ):
            worker = SimpleNamespace(config=SimpleNamespace(proxy_headers=True))
            hooks["post_worker_init"](worker)
            assert worker.config.proxy_headers is False, mode


def test_line_check_flags_lost_duplicated_and_corrupt_records(tmp_path: Path) -> None:
    """The checker the report relies on: every record once, intact, or it is counted."""
    path = tmp_path / "out.jsonl"
    path.write_bytes(_line(0) + _line(1) + _line(1) + _line(3)[:25] + b"\n" + b"[1]\n")
    check = check_records(path, expected=4)
    assert check.lines == 5
    assert (check.valid, check.duplicates, check.corrupt, check.missing) == (2, 1, 2, 2)
    assert not check.intact
    assert check.samples[0].startswith('{"message"')


class _Recorder:
    """A logger stand-in that keeps what `info` was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def info(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append((args, kwargs))


@pytest.mark.parametrize("shape", SHAPES.values(), ids=list(SHAPES))
def test_a_shapes_keyword_call_passes_exactly_its_fields(shape: Any) -> None:
    """The keyword call (asynclog, structlog, loguru) and the dict (`extra=`) hold the same."""
    recorder = _Recorder()
    shape.keywords(recorder)(41)
    assert recorder.calls == [((MESSAGE,), shape.fields(41))]
    assert shape.fields(41)["seq"] == 41
    assert len(shape.fields(0)) == int(shape.label.split()[0])


def test_line_check_reads_datetimes_and_uuids_as_either_json_encoder_writes_them(
    tmp_path: Path,
) -> None:
    """orjson's `T` and `json.dumps(default=str)`'s space both pass; another instant does not."""
    shape = SHAPES["datetime-uuid"]
    orjson_line = orjson.dumps({"message": MESSAGE, **shape.fields(0)}) + b"\n"
    stdlib_line = json.dumps({"message": MESSAGE, **shape.fields(1)}, default=str).encode()
    later = {**shape.fields(2), "at": AT.replace(hour=13)}
    wrong_id = {**shape.fields(3), "request_id": str(REQUEST_ID).replace("8", "9")}
    path = tmp_path / "out.jsonl"
    path.write_bytes(
        orjson_line
        + stdlib_line
        + b"\n"
        + orjson.dumps({"message": MESSAGE, **later})
        + b"\n"
        + orjson.dumps({"message": MESSAGE, **wrong_id})
        + b"\n"
    )
    assert b" 12:00:00+00:00" in stdlib_line and b"T12:00:00+00:00" in orjson_line
    check = check_records(path, expected=4, shape=shape)
    assert (check.valid, check.corrupt, check.missing) == (2, 2, 2)


def test_line_check_reads_an_enum_member_as_its_value_or_its_name(tmp_path: Path) -> None:
    """orjson writes the member's value, `json.dumps(default=str)` its name; another member's
    value, or the value's text in another type, does not pass."""
    shape = SHAPES["nested-uuid-enum"]
    orjson_line = orjson.dumps({"message": MESSAGE, **shape.fields(0)})
    stdlib_line = json.dumps({"message": MESSAGE, **shape.fields(1)}, default=str).encode()
    other = {**shape.fields(2), "plan": "free"}
    path = tmp_path / "out.jsonl"
    path.write_bytes(
        orjson_line + b"\n" + stdlib_line + b"\n" + orjson.dumps({"message": MESSAGE, **other})
    )
    assert b'"plan":"pro"' in orjson_line and b'"plan": "Plan.PRO"' in stdlib_line
    check = check_records(path, expected=3, shape=shape)
    assert (check.valid, check.corrupt, check.missing) == (2, 1, 1)


def test_line_check_compares_nested_fields_where_loguru_keeps_them(tmp_path: Path) -> None:
    """Fields inside `record.extra` count; a changed value inside a nested dict does not."""
    shape = SHAPES["nested"]
    good = {"text": MESSAGE, "record": {"message": MESSAGE, "extra": shape.fields(0)}}
    changed = shape.fields(1)
    changed["account"]["plan"] = "free"
    path = tmp_path / "out.jsonl"
    path.write_bytes(
        orjson.dumps(good) + b"\n" + orjson.dumps({"message": MESSAGE, **changed}) + b"\n"
    )
    check = check_records(path, expected=2, shape=shape)
    assert (check.valid, check.corrupt) == (1, 1)


def test_line_check_counts_asynclog_drop_notices_and_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    notice = orjson.dumps({"logger": "asynclog", "message": "dropped", "dropped": 7})
    path.write_bytes(_line(0) + notice + b"\n" + _line(1)[:30] + b"\n")
    check = check_json_lines(path)
    assert (check.valid, check.dropped_reported, check.corrupt) == (1, 7, 1)
    assert check.torn_tail


def test_ablate_reads_variants_and_rejects_bad_ones() -> None:
    variant = parse_variant("asynclog:BENCH_ASYNCLOG_APP=bench,ASYNCLOG_QUEUE_SIZE=1")
    assert (variant.mode, variant.env) == (
        "asynclog",
        {"BENCH_ASYNCLOG_APP": "bench", "ASYNCLOG_QUEUE_SIZE": "1"},
    )
    with pytest.raises(ValueError, match="'nosuch' is not one of"):
        parse_variant("nosuch")
    with pytest.raises(ValueError, match="'BENCH_LINES' is not NAME=value"):
        parse_variant("asynclog:BENCH_LINES")


def _ablate(*variants: str) -> subprocess.CompletedProcess[str]:
    """One short round of `python -m benchmarks.ablate` over `variants`."""
    return subprocess.run(
        [
            sys.executable, "-m", "benchmarks.ablate", *variants,
            "--rounds=1", "--duration=1", "--warmup=0",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )  # fmt: skip


@pytest.mark.integration  # runs the benchmark or its servers
@pytest.mark.timeout(120)
def test_ablate_compares_variants_with_cpu_per_thread() -> None:
    """One short round of two variants: a row each, the worker's CPU split by thread."""
    proc = _ablate("none", "asynclog:BENCH_ASYNCLOG_APP=bench,BENCH_LINES=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| none",
        "| asynclog:BENCH_ASYNCLOG_APP=bench,BENCH_LINES=0",
    ]
    none, asynclog = (row.strip("| ").split(" | ") for row in rows)
    assert none[2] == "1.000x"
    # The event-loop thread, then asynclog's writer and watchdog threads.
    assert len(asynclog[6].split(" / ")) >= 3
    assert float(asynclog[5]) > 0


@pytest.mark.integration  # runs the benchmark or its servers
@pytest.mark.timeout(120)
def test_ablate_reports_a_server_that_will_not_boot() -> None:
    proc = _ablate("none", "asynclog:ASYNCLOG_QUEUE_SIZE=0")
    assert proc.returncode == 1
    assert "server exited with 3 while booting" in proc.stderr
    assert "| variant |" not in proc.stdout


def test_builtin_load_generator_reopens_a_connection_the_server_closes() -> None:
    """nginx ends a keep-alive connection after `keepalive_requests` (1000) with `Connection:
    close`: the built-in generator opens another, as wrk does, instead of stopping there."""

    async def three_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for n in range(3):
                await reader.readuntil(b"\r\n\r\n")
                close = b"Connection: close\r\n" if n == 2 else b""
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + close + b"\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the generator's deadline closed this connection mid-request
        finally:
            # Closed on every path: an unclosed transport is a ResourceWarning that pytest
            # (warnings as errors) pins on whichever test runs when it is collected.
            writer.close()

    async def load() -> dict[str, Any]:
        server = await asyncio.start_server(three_then_close, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await loadgen.generate(f"http://127.0.0.1:{port}/", 2, 0.3)

    result = asyncio.run(load())
    assert result["errors"] == 0, result
    assert result["requests"] > 2 * 3, result
