"""The optional C fast path for the writer; everything else is in pyproject.toml.

A machine without a C compiler still installs asynclog: the build of the extension is
optional, and the pure-Python encoder writes the same bytes. With ASYNCLOG_REQUIRE_EXTENSIONS
set (CI, nox), a failed build fails the install and shows the compiler's error.
"""

import os

from setuptools import Extension, setup

_REQUIRED = bool(os.environ.get("ASYNCLOG_REQUIRE_EXTENSIONS"))

setup(
    ext_modules=[Extension("asynclog._speedups", ["asynclog/_speedups.c"], optional=not _REQUIRED)]
)
