"""Whatever a caller passes, exactly one valid JSON line comes out and nothing raises."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asynclog
from asynclog._encoder import Encoder
from asynclog._redact import Redactor

from conftest import read_lines


def _record(msg: Any, args: Any = None, fields: Any = None) -> tuple[Any, ...]:
    return (1_764_000_000.123456, 20, "t", msg, args, fields, {}, {}, None, None)


ENCODER = Encoder(Redactor(frozenset({"password"})))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
odd_values = (
    json_values
    | st.integers(min_value=2**64, max_value=2**200)
    | st.binary(max_size=20)
    | st.sampled_from(["\ud800", "a\udfffb"])
    | st.dictionaries(st.integers() | st.tuples(st.integers()), st.integers(), max_size=3)
    | st.sets(st.integers(), max_size=3)
    | st.datetimes()
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(msg=st.text() | st.integers() | st.none(), fields=st.dictionaries(st.text(), odd_values))
def test_any_fields_give_one_valid_line(msg: Any, fields: dict[str, Any]) -> None:
    data = ENCODER.encode(_record(msg, None, fields))
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    line = json.loads(data)
    assert line["logger"] == "t"


@settings(max_examples=300)
@given(template=st.text(), args=st.lists(odd_values, max_size=3).map(tuple))
def test_mismatched_percent_templates_give_one_valid_line(
    template: str, args: tuple[Any, ...]
) -> None:
    data = ENCODER.encode(_record(template, args or None))
    assert data.count(b"\n") == 1
    json.loads(data)


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_unencodable_values_are_substituted_with_a_marker(log_path: Path) -> None:
    asynclog.configure(sink=str(log_path), format="json")
    cycle: list[Any] = [1]
    cycle.append(cycle)
    asynclog.get_logger("bad").info(
        "odd", big=2**70, keys={(1, 2): "t"}, cycle=cycle, obj=_BadRepr(), s="\ud800"
    )
    asynclog.get_logger("bad").info(_BadRepr())  # type: ignore[arg-type]
    logging.getLogger("bad").info("%s", _BadRepr())
    assert asynclog.flush(5)
    first, second, third = read_lines(log_path)
    assert first["big"] == str(2**70)
    assert first["keys"] == {"(1, 2)": "t"}
    assert first["obj"] == "<unrepresentable _BadRepr>"
    assert first["s"] == "\\ud800"
    notes = " ".join(first["asynclog.substituted"])
    for what in ("big", "keys", "cycle", "obj", "s"):
        assert what in notes
    assert second["message"] == "<unprintable _BadRepr>"
    assert "asynclog.substituted" in second
    assert "asynclog.substituted" in third
    assert asynclog.stats()["written"] == 3


def test_rich_types_are_encoded_natively(log_path: Path) -> None:
    from pydantic import BaseModel

    class User(BaseModel):
        name: str

    asynclog.configure(sink=str(log_path), format="json")
    uid = uuid.uuid4()
    asynclog.get_logger("types").info(
        "types",
        when=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        uid=uid,
        color=Color.RED,
        point=Point(1, 2),
        arr=np.arange(3),
        user=User(name="ann"),
    )
    asynclog.flush(5)
    [line] = read_lines(log_path)
    assert line["when"] == "2026-01-02T03:04:05+00:00"
    assert line["uid"] == str(uid)
    assert line["color"] == "red"
    assert line["point"] == {"x": 1, "y": 2}
    assert line["arr"] == [0, 1, 2]
    assert line["user"] == {"name": "ann"}
    assert "asynclog.substituted" not in line
