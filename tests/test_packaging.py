"""The Pythons the package claims: requires-python, the trove classifiers (noxfile.py and CI run
the tests on each of those) and the README say the same."""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def project() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return dict(tomllib.load(file)["project"])


def claimed_minors() -> list[int]:
    pattern = re.compile(r"Programming Language :: Python :: 3\.(\d+)")
    return sorted(
        int(match[1]) for c in project()["classifiers"] if (match := pattern.fullmatch(c))
    )


def test_the_classifiers_name_every_python_from_requires_python_on() -> None:
    floor = re.fullmatch(r">=\s*3\.(\d+)", project()["requires-python"])
    assert floor, project()["requires-python"]
    minors = claimed_minors()
    assert minors == list(range(int(floor[1]), minors[-1] + 1))


def test_the_readme_names_the_claimed_pythons() -> None:
    *first, last = [f"3.{minor}" for minor in claimed_minors()]
    assert f"CPython {', '.join(first)} and {last}" in (ROOT / "README.md").read_text()


def test_a_source_tree_without_the_built_extension_says_so(tmp_path: Path) -> None:
    """Python's own message would be "cannot import name '_speedups' from partially
    initialized module 'asynclog' (most likely due to a circular import)"."""
    shutil.copytree(ROOT / "asynclog", tmp_path / "asynclog", ignore=shutil.ignore_patterns("*.so"))
    # -S: no site hooks, so an editable install's finder cannot supply the built extension.
    path = os.pathsep.join([str(tmp_path), *site.getsitepackages()])
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import asynclog; print(asynclog._accel.speedups)"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PYTHONPATH": path, "PATH": os.environ.get("PATH", "")},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "None\n"
    assert "not built for this source tree" in result.stderr
    assert str(tmp_path / "asynclog") in result.stderr
    assert "pip install -e ." in result.stderr
    assert "circular import" not in result.stderr
