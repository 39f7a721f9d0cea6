"""The optional C fast path for the writer; everything else is in pyproject.toml.

A machine without a C compiler still installs asynclog: the build of the extension is
optional, and the pure-Python encoder writes the same bytes.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("asynclog._speedups", ["asynclog/_speedups.c"], optional=True)])
