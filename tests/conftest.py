"""Shared test configuration.

PYAIML_REQUIRE_CPP=1 (set by .ci/run) makes the suite fail when the compiled extension is
missing, so a broken build can never pass as a green run on the fallback backends.

FSDD (the Free Spoken Digit Dataset) is found through PYAIML_FSDD, as ``pyaiml demo`` finds
it: when the variable is unset and ``../shared/data/fsdd`` (relative to the repository root)
exists, it is set to that folder here. Tests that need the data take the ``fsdd_path``
fixture, which skips when there is none.
"""
import os

import numpy as np
import pytest

import pyaiml
from pyaiml import _backend

_SHARED_FSDD = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                                             "fsdd"))
if not os.environ.get("PYAIML_FSDD") and os.path.isdir(_SHARED_FSDD):
    os.environ["PYAIML_FSDD"] = _SHARED_FSDD


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


@pytest.fixture
def fsdd_path():
    """The FSDD folder named by PYAIML_FSDD (holding recordings/ or the .wav files); skips
    the test when the variable is unset or names no folder."""
    p = os.environ.get("PYAIML_FSDD")
    if not p or not os.path.isdir(p):
        pytest.skip("FSDD not found: set PYAIML_FSDD=DIR, or put the dataset at ../shared/data/fsdd next to the "
                    f"repository (looked for {_SHARED_FSDD})")
    return p
