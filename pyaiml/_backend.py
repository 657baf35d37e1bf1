"""The backend registry: op name -> {cuda, cpp, numba, numpy} implementations.

Every public op in :mod:`pyaiml.ops` resolves its implementation here, so every layer and
model runs on every backend. Order of preference: cpp -> numba -> numpy (cuda for device
arrays, when built). ``PYAIML_BACKEND=cpp|numba|numpy|cuda`` forces one; a backend that is
missing (the compiled extension was not built, or Numba is not installed) falls back with
one warning that names the fallback and how to get the fast path.

Implementations are registered as ``"module:function"`` strings and imported on first use,
so importing pyaiml never imports Numba or compiles anything. ``resolve(name)`` (or
``chosen(name)``, which also says the backend) is the one way an op finds its
implementation; the answer is remembered per PYAIML_BACKEND value, so a call costs one read
of the variable and one dict lookup.

Environment (checked at import; a bad value raises ValueError naming the variable):

- ``PYAIML_BACKEND=cpp|numba|numpy|cuda``: read on every op call, so a change made
  through ``os.environ`` takes effect at the next call;
- ``PYAIML_ISA=baseline|avx2|avx512``: the C++ kernels' instruction set; one this CPU
  cannot run raises ValueError ("... is not supported by this CPU") when the extension is
  first loaded;
- ``PYAIML_NUM_THREADS=N``, 1 <= N <= ``MAX_THREADS`` (128, the thread pool's limit);
- ``PYAIML_SPIN_US=N``: how long idle pool threads spin (csrc/common/parallel.cpp; at run
  time ``set_spin_us``; pyaiml.torch sets 0 unless this variable is set);
- ``PYAIML_HOST_OPENMP=0|1``: whether pyaiml.torch moves the kernels' threads onto torch's
  OpenMP team at its first op (``set_host_openmp``; 1, the default);
- ``PYAIML_HIDE_ISA=avx512`` (or ``avx2``, or ``avx2,avx512``): a testing hook that makes
  the ISA selection treat those instruction sets (and every one above the lowest named) as
  unsupported by this CPU, so the AVX2 and baseline paths and the unsupported-ISA error can
  be tested on an AVX-512 machine (csrc/common/isa.h). Nothing else reads it.
"""
from __future__ import annotations

import importlib
import operator
import os
import platform
import threading
import warnings

BACKENDS = ("cuda", "cpp", "numba", "numpy")
_ENV_BACKENDS = ("cpp", "numba", "numpy", "cuda")
_ENV_ISAS = ("baseline", "avx2", "avx512")
_HIDEABLE_ISAS = ("avx2", "avx512")
# Largest thread count: the pool counts the workers that joined a job in 7 bits
# (csrc/common/parallel.h kMaxThreads, exported as _C.MAX_NUM_THREADS).
MAX_THREADS = 128

_lock = threading.Lock()
_registry: dict[str, dict[str, str]] = {}
_resolved: dict[tuple[str, str], object] = {}
# (op, PYAIML_BACKEND value) -> (backend, callable): the choice depends only on the variable
# (availability is fixed per process), so each op call costs one dict lookup.
_chosen: dict[tuple, tuple[str, object]] = {}
_warned: set[str] = set()
_C = None
_C_error: str | None = None
_numba_ok: bool | None = None
_numba_error: str | None = None


