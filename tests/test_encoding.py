"""Rich values are encoded natively. Hostile input (what orjson refuses, `%` mismatches,
generated values): tests/test_hostile_input.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from pathlib import Path

import numpy as np

import asynclog

from conftest import read_lines


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


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
