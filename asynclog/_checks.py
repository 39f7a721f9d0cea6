"""Production checks run once at startup: each finding is one structured warning."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from ._compat import degraded, server_configs
from ._logger import Logger
from ._settings import AppSettings, Settings

__all__ = ["memory_limit", "reload_enabled", "run_startup_checks"]

_log = Logger("asynclog.checks")
# cgroup v1 reports "no limit" as a huge page-aligned number.
_V1_UNLIMITED = 1 << 62


def _cmdline(pid: int | str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def reload_enabled(frame: FrameType | None = None) -> bool:
    """Whether this server runs with auto-reload: a `--reload` flag on this process or its
    parent, or a uvicorn `Config(reload=True)` found up the calling stack (the lifespan task).

    uvicorn has no public way to ask; its lifespan keeps its `Config` as `self.config` (not
    documented). When uvicorn drives the lifespan but no frame holds a config, that changed:
    said once, and only the command line is read."""
    for pid in ("self", os.getppid()):
        if any(arg == "--reload" or arg.startswith("--reload=") for arg in _cmdline(pid)):
            return True
    under_uvicorn = found_config = False
    for module, config in server_configs(frame):
        under_uvicorn = under_uvicorn or module.startswith("uvicorn.")
        reload = getattr(config, "reload", None)
        if isinstance(reload, bool):
            found_config = True
            if reload:
                return True
    if under_uvicorn and not found_config:
        degraded(
            "uvicorn: the lifespan's self.config (its Config, found by walking frames)",
            "auto-reload is found only as --reload on the command line",
        )
    return False


def memory_limit(
    root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
) -> int | None:
    """The memory limit applying to this process in bytes, or None when nothing limits it."""
    limits: list[int] = []
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: the limit of this group or any ancestor applies
            group = root / path.lstrip("/")
            while True:
                limits.extend(_read_limit(group / "memory.max"))
                if group == root or root not in group.parents:
                    break
                group = group.parent
        elif "memory" in controllers.split(","):
            base = root / "memory"
            limits.extend(_read_limit(base / path.lstrip("/") / "memory.limit_in_bytes"))
            limits.extend(_read_limit(base / "memory.limit_in_bytes"))
    return min(limits) if limits else None


def _read_limit(path: Path) -> list[int]:
    try:
        text = path.read_text().strip()
    except OSError:
        return []
    if text == "max" or not text.isdigit() or int(text) >= _V1_UNLIMITED:
        return []
    return [int(text)]


def run_startup_checks(
    core: Settings, app: AppSettings, pipeline_format: str, frame: FrameType | None = None
) -> list[str]:
    """Warn once about each production anti-pattern found; returns the names of the findings."""
    if not app.startup_checks:
        return []
    found: list[str] = []
    fields: dict[str, Any]
    if app.warn_reload and reload_enabled(frame if frame is not None else sys._getframe(1)):
        found.append("reload")
        _log.warning(
            "server runs with auto-reload: a development setting, slow and unsafe in production",
            check="reload",
            silence="warn_reload=False",
        )
    if app.warn_memory_limit and memory_limit() is None:
        found.append("memory_limit")
        _log.warning(
            "no memory limit applies to this process: set container limits",
            check="memory_limit",
            silence="warn_memory_limit=False",
        )
    if app.warn_debug_json and core.level <= 10 and pipeline_format == "json":
        found.append("debug_json")
        fields = {"check": "debug_json", "silence": "warn_debug_json=False"}
        _log.warning(
            "DEBUG level with a JSON sink: every debug line is shipped and stored", **fields
        )
    return found