def _validate_env() -> None:
    b = os.environ.get("PYAIML_BACKEND", "")
    if b and b not in _ENV_BACKENDS:
        raise ValueError(
            f"PYAIML_BACKEND must be one of {', '.join(_ENV_BACKENDS)} (or unset). Received {b!r}"
        )
    isa = os.environ.get("PYAIML_ISA", "")
    if isa and isa not in _ENV_ISAS:
        raise ValueError(f"PYAIML_ISA must be one of {', '.join(_ENV_ISAS)} (or unset). Received {isa!r}")
    hide = os.environ.get("PYAIML_HIDE_ISA", "")
    if hide and not all(h in _HIDEABLE_ISAS for h in hide.split(",")):
        raise ValueError(
            "PYAIML_HIDE_ISA (a testing hook: instruction sets to treat as unsupported by this CPU) must be a "
            f"comma-separated list of {', '.join(_HIDEABLE_ISAS)} (or unset). Received {hide!r}"
        )
    nt = os.environ.get("PYAIML_NUM_THREADS", "")
    if nt:
        try:
            ok = 1 <= int(nt) <= MAX_THREADS
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"PYAIML_NUM_THREADS must be an integer from 1 to {MAX_THREADS}. Received {nt!r}")
    host = os.environ.get("PYAIML_HOST_OPENMP", "")
    if host not in ("", "0", "1"):
        raise ValueError("PYAIML_HOST_OPENMP (whether pyaiml.torch runs pyaiml's kernels on torch's OpenMP threads) "
                         f"must be 0 or 1 (or unset). Received {host!r}")
    spin = os.environ.get("PYAIML_SPIN_US", "")
    if spin:
        try:
            ok = 0 <= int(spin) <= 10_000_000
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                "PYAIML_SPIN_US (how long idle pool threads spin, in microseconds) must be an integer "
                f"from 0 to 10000000. Received {spin!r}"
            )


_validate_env()


def _load_C():
    global _C, _C_error, _getenv
    if _C is not None or _C_error is not None:
        return _C
    try:
        from pyaiml import _C as mod  # noqa: N814
    except ImportError as e:  # not built: fall back, with a warning at first use
        _C_error = f"{type(e).__name__}: {e}"
        return None
    # The extension is there: a PYAIML_ISA this CPU cannot run is the caller's error, not a
    # missing build, so its ValueError ("PYAIML_ISA=avx512 is not supported by this CPU
    # (supported: ...)") stops the call instead of falling back. Checked on every attempt.
    mod.validate_isa_env()
    _getenv = mod.getenv
    _C = mod
    return _C


def _numba_available() -> bool:
    global _numba_ok, _numba_error
    if _numba_ok is None:
        try:
            import numba  # noqa: F401

            _numba_ok = True
        except Exception as e:  # pragma: no cover - depends on the environment
            _numba_ok = False
            _numba_error = f"{type(e).__name__}: {e}"
    return _numba_ok


def cpp_available() -> bool:
    return _load_C() is not None


def native():
    """The compiled extension module, or None."""
    return _load_C()


def register_op(name: str, **impls: str) -> None:
    """Register implementations of op ``name`` as ``backend="module:function"`` strings."""
    for b in impls:
        if b not in BACKENDS:
            raise ValueError(f"register_op: unknown backend {b!r} for op {name!r}; valid: {BACKENDS}")
    with _lock:
        _registry.setdefault(name, {}).update(impls)
        _chosen.clear()


def _warn_once(key: str, msg: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)


def _available(backend: str) -> tuple[bool, str]:
    if backend == "cpp":
        if cpp_available():
            return True, "compiled extension pyaiml._C"
        return False, f"pyaiml._C is not built ({_C_error})"
    if backend == "numba":
        if _numba_available():
            return True, "numba installed"
        return False, f"numba is not importable ({_numba_error})"
    if backend == "numpy":
        return True, "always available"
    if backend == "cuda":
        return False, "pyaiml was built without CUDA (PYAIML_CUDA=OFF)"
    return False, "unknown backend"


def choose(name: str) -> tuple[str, str]:
    """(backend, reason) that op ``name`` runs on now."""
    impls = _registry.get(name)
    if impls is None:
        raise KeyError(f"unknown op {name!r}; registered: {sorted(_registry)}")
    forced = _backend_env()
    order = [b for b in ("cpp", "numba", "numpy") if b in impls]
    if forced:
        if forced in impls:
            ok, why = _available(forced)
            if ok:
                return forced, f"forced by PYAIML_BACKEND={forced}"
            rest = [b for b in order if b != forced and _available(b)[0]]
            fb = rest[0]
            _warn_once(
                f"forced:{forced}",
                f"pyaiml: PYAIML_BACKEND={forced} is unavailable ({why}); falling back to {fb}.",
            )
            return fb, f"PYAIML_BACKEND={forced} unavailable ({why}); fell back"
        reason_extra = f"PYAIML_BACKEND={forced} has no implementation of {name}"
    else:
        reason_extra = ""
    for b in order:
        ok, why = _available(b)
        if ok:
            if b != order[0]:
                missing = order[0]
                _, mwhy = _available(missing)
                hint = (
                    "reinstall with a C++17 compiler (pip install . builds it)"
                    if missing == "cpp"
                    else "pip install numba"
                )
                _warn_once(
                    f"missing:{missing}",
                    f"pyaiml: {mwhy}; ops fall back to the {b} backend (slower). To get the fast path: {hint}.",
                )
                return b, f"{missing} unavailable ({mwhy})" + (f"; {reason_extra}" if reason_extra else "")
            return b, (reason_extra or f"default: {why}")
    raise RuntimeError(f"no backend available for op {name!r}")


