from collections.abc import Callable
from typing import Any

from ._contract import CaptureConfig, EncodeConfig

def encode_into(
    records: list[tuple[Any, ...]], buffer: bytearray, options: int, config: EncodeConfig, /
) -> list[int]: ...

class LevelMethod:
    def __init__(self, level: int, name: str, config: CaptureConfig) -> None: ...
    def __call__(self, logger: Any, msg: object, /, *args: Any, **fields: Any) -> None: ...
    def __get__(self, obj: Any, owner: Any = None) -> Callable[..., None]: ...

class Frozen:
    def __init__(self, data: bytes) -> None: ...
    @property
    def data(self) -> bytes: ...

RECORD_FIELDS: tuple[str, ...]
CONTRACT: dict[str, Any]

def make_record(
    created: float,
    levelno: int,
    logger: str,
    msg: object,
    args: Any,
    fields: Any,
    bound: Any,
    context: Any,
    otel: Any,
    exc_info: Any,
) -> tuple[Any, ...]: ...
