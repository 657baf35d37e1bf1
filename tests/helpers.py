"""Helpers shared by the tests (tests/ is on sys.path under pytest)."""
import os
import subprocess
import sys
import tempfile

import pytest

from pyaiml import _backend

SHARED_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def backends_for(op):
    """Backends of `op` available here (all of them, whatever PYAIML_BACKEND says)."""
    out = []
    for b in _backend.implementations(op):
        if b == "cuda":
            continue
        if _backend._available(b)[0]:
            out.append(b)
    return out


def optional_torch():
    """torch, or None where it is not installed (or hidden by PYAIML_TEST_NO_TORCH=1)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def oracle_for(backend, torch):
    """Which oracle checks `backend`: "torch" where installed, else "reference"
    (pyaiml.reference). The NumPy backend is pyaiml.reference itself, so without torch its
    case is skipped."""
    if torch is not None:
        return "torch"
    if backend == "numpy":
        pytest.skip("the numpy backend is pyaiml.reference itself: its oracle is torch, not installed here")
    return "reference"


def shared_data(*parts):
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"shared data not found at {path}")
    return path


def run_py(code, timeout=300, **env):
    """Run `code` in a fresh interpreter, outside the source tree, importing the pyaiml this
    process imported, with extra environment variables."""
    e = dict(os.environ)
    # the child imports the same pyaiml as this process: the installed one, or the checkout
    # under development (a relative PYTHONPATH=. would not survive the change of directory)
    import pyaiml

    here = os.path.dirname(os.path.dirname(os.path.abspath(pyaiml.__file__)))
    e["PYTHONPATH"] = os.pathsep.join([here] + [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p])
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e,
                          timeout=timeout, cwd=tempfile.gettempdir())


def run_under_isa(isa, code, timeout=300):
    """Run `code` (which may import the test modules: the tests folder is on its path) in a
    fresh interpreter with PYAIML_ISA=isa and the C++ backend, and assert it finished and ran
    on that ISA; skips when this CPU does not run `isa`."""
    from pyaiml import _backend

    if isa not in _backend.native().supported_isas():
        pytest.skip(f"this CPU does not run {isa}")
    import pyaiml

    tests = os.path.dirname(os.path.abspath(__file__))
    # the pyaiml this process imported (installed or checkout) first, then the tests folder
    here = os.path.dirname(os.path.dirname(os.path.abspath(pyaiml.__file__)))
    code += "from pyaiml import _backend\nprint('ok', _backend.native().isa())\n"
    r = run_py(code, timeout=timeout, PYAIML_ISA=isa, PYAIML_BACKEND="cpp",
               PYTHONPATH=os.pathsep.join([p for p in [here, tests, os.environ.get("PYTHONPATH", "")] if p]))
    assert r.returncode == 0 and f"ok {isa}" in r.stdout, (isa, r.stderr[-3000:])


def assert_saves_and_loads(model, x, tmp_path):
    """``model.save`` then ``keras.models.load_model``: the loaded model predicts ``x`` bit for bit
    as the original does."""
    import numpy as np

    from pyaiml import keras

    model.save(tmp_path / "m.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "m.keras").predict(x, verbose=0),
                                  model.predict(x, verbose=0))


def keras3_on_torch():
    """Keras 3 itself on its torch backend (the bench extra) as an oracle, or the test skips."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras3 = pytest.importorskip("keras")
    if keras3.backend.backend() != "torch":
        pytest.skip("Keras runs another backend here")
    return keras3


def same_at_thread_counts(fn, counts=(1, 2, 3)):
    """fn() at each pyaiml thread count in ``counts`` (restored after): asserts every run
    returns the same arrays bit for bit (fn returns an array or a tuple of arrays and Nones)
    and returns the first run's result."""
    import numpy as np

    import pyaiml

    n0 = pyaiml.get_num_threads()
    outs = []
    try:
        for n in counts:
            pyaiml.set_num_threads(n)
            outs.append(fn())
    finally:
        pyaiml.set_num_threads(n0)
    for o in outs[1:]:
        for a, b in zip(o if isinstance(o, tuple) else (o,), outs[0] if isinstance(outs[0], tuple) else (outs[0],)):
            if a is None or b is None:
                assert a is b
            else:
                np.testing.assert_array_equal(a, b)
    return outs[0]
