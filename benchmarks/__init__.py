"""Benchmarks for asynclog against the logging approaches people use today.

Run with ``python -m benchmarks`` (``--quick`` / ``--full``, ``--out DIR``); see
``benchmarks/README.md``. Every figure is a median of repeats and every comparison
is a ratio against a baseline measured in the same run.
"""
