"""Run a peer library's own shipped test suite against pyaiml through import shims.

What it is: ``python tools/peer_suites.py hmmlearn`` copies hmmlearn's installed tests
(``hmmlearn/tests``, every file and assertion as shipped) into a temporary package that is
itself named ``hmmlearn``, whose ``hmm``, ``base``, ``utils`` and ``_hmmc`` modules re-export
pyaiml's objects (``pyaiml.hmm`` and ``pyaiml.hmm.lattice``). Placed first on ``sys.path``, it
answers both the tests' absolute imports (``from hmmlearn import hmm``) and their relative
ones (``from .. import hmm``), so the suite runs unchanged against pyaiml (the target).
``--control`` runs the same files, with the same exclusions and seed, against the real
hmmlearn in place. It prints passed/failed per file, the totals, the pass fraction and every
failure with its first error line. ``python tools/peer_suites.py gensim ...`` hands over to
``tools/peer_gensim.py:main(argv)`` when that file exists.

Counting: pass fraction = passed / (passed + failed + errors + not run). xfailed and skipped
tests (marked so by hmmlearn itself) are reported but left out of it; "not run" are the
tests the control collects that the target never ran (a file whose import failed).
Excluded files (models pyaiml does not claim) are listed in every report.

What it is not: a benchmark, or a place that edits any test. The shims only re-export.
Tests: tests/test_peer_hmmlearn.py (marked slow) runs both sides and checks the fractions.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# hmmlearn test files left out, with why: models pyaiml.hmm does not claim.
HMMLEARN_EXCLUDED = {
    "test_variational_categorical.py": "VariationalCategoricalHMM (variational Bayes): not claimed by pyaiml.hmm",
    "test_variational_gaussian.py": "VariationalGaussianHMM (variational Bayes): not claimed by pyaiml.hmm",
    "test_kl_divergence.py": "hmmlearn._kl_divergence (KL divergences used by the variational models): not claimed",
}

# Shim modules: hmmlearn module -> names -> pyaiml modules to take each name from (first found).
# A name pyaiml does not have is left out of the shim, so a test using it fails as it should.
HMMLEARN_SHIMS = {
    "hmm": (["GMMHMM", "GaussianHMM", "CategoricalHMM", "MultinomialHMM", "PoissonHMM", "COVARIANCE_TYPES"],
            ["pyaiml.hmm", "pyaiml.hmm.models"]),
    "base": (["BaseHMM", "ConvergenceMonitor", "DECODER_ALGORITHMS"], ["pyaiml.hmm", "pyaiml.hmm.base"]),
    "utils": (["normalize", "log_normalize", "fill_covars"], ["pyaiml.hmm.utils", "pyaiml.hmm.base"]),
    "_hmmc": (["forward_log", "backward_log", "forward_scaling", "backward_scaling", "viterbi",
               "compute_log_xi_sum", "compute_scaling_xi_sum"], ["pyaiml.hmm.lattice"]),
}

_SHIM_TEMPLATE = '''"""Shim: hmmlearn.{mod} names re-exported from pyaiml (written by tools/peer_suites.py)."""
import importlib

__all__ = []
for _name in {names!r}:
    for _src in {sources!r}:
        try:
            _m = importlib.import_module(_src)
        except ImportError:
            continue
        if hasattr(_m, _name):
            globals()[_name] = getattr(_m, _name)
            __all__.append(_name)
            break
'''

_INIT_TEMPLATE = '''"""Shim package standing in for hmmlearn: its modules re-export pyaiml.hmm (tools/peer_suites.py)."""
__version__ = {version!r}
TARGET = "pyaiml"
'''

# pytest plugin recording every test's outcome and the first line of each failure as JSON.
_PLUGIN = '''
import json, os

_OUT = os.environ["PEER_SUITE_RESULTS"]
_rows = []
_collected = []
_paths = {}


def _key(nodeid, fspath):
    # nodeids of files outside the rootdir lose their file part: name the file explicitly
    return os.path.basename(str(fspath)) + "::" + nodeid.split("::", 1)[-1]


def _first_line(report):
    text = str(report.longrepr) if report.longrepr is not None else ""
    err = [ln for ln in text.splitlines() if ln.startswith("E ")]
    line = err[0][1:].strip() if err else (text.strip().splitlines() or [""])[-1]
    return line[:300]


def pytest_collection_finish(session):
    for it in session.items:
        _paths[it.nodeid] = it.path
        _collected.append(_key(it.nodeid, it.path))


def pytest_collectreport(report):
    if report.failed:
        _rows.append({"id": os.path.basename(report.nodeid.split("::")[0]),
                      "outcome": "collect_error", "message": _first_line(report)})


def pytest_runtest_logreport(report):
    xfail = hasattr(report, "wasxfail")
    row = None
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if report.skipped:
            outcome = "xfailed" if xfail else "skipped"
        elif report.passed:
            outcome = "xpassed" if xfail else "passed"
        else:
            outcome = "error" if report.when == "setup" else "failed"
        row = {"outcome": outcome, "message": "" if report.passed else _first_line(report)}
    elif report.when == "teardown" and report.failed:
        row = {"outcome": "error", "message": _first_line(report)}
    if row is not None:
        row["id"] = _key(report.nodeid, _paths.get(report.nodeid, report.fspath))
        _rows.append(row)


def pytest_sessionfinish(session):
    with open(_OUT, "w") as f:
        json.dump({"collected": _collected, "rows": _rows}, f)
'''


def _installed_tests(package):
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"peer_suites: {package} is not installed in this Python ({sys.executable}); "
                         f"pip install the test extra (pyproject.toml) first")
    pkg_dir = next(iter(spec.submodule_search_locations))
    tests = os.path.join(pkg_dir, "tests")
    if not os.path.isdir(tests):
        raise SystemExit(f"peer_suites: {package} at {pkg_dir} ships no tests/ folder")
    return pkg_dir, tests


def _installed_version(package):
    from importlib import metadata
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _run_pytest(test_paths, work, env_extra, cwd, extra_args=(), timeout=None, collect_only=False):
    """Run pytest in a subprocess with the recording plugin; returns (rows, seconds, output tail)."""
    results = os.path.join(work, f"results-{time.monotonic_ns()}.json")
    env = dict(os.environ)
    env.update(env_extra)
    env["PEER_SUITE_RESULTS"] = results
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (work, env_extra.get("PYTHONPATH", "")) if p)
    ini = os.path.join(work, "pytest.ini")
    with open(ini, "w") as f:
        f.write("[pytest]\n")  # keeps pyaiml's own pytest config (and -m 'not slow') out of the run
    cmd = [sys.executable, "-m", "pytest", "-c", ini, "--rootdir", cwd, "-p", "peer_suite_plugin",
           "-p", "no:cacheprovider", "-q", "--continue-on-collection-errors", "-W", "ignore::DeprecationWarning", *extra_args, *test_paths]
    if collect_only:
        cmd.insert(cmd.index("-q"), "--collect-only")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    dt = time.monotonic() - t0
    tail = (proc.stdout + proc.stderr)[-4000:]
    if not os.path.exists(results):
        raise SystemExit(f"peer_suites: pytest produced no results (exit {proc.returncode}):\n{tail}")
    with open(results) as f:
        got = json.load(f)
    return (got["collected"] if collect_only else got["rows"]), dt, tail


def _file_of(test_id):
    return test_id.split("::", 1)[0]


def _summarise(rows, expected_ids):
    """Per-file counts; tests the control collects but the target never ran count as not run."""
    per = {}
    seen = set()
    for r in rows:
        d = per.setdefault(_file_of(r["id"]), {})
        if r["outcome"] == "collect_error":
            continue
        seen.add(r["id"])
        d[r["outcome"]] = d.get(r["outcome"], 0) + 1
    not_run = []
    for key in expected_ids:
        if key not in seen:
            d = per.setdefault(_file_of(key), {})
            d["not_run"] = d.get("not_run", 0) + 1
            not_run.append(key)
    tot = {}
    for d in per.values():
        for k, v in d.items():
            tot[k] = tot.get(k, 0) + v
    good = tot.get("passed", 0) + tot.get("xpassed", 0)
    bad = tot.get("failed", 0) + tot.get("error", 0) + tot.get("not_run", 0)
    frac = good / (good + bad) if good + bad else 0.0
    return per, tot, frac, not_run


def run_hmmlearn(control=False, seed=1, keep=None, select=None, timeout=None, verbose=False):
    """Run hmmlearn's shipped suite against pyaiml (or hmmlearn itself with control=True).

    Returns a dict: side, seed, version, excluded {file: why}, per_file {file: counts},
    totals, fraction, failures [(nodeid, outcome, message)], seconds.
    """
    _, tests = _installed_tests("hmmlearn")
    version = _installed_version("hmmlearn")
    work = keep or tempfile.mkdtemp(prefix="pyaiml-peer-hmmlearn-")
    os.makedirs(work, exist_ok=True)
    try:
        with open(os.path.join(work, "peer_suite_plugin.py"), "w") as f:
            f.write(_PLUGIN)
        files = sorted(fn for fn in os.listdir(tests) if fn.startswith("test_") and fn.endswith(".py"))
        kept = [fn for fn in files if fn not in HMMLEARN_EXCLUDED]
        env = {"HMMLEARN_SEED": str(int(seed))}
        extra = ["-k", select] if select else []
        # What the control collects is the list every side is counted against.
        expected, _, _ = _run_pytest([os.path.join(tests, fn) for fn in kept], work, {"HMMLEARN_SEED": str(seed)},
                                     work, extra, timeout, collect_only=True)
        if control:
            paths = [os.path.join(tests, fn) for fn in kept]
            rows, secs, tail = _run_pytest(paths, work, env, work, extra, timeout)
        else:
            shim = os.path.join(work, "shim")
            pkg = os.path.join(shim, "hmmlearn")
            if os.path.exists(shim):
                shutil.rmtree(shim)
            os.makedirs(os.path.join(pkg, "tests"))
            with open(os.path.join(pkg, "__init__.py"), "w") as f:
                f.write(_INIT_TEMPLATE.format(version=version))
            for mod, (names, sources) in HMMLEARN_SHIMS.items():
                with open(os.path.join(pkg, mod + ".py"), "w") as f:
                    f.write(_SHIM_TEMPLATE.format(mod=mod, names=names, sources=sources))
            for fn in os.listdir(tests):
                if fn.endswith(".py") and fn not in HMMLEARN_EXCLUDED:
                    shutil.copyfile(os.path.join(tests, fn), os.path.join(pkg, "tests", fn))
            env["PYTHONPATH"] = os.pathsep.join([shim, ROOT])
            rows, secs, tail = _run_pytest([os.path.join(pkg, "tests", fn) for fn in kept], work, env, shim,
                                           extra, timeout)
        per, tot, frac, not_run = _summarise(rows, expected)
        failures = [(r["id"], r["outcome"], r["message"]) for r in rows
                    if r["outcome"] in ("failed", "error", "collect_error")]
        failures += [(nid, "not_run", "never ran (its file did not import)") for nid in not_run]
        if verbose:
            print(tail)
        return {"side": "control (hmmlearn)" if control else "target (pyaiml)", "seed": int(seed),
                "version": version, "excluded": dict(HMMLEARN_EXCLUDED), "per_file": per, "totals": tot,
                "fraction": frac, "failures": failures, "seconds": secs, "expected": len(expected)}
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


_COLS = ("passed", "failed", "error", "not_run", "xfailed", "xpassed", "skipped")


def print_report(res, out=sys.stdout):
    p = lambda *a: print(*a, file=out)
    p(f"hmmlearn {res['version']} shipped tests, {res['side']}, HMMLEARN_SEED={res['seed']}, "
      f"{res['seconds']:.0f} s")
    p("excluded (not claimed by pyaiml.hmm):")
    for fn, why in res["excluded"].items():
        p(f"  {fn}: {why}")
    p(f"{'file':34s}" + "".join(f"{c:>9s}" for c in _COLS))
    for fn in sorted(res["per_file"]):
        d = res["per_file"][fn]
        p(f"{fn:34s}" + "".join(f"{d.get(c, 0):9d}" for c in _COLS))
    p(f"{'TOTAL':34s}" + "".join(f"{res['totals'].get(c, 0):9d}" for c in _COLS))
    good = res["totals"].get("passed", 0) + res["totals"].get("xpassed", 0)
    p(f"pass fraction: {res['fraction']:.4f} ({good} passed of {res['expected']} collected by the control, "
      f"xfailed/skipped left out)")
    if res["failures"]:
        p("failures:")
        for nid, outcome, msg in res["failures"]:
            p(f"  [{outcome}] {nid}: {msg}")


def _hmmlearn_main(argv):
    ap = argparse.ArgumentParser(prog="peer_suites.py hmmlearn",
                                 description="hmmlearn's shipped tests against pyaiml.hmm (or hmmlearn itself)")
    ap.add_argument("--control", action="store_true", help="run against the real hmmlearn instead of pyaiml")
    ap.add_argument("--seed", type=int, default=1, help="HMMLEARN_SEED for the suite's global RNG (default 1)")
    ap.add_argument("--keep", metavar="DIR", help="build the shim package in DIR and keep it")
    ap.add_argument("-k", dest="select", metavar="EXPR", help="pytest -k expression")
    ap.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    ap.add_argument("--timeout", type=float, default=None, help="seconds before the pytest run is stopped")
    ap.add_argument("-v", "--verbose", action="store_true", help="print pytest's own output tail")
    a = ap.parse_args(argv)
    res = run_hmmlearn(control=a.control, seed=a.seed, keep=a.keep, select=a.select, timeout=a.timeout,
                       verbose=a.verbose)
    print_report(res)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


def _gensim_main(argv):
    path = os.path.join(ROOT, "tools", "peer_gensim.py")
    if not os.path.exists(path):
        print("peer_suites: tools/peer_gensim.py is not in this checkout; the gensim suite is not available",
              file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("peer_gensim", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(argv)


SUITES = {"hmmlearn": _hmmlearn_main, "gensim": _gensim_main}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUITES:
        print(f"usage: peer_suites.py {{{','.join(SUITES)}}} [options]  (peer_suites.py SUITE -h for options)",
              file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return SUITES[argv[0]](argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
