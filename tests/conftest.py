"""Shared test configuration.

PYAIML_REQUIRE_CPP=1 (set by .ci/run) makes the suite fail when the compiled extension is
missing, so a broken build can never pass as a green run on the fallback backends.
"""
import os

import numpy as np
import pytest

import pyaiml
from pyaiml import _backend



def pytest_report_header(config):
    info = pyaiml.backend_info()
    return (f"pyaiml: backend={os.environ.get('PYAIML_BACKEND') or 'auto'} cpp={info['cpp']['available']} "
            f"isa={info['isa']} threads={info['num_threads']} numba={info['numba']['available']}")


def pytest_sessionstart(session):
    if os.environ.get("PYAIML_REQUIRE_CPP") == "1" and not _backend.cpp_available():
        raise pytest.UsageError(f"PYAIML_REQUIRE_CPP=1 but pyaiml._C is not importable: {_backend._C_error}")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
