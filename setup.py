"""The optional C extension; everything else is in pyproject.toml.

A machine without a C compiler still installs asynclog: the build of the extension is
optional, and the pure-Python path writes the same bytes. With ASYNCLOG_REQUIRE_EXTENSIONS
set (CI, nox), a failed build fails the install and shows the compiler's error.
"""

import os

from setuptools import Extension, setup

_REQUIRED = bool(os.environ.get("ASYNCLOG_REQUIRE_EXTENSIONS"))
# asynclog._speedups, one extension from the units in asynclog/_c (see module.c).
_SOURCES = ["asynclog/_c/module.c", "asynclog/_c/encode.c", "asynclog/_c/capture.c"]
_HEADERS = ["asynclog/_c/buffer.h", "asynclog/_c/contract.h", "asynclog/_c/speedups.h"]

setup(
    ext_modules=[
        Extension("asynclog._speedups", _SOURCES, depends=_HEADERS, optional=not _REQUIRED)
    ]
)
