"""The optional C extension (`asynclog/_c`, built as `asynclog._speedups`), or None when it was
not built (no C compiler at install time), refused to load (built for another contract: see
`_contract`), or `ASYNCLOG_NO_EXTENSIONS` is set. Lines and counts are the same either way.

`make_record` is what every Python producer of a record calls: `_record.make_record`, or the
extension's, which makes the same tuple untracked by the garbage collector."""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from . import _record

__all__ = ["make_record", "speedups"]


def _load() -> ModuleType | None:
    if os.environ.get("ASYNCLOG_NO_EXTENSIONS"):
        return None
    if importlib.util.find_spec(f"{__package__}._speedups") is None:
        # Importing it anyway would say "partially initialized module ... circular import".
        here = Path(__file__).parent
        if (here / "_c" / "module.c").exists():  # a source tree (a wheel ships no C source)
            warnings.warn(
                f"asynclog's C extension is not built for this source tree ({here}): the "
                "pure-Python path runs, writing the same lines. Build it with "
                "`pip install -e .` from the tree's root (needs a C compiler and Python's "
                "headers), or set ASYNCLOG_NO_EXTENSIONS=1 to run without it silently",
                RuntimeWarning,
                stacklevel=2,
            )
        return None
    try:
        from . import _speedups
    except ModuleNotFoundError:
        return None
    except ImportError as exc:  # a stale build: slower, not wrong, but worth a word
        warnings.warn(f"{exc}; the pure-Python path runs", RuntimeWarning, stacklevel=2)
        return None
    return _speedups


speedups = _load()
make_record: Callable[..., _record.Record] = (
    _record.make_record if speedups is None else speedups.make_record
)
