"""The Pythons the package claims: requires-python, the trove classifiers (noxfile.py and CI run
the tests on each of those) and the README say the same."""

from __future__ import annotations

import re
import sys
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
