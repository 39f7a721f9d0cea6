from collections.abc import Callable, Set
from contextvars import ContextVar
from typing import Any

def encode_into(
    records: list[tuple[Any, ...]],
    buffer: bytearray,
    checked: Any,
    known: set[str],
    level_names: dict[int, str],
    span_ids: Callable[[Any], tuple[str, str] | None],
    dumps: Callable[..., bytes],
    default: Callable[[Any], Any],
    options: int,
    fallback: Callable[[tuple[Any, ...]], bytes],
) -> tuple[list[int], Any]: ...

class LevelMethod:
    def __init__(
        self,
        level: int,
        name: str,
        queue: Any,
        context_var: ContextVar[Any],
        otel_var: ContextVar[Any] | None,
        otel_get: Callable[[], Any],
        immutable: Set[type],
        snapshot_fields: Callable[[dict[str, Any]], dict[str, Any]],
        snapshot_args: Callable[[Any], Any],
    ) -> None: ...
    def __call__(self, logger: Any, msg: object, /, *args: Any, **fields: Any) -> None: ...
    def __get__(self, obj: Any, owner: Any = None) -> Callable[..., None]: ...
