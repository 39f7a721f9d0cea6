"""The contract between the Python side and the C extension (`asynclog._contract`): the Python
side has what it declares, and an extension built for another contract refuses to load."""

from __future__ import annotations

import ast
import os

import orjson
import pytest

from asynclog import _accel, _contract
from asynclog._encoder import Encoder
from asynclog._line import format_time
from asynclog._logger import Logger
from asynclog._queue import RecordQueue
from asynclog._redact import Redactor

from conftest import ROOT, run_python

speedups = _accel.speedups
needs_extension = pytest.mark.skipif(
    speedups is None and not os.environ.get("ASYNCLOG_REQUIRE_EXTENSIONS"),
    reason="the C extension is not built (no C compiler at install time)",
)


def _asynclog_imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / "asynclog" / f"{module}.py").read_text())
    return {
        node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0
    }


def test_the_contract_and_the_record_are_at_the_bottom_of_the_imports() -> None:
    """Any module may import them, at any point of asynclog's import, with no circle."""
    assert _asynclog_imports("_contract") == set()
    assert _asynclog_imports("_record") == {"_contract"}
    assert "_compat" not in _asynclog_imports("_queue")


def test_the_queue_and_the_logger_have_the_attributes_c_reads() -> None:
    queue = RecordQueue()
    assert [name for name in _contract.QUEUE_ATTRIBUTES if not hasattr(queue, name)] == []
    logger = Logger("app", {"a": 1})
    assert [name for name in _contract.LOGGER_ATTRIBUTES if not hasattr(logger, name)] == []


def test_a_line_starts_with_the_keys_c_writes_first() -> None:
    class Otel:  # any true value: the span ids come from the encoder's lookup
        pass

    encoder = Encoder(Redactor(frozenset()))
    encoder._span_ids = lambda otel: ("0" * 32, "1" * 16)  # type: ignore[method-assign]
    record = (1796084572.25, 20, "app", "m", None, {"n": 1}, {}, {}, Otel(), None)
    line = orjson.loads(encoder.encode(record))
    assert tuple(line)[: len(_contract.LINE_KEYS)] == _contract.LINE_KEYS


def test_a_redactor_with_more_words_than_c_tracks_trusts_no_frozen_bytes() -> None:
    keys = [f"k{i}_w{i}" for i in range(_contract.RULE_WORDS // 2)]
    assert Redactor(frozenset(keys)).json_rule is not None
    assert Redactor(frozenset([*keys, "one_more"])).json_rule is None


def test_time_stamps_are_written_up_to_the_last_time() -> None:
    assert format_time(_contract.LAST_TIME - 1.0) == "9999-12-31T23:59:59.000000Z"
    encoder = Encoder(Redactor(frozenset()))
    record = (_contract.LAST_TIME, 20, "app", "m", None, {}, {}, {}, None, None)
    assert b"9999" not in encoder.encode(record)


@needs_extension
def test_the_extension_was_built_for_this_contract() -> None:
    assert speedups is not None
    declared = {
        name: getattr(_contract, name)
        for name in speedups.CONTRACT
        if name not in ("EncodeConfig", "CaptureConfig")
    }
    declared["EncodeConfig"] = _contract.EncodeConfig._fields
    declared["CaptureConfig"] = _contract.CaptureConfig._fields
    assert declared == speedups.CONTRACT


@needs_extension
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("contract.RULE_WORDS = 65", "RULE_WORDS = 64, but asynclog._contract declares 65"),
        ("contract.LAST_TIME = 1e12", "LAST_TIME = 253402300800.0, but"),
        (
            "contract.QUEUE_ATTRIBUTES = contract.QUEUE_ATTRIBUTES[:-1] + ('spill',)",
            "'overflow'), but asynclog._contract declares (",
        ),
        ("contract.LOGGER_ATTRIBUTES = ('name', 'bound')", "('name', '_bound'), but"),
        ("del contract.LINE_KEYS", "but asynclog._contract has no LINE_KEYS"),
        (
            "contract.CaptureConfig = collections.namedtuple("
            "'CaptureConfig', contract.CaptureConfig._fields[::-1])",
            "CaptureConfig = ('queue',",
        ),
    ],
)
def test_an_extension_built_for_another_contract_refuses_to_load(change: str, message: str) -> None:
    result = run_python(
        f"""
        import collections, importlib, importlib.util, pathlib, sys, warnings
        path = pathlib.Path("asynclog/_contract.py").resolve()
        spec = importlib.util.spec_from_file_location("asynclog._contract", path)
        contract = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(contract)
        {change}
        sys.modules["asynclog._contract"] = contract
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from asynclog import _accel
        print(_accel.speedups)
        print(*[str(w.message) for w in caught], sep="\\n")
        try:
            importlib.import_module("asynclog._speedups")
        except ImportError as exc:
            print("ImportError:", exc)
        """,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    first, warning, error = result.stdout.splitlines()[:3]
    assert first == "None"
    assert message in warning and "pure-Python path runs" in warning
    assert error.startswith("ImportError: asynclog._speedups was built for ")
    assert message in error and "rebuild the extension" in error