def _py_getenv(name: str):
    return os.environ.get(name)


# getenv(name) -> str or None. Once the extension is loaded, _C.getenv: the C library's
# environment, which sees every change made through os.environ (those go through putenv /
# unsetenv), read without the two KeyErrors that os.environ.get raises and catches inside
# the Mapping protocol when the variable is unset. Op calls read PYAIML_BACKEND with it.
_getenv = _py_getenv


def _backend_env() -> str:
    """PYAIML_BACKEND, "" when unset."""
    return _getenv("PYAIML_BACKEND") or ""


def chosen(name: str) -> tuple[str, object]:
    """(backend, callable) that op ``name`` runs on now: ``choose``'s answer, remembered per
    PYAIML_BACKEND value (availability is fixed per process)."""
    key = (name, _getenv("PYAIML_BACKEND"))
    hit = _chosen.get(key)
    if hit is None:
        backend, _ = choose(name)
        hit = _chosen[key] = (backend, resolve(name, backend))
    return hit


def chosen_backend(name: str) -> str:
    """The backend op ``name`` runs on now (``chosen(name)[0]``)."""
    return chosen(name)[0]


def resolve(name: str, backend: str | None = None):
    """The callable implementing op ``name`` (on ``backend``, or the chosen one)."""
    if backend is None:
        hit = _chosen.get((name, _getenv("PYAIML_BACKEND")))
        return hit[1] if hit is not None else chosen(name)[1]
    key = (name, backend)
    fn = _resolved.get(key)
    if fn is None:
        target = _registry[name].get(backend)
        if target is None:
            raise KeyError(f"op {name!r} has no {backend} implementation")
        mod, _, attr = target.partition(":")
        fn = getattr(importlib.import_module(mod), attr)
        _resolved[key] = fn
    return fn


def implementations(name: str) -> list[str]:
    """Backends that op ``name`` has, available here or not."""
    return [b for b in BACKENDS if b in _registry.get(name, {})]


def isa() -> str | None:
    C = _load_C()
    return C.isa() if C is not None else None


def get_num_threads() -> int:
    C = _load_C()
    if C is not None:
        return C.get_num_threads()
    return _py_threads[0]


_py_threads = [int(os.environ.get("PYAIML_NUM_THREADS", "0") or 0) or min(MAX_THREADS, (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)))]


def set_num_threads(n: int) -> None:
    """Size pyaiml's one thread pool (C++ kernels, and Numba's threading layer).

    ``n``: an integer (NumPy integer scalars too) from 1 to ``MAX_THREADS`` (128, the
    pool's limit); anything else raises ValueError. The default is the usable cores, at
    most ``MAX_THREADS``, or PYAIML_NUM_THREADS.
    """
    try:  # operator.index: ints and NumPy integer scalars (it refuses NumPy bools)
        v = None if isinstance(n, bool) else operator.index(n)
    except TypeError:
        v = None
    if v is None or v < 1:
        raise ValueError(f"set_num_threads: n must be an integer >= 1. Received {n!r}")
    if v > MAX_THREADS:
        raise ValueError(f"set_num_threads: n must be at most {MAX_THREADS} (the thread pool's limit). "
                         f"Received {n!r}")
    n = v
    _py_threads[0] = n
    C = _load_C()
    if C is not None:
        C.set_num_threads(n)
    if _numba_ok:
        try:
            import numba

            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        except Exception:  # pragma: no cover
            pass


def get_spin_us() -> int:
    """How long pyaiml's idle pool threads spin before sleeping, in microseconds (1000 by
    default, PYAIML_SPIN_US at start); 0 when there is no compiled pool."""
    C = _load_C()
    if C is None or not hasattr(C, "get_spin_us"):
        return 0
    return int(C.get_spin_us())


