"""The tests on every Python that pyproject.toml claims (its trove classifiers).

    nox                    # the unit suite on each claimed Python (`make test-pythons`)
    nox -s unit-3.10       # the unit suite on one of them
    nox -s tests-3.13      # the whole suite there, servers and benchmarks included

The unit suite is every test not marked `integration` or `soak`: no gunicorn, Fluent Bit,
Prometheus or benchmark run. Each session installs asynclog with its `dev` extra (`tests` adds
`bench`) into its own venv with the C extension required: `asynclog/_c` first compiles with that
Python's own flags plus -Werror, then ASYNCLOG_REQUIRE_EXTENSIONS=1 makes a failed build fail
the install and a missing extension fail the tests.

Interpreters come from pyenv ($PYENV_ROOT/versions/3.X.Y, the newest patch release) where it
has them, else from `python3.X` on PATH. A claimed Python found nowhere is skipped, or an error
with `--error-on-missing-interpreters` (nox's default when CI is set).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
PYTHONS = nox.project.python_versions(nox.project.load_toml(ROOT / "pyproject.toml"))
UNIT_SUITE = ("-m", "not integration and not soak")

nox.options.sessions = ["unit"]
nox.options.download_python = "never"  # only interpreters already on the machine
nox.options.reuse_venv = "yes"  # `pip install` runs again each time, and picks up changes

# This interpreter's compiler and flags for an extension, as setup.py's build uses them.
_BUILD_CONFIG = """import json, shlex, sysconfig
var = lambda name: shlex.split(sysconfig.get_config_var(name) or "")
print(json.dumps({"cc": var("CC"), "flags": var("CFLAGS") + var("CCSHARED"),
                  "include": sysconfig.get_paths()["include"]}))"""


def _pyenv_interpreters(versions: list[str]) -> None:
    """Put pyenv's `python3.X` for each claimed version first on PATH, as links in one folder.

    pyenv's shims only run the versions made active (`pyenv global/local`), so nox would not
    find the others through them.
    """
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    links = ROOT / ".nox" / "_pythons"
    shutil.rmtree(links, ignore_errors=True)
    for version in versions:
        installed = [
            path
            for path in (pyenv_root / "versions").glob(f"{version}.*")
            if re.fullmatch(rf"{re.escape(version)}\.\d+", path.name)
            and (path / "bin" / f"python{version}").is_file()
        ]
        if not installed:
            continue
        newest = max(installed, key=lambda path: int(path.name.rsplit(".", 1)[1]))
        links.mkdir(parents=True, exist_ok=True)
        link = links / f"python{version}"
        link.unlink(missing_ok=True)
        link.symlink_to(newest / "bin" / f"python{version}")
    if links.is_dir():
        os.environ["PATH"] = f"{links}{os.pathsep}{os.environ.get('PATH', '')}"


_pyenv_interpreters(PYTHONS)


def _compile_warning_free(session: nox.Session) -> None:
    """Compile asynclog/_c as setup.py's build does on this Python, plus -Werror: a warning that
    a new Python's headers bring fails here instead of scrolling past in an install log."""
    output = session.run("python", "-c", _BUILD_CONFIG, silent=True)
    if not isinstance(output, str):
        return  # --install-only: nothing runs
    config = json.loads(output)
    with tempfile.TemporaryDirectory() as tmp:
        for unit in sorted(Path("asynclog/_c").glob("*.c")):
            session.run(
                *config["cc"],
                *config["flags"],
                "-Werror",
                f"-I{config['include']}",
                "-c",
                str(unit),
                "-o",
                str(Path(tmp) / f"{unit.stem}.o"),
                external=True,
            )


def _install(session: nox.Session, extras: str) -> None:
    session.env["ASYNCLOG_REQUIRE_EXTENSIONS"] = "1"
    _compile_warning_free(session)
    session.install("-e", f".[{extras}]")
    session.run("python", "-c", "import asynclog._speedups as m; print('built:', m.__file__)")


@nox.session(python=PYTHONS, venv_backend="virtualenv")
def unit(session: nox.Session) -> None:
    """The unit suite, the C extension required."""
    _install(session, "dev")
    session.run("python", "-m", "pytest", *UNIT_SUITE, *session.posargs)


@nox.session(python=PYTHONS, venv_backend="virtualenv", default=False)
def tests(session: nox.Session) -> None:
    """The whole suite, as `make test` runs it, the C extension required."""
    _install(session, "dev,bench")
    session.run("python", "-m", "pytest", *session.posargs)
