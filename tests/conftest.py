"""Shared test configuration.

PYAIML_REQUIRE_CPP=1 (set by .ci/run) makes the suite fail when the compiled extension is
missing, so a broken build can never pass as a green run on the fallback backends.

FSDD (the Free Spoken Digit Dataset) is found through PYAIML_FSDD, as ``pyaiml demo`` finds
it: when the variable is unset and ``../shared/data/fsdd`` (relative to the repository root)
exists, it is set to that folder here. Tests that need the data take the ``fsdd_path``
fixture, which skips when there is none.

PYAIML_TEST_NO_TORCH=1 hides torch (``import torch`` raises ImportError), as on a machine
without it: the op tests then check the C++ and Numba backends against pyaiml.reference and
skip the NumPy backend, which is pyaiml.reference itself.

Hypothesis (tests/test_fuzz_*.py, profiles in tests/fuzzing.py): the "default" profile runs
50 derandomized examples per test (reproducible in CI); PYAIML_FUZZ=slow loads the "slow"
profile (2000 examples per test, fresh random examples each run). ``pytest -m slow
tests/test_fuzz_*.py`` runs the slow-marked copies of the fuzz tests, which carry the slow
budget themselves.
"""
import importlib.abc
import os
import sys

NO_TORCH = os.environ.get("PYAIML_TEST_NO_TORCH") == "1"


class _HideTorch(importlib.abc.MetaPathFinder):
    """Makes ``import torch`` (and torch.*) raise ModuleNotFoundError. Not sys.modules["torch"]
    = None: SciPy's array-API helpers look torch up in sys.modules and fail on a None there."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by PYAIML_TEST_NO_TORCH=1)", name=name)
        return None


if NO_TORCH:
    sys.meta_path.insert(0, _HideTorch())  # before anything imports it

import numpy as np
import pytest
from hypothesis import settings

import fuzzing
import pyaiml
from pyaiml import _backend

_SHARED_FSDD = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                                             "fsdd"))
if not os.environ.get("PYAIML_FSDD") and os.path.isdir(_SHARED_FSDD):
    os.environ["PYAIML_FSDD"] = _SHARED_FSDD

_profile = os.environ.get("PYAIML_FUZZ", "default") or "default"
if _profile not in fuzzing.EXAMPLES:
    raise ValueError(f"PYAIML_FUZZ must be one of {', '.join(fuzzing.EXAMPLES)} (or unset). Received {_profile!r}")
settings.load_profile(_profile)


def pytest_report_header(config):
    info = pyaiml.backend_info()
    torch = "hidden (PYAIML_TEST_NO_TORCH=1)" if NO_TORCH else "if installed"
    return (f"pyaiml: backend={os.environ.get('PYAIML_BACKEND') or 'auto'} cpp={info['cpp']['available']} "
            f"isa={info['isa']} threads={info['num_threads']} numba={info['numba']['available']} "
            f"torch={torch} fuzz profile={_profile}")


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