def park_threads() -> None:
    """Send pyaiml's pool threads that are spinning now (waiting for the next kernel call, see
    set_spin_us) to sleep at once; the next call wakes them as usual. For a caller that knows
    no kernel call follows soon and that other threads want the cores (the server's batcher
    under concurrent load). No-op without the compiled pool."""
    C = _load_C()
    if C is not None and hasattr(C, "park_threads"):
        C.park_threads()


def set_spin_us(us: int) -> None:
    """Set how long idle pool threads spin, waiting for the next call, before they sleep.

    Spinning keeps a burst of calls (a training step) from paying tens of microseconds of
    wake-up each; but a spinning thread holds a core, which slows another thread pool that
    runs next on the same cores (torch's, inside pyaiml.torch, which sets 0 for this reason).
    ``us``: an integer from 0 to 10,000,000; takes effect from the threads' next wait. No-op
    without the compiled pool (the Numba backend has its own).
    """
    try:
        v = None if isinstance(us, bool) else operator.index(us)
    except TypeError:
        v = None
    if v is None or not 0 <= v <= 10_000_000:
        raise ValueError(f"set_spin_us: us must be an integer from 0 to 10000000. Received {us!r}")
    C = _load_C()
    if C is not None and hasattr(C, "set_spin_us"):
        C.set_spin_us(v)


def set_host_openmp(on: bool) -> bool:
    """Run the compiled kernels' threads on the OpenMP runtime already loaded in the process
    (torch's libgomp) instead of pyaiml's own pool, or back (``False``).

    Inside PyTorch the two pools take turns on the same cores: after each of torch's ops its
    OpenMP threads spin, holding the cores pyaiml's threads need for the next pyaiml op (on
    2 cores ResNet-18 through ``pyaiml.torch.nn.convert`` ran 0.8x torch; with torch's threads
    told not to spin, 1.1x). On one team, torch's spinning threads pick up pyaiml's work. The
    work is split into the same chunks either way, so results do not change. ``pyaiml.torch``
    turns it on at its first op (``PYAIML_HOST_OPENMP=0`` keeps the pool). Returns whether it
    is on: ``False`` when no OpenMP runtime is loaded or without the compiled backend.
    """
    numpy_bool = type(on).__module__ == "numpy" and type(on).__name__ in ("bool", "bool_")
    if not (isinstance(on, bool) or numpy_bool or (type(on) is int and on in (0, 1))):
        raise TypeError(f"set_host_openmp: on must be True or False. Received {on!r}")
    C = _load_C()
    if C is None or not hasattr(C, "set_host_openmp"):
        return False
    return bool(C.set_host_openmp(bool(on)))


def backend_info() -> dict:
    """What each op runs on and why, plus ISA, thread count and versions."""
    import numpy

    import pyaiml.ops  # noqa: F401  (registers every op)

    C = _load_C()
    info: dict = {
        "backend_env": _backend_env() or None,
        "cpp": {"available": C is not None, "reason": _available("cpp")[1]},
        "numba": {"available": _numba_available(), "reason": _available("numba")[1]},
        "cuda": {"available": False, "reason": _available("cuda")[1]},
        "isa": None,
        "isa_reason": None,
        "num_threads": get_num_threads(),
        "versions": {
            "pyaiml": _version(),
            "python": platform.python_version(),
            "numpy": numpy.__version__,
        },
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
        "ops": {},
    }
    if C is not None:
        info["isa"] = C.isa()
        info["isa_reason"] = (
            f"forced by PYAIML_ISA={os.environ['PYAIML_ISA']}"
            if os.environ.get("PYAIML_ISA")
            else f"best supported by this CPU (compiled: {', '.join(C.compiled_isas())}; supported: {', '.join(C.supported_isas())})"
        )
    if _numba_ok:
        import numba

        info["versions"]["numba"] = numba.__version__
    for name in sorted(_registry):
        try:
            b, why = choose(name)
        except RuntimeError as e:  # an op with only a C++ implementation (gemm_checked), unbuilt
            b, why = None, str(e)
        info["ops"][name] = {
            "backend": b,
            "isa": info["isa"] if b == "cpp" else None,
            "reason": why,
            "implementations": implementations(name),
        }
    return info


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pyaiml")
    except Exception:
        from pyaiml import __version__

        return __version__
