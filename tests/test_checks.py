"""Startup checks: reload detection and the memory limit read from cgroups."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

from asynclog._checks import memory_limit, reload_enabled


def test_reload_is_found_on_a_uvicorn_config_up_the_stack() -> None:
    def lifespan_task(self: object) -> bool:
        return reload_enabled(sys._getframe())

    server = SimpleNamespace(config=SimpleNamespace(reload=True))
    assert lifespan_task(server)
    assert not lifespan_task(SimpleNamespace(config=SimpleNamespace(reload=False)))


def _cgroup(tmp_path: Path, memory_max: dict[str, str]) -> Path:
    root = tmp_path / "cgroup"
    for group, value in memory_max.items():
        path = root / group.lstrip("/")
        path.mkdir(parents=True, exist_ok=True)
        (path / "memory.max").write_text(value + "\n")
    return root


def test_memory_limit_reads_cgroup_v2_up_the_hierarchy(tmp_path: Path) -> None:
    membership = tmp_path / "proc-self-cgroup"
    membership.write_text("0::/kubepods/pod1/app\n")
    limited = _cgroup(tmp_path / "a", {"/kubepods/pod1/app": "max", "/kubepods/pod1": "536870912"})
    assert memory_limit(limited, membership) == 536870912
    unlimited = _cgroup(tmp_path / "b", {"/kubepods/pod1/app": "max", "/kubepods/pod1": "max"})
    assert memory_limit(unlimited, membership) is None


def test_memory_limit_reads_cgroup_v1(tmp_path: Path) -> None:
    membership = tmp_path / "proc-self-cgroup"
    membership.write_text("4:memory:/docker/abc\n1:cpu:/docker/abc\n")
    group = tmp_path / "cgroup" / "memory" / "docker" / "abc"
    group.mkdir(parents=True)
    (group / "memory.limit_in_bytes").write_text("268435456\n")
    assert memory_limit(tmp_path / "cgroup", membership) == 268435456
    (group / "memory.limit_in_bytes").write_text(str(2**63 - 4096))
    assert memory_limit(tmp_path / "cgroup", membership) is None
