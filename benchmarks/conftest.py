"""pytest-benchmark suites: `pytest benchmarks --benchmark-only`. Same cases as `pyaiml bench`."""
import os

import pytest

from pyaiml.bench.harness import configure_allocator, set_threads


@pytest.fixture(scope="session", autouse=True)
def _bench_env():
    configure_allocator()
    set_threads(int(os.environ.get("PYAIML_BENCH_THREADS", "2")))
