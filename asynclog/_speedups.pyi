from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

def encode_into(
    records: list[tuple[Any, ...]],
    buffer: bytearray,
    known: set[str],
    prefixes: dict[str, bytes],
    level_names: dict[int, str],
    span_ids: Callable[[Any], tuple[str, str] | None],
    dumps: Callable[..., bytes],
    default: Callable[[Any], Any],
    options: int,
    json_rule: tuple[int | None, tuple[tuple[bytes, ...], ...]] | None,
    fallback: Callable[[tuple[Any, ...]], bytes],
    max_line: int,
    shorten: Callable[[bytes, int], bytes],
) -> list[int]: ...

class LevelMethod:
    def __init__(
        self,
        level: int,
        name: str,
        queue: Any,
        context_var: ContextVar[Any],
        otel_var: ContextVar[Any] | None,
        otel_get: Callable[[], Any],
        immutable: set[type],
        dumps: Callable[..., bytes],
        options: int,
        numpy_options: int,
        snapshot_value: Callable[[Any], Any],
        snapshot_args: Callable[[Any], Any],
    ) -> None: ...
    def __call__(self, logger: Any, msg: object, /, *args: Any, **fields: Any) -> None: ...
    def __get__(self, obj: Any, owner: Any = None) -> Callable[..., None]: ...

class Frozen:
    def __init__(self, data: bytes) -> None: ...
    @property
    def data(self) -> bytes: ...

RECORD_FIELDS: tuple[str, ...]

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
