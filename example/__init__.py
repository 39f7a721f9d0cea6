"""The example FastAPI app used by the tests, the benchmark and the sidecar deployment."""
