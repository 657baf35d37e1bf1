"""Run gensim 4.4's own Word2Vec and KeyedVectors tests against pyaiml (drop-in check).

What it does: copies gensim's installed ``test/test_word2vec.py`` and
``test/test_keyedvectors.py`` (and the files of ``test/test_data`` that they name) into a
temporary directory, rewrites only their import lines so that ``word2vec``,
``keyedvectors``, ``KeyedVectors`` (and the other names they take from ``gensim.models``)
come from ``pyaiml.models``, runs pytest on them, and prints passed/failed per file and in
total. Every assertion is left as gensim wrote it. ``--control`` runs the unmodified copies
against gensim itself, which must pass 100%.

Excluded tests are listed in ``EXCLUDED`` with the reason, and printed on every run: they
exercise gensim's own corpus readers and scripts (not Word2Vec), or load gensim pickles,
which pyaiml refuses by design unless the caller passes ``trusted=True`` (the test calls do
not, and this harness changes only import lines).

What it is not: a benchmark, or a test of pyaiml's own API (tests/test_word2vec*.py).
How it is tested: tests/test_peer_gensim.py (slow) runs it both ways and checks the pass
fraction. ``tools/peer_suites.py gensim`` calls :func:`main`.

Usage::

    PYTHONPATH=. python tools/peer_gensim.py            # pyaiml
    PYTHONPATH=. python tools/peer_gensim.py --control  # gensim itself
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ("test_word2vec.py", "test_keyedvectors.py")
TARGET = 0.98

_READERS = "exercises gensim's own corpus readers (LineSentence/CythonLineSentence/PathLineSentences), not Word2Vec"
_PICKLE = ("loads a gensim pickle: pyaiml never unpickles unless the caller passes trusted=True, and this "
           "harness changes only import lines (the same files load with trusted=True in "
           "tests/test_w2v_gensim_pickle.py)")
EXCLUDED = {
    "test_word2vec.py::TestWord2VecSentenceIterators::test_line_sentence_works_with_filename": _READERS,
    "test_word2vec.py::TestWord2VecSentenceIterators::test_cython_line_sentence_works_with_filename": _READERS,
    "test_word2vec.py::TestWord2VecSentenceIterators::test_line_sentence_works_with_compressed_file": _READERS,
    "test_word2vec.py::TestWord2VecSentenceIterators::test_line_sentence_works_with_normal_file": _READERS,
    "test_word2vec.py::TestWord2VecSentenceIterators::test_path_line_sentences": _READERS,
    "test_word2vec.py::TestWord2VecSentenceIterators::test_path_line_sentences_one_file": _READERS,
    "test_word2vec.py::TestWord2VecScripts::test_word2vec_stand_alone_script":
        "runs gensim's command-line script gensim.scripts.word2vec_standalone",
    "test_word2vec.py::TestWMD::test_nonzero": "Word Mover's Distance (wmdistance) needs POT; pyaiml has none",
    "test_word2vec.py::TestWMD::test_symmetry": "Word Mover's Distance (wmdistance) needs POT; pyaiml has none",
    "test_word2vec.py::TestWMD::test_identical_sentences":
        "Word Mover's Distance (wmdistance) needs POT; pyaiml has none",
    "test_word2vec.py::TestWord2VecModel::test_persistence_backwards_compatible": _PICKLE,
    "test_word2vec.py::TestWord2VecModel::test_load_old_model": _PICKLE,
    "test_word2vec.py::TestWord2VecModel::test_load_old_model_separates": _PICKLE,
    "test_word2vec.py::TestWord2VecModel::test_load_old_models_1_x": _PICKLE,
    "test_word2vec.py::TestWord2VecModel::test_load_old_models_2_x": _PICKLE,
    "test_word2vec.py::TestWord2VecModel::test_load_old_models_3_x": _PICKLE,
    "test_keyedvectors.py::Gensim320Test::test": _PICKLE,
}

# Each import line of the gensim files and its replacement for the pyaiml run. A line that is
# not found is an error (the gensim tests changed; the table must follow).
REWRITES = {
    "test_word2vec.py": [
        ("from gensim.models import word2vec, keyedvectors\n",
         "from pyaiml.models import word2vec, keyedvectors\n"),
        ("from gensim.test.utils import (\n",
         "from _peer_gensim_support import (\n"),
    ],
    "test_keyedvectors.py": [
        ("from gensim.models.keyedvectors import KeyedVectors, REAL, pseudorandom_weak_vector\n",
         "from pyaiml.models.keyedvectors import KeyedVectors, REAL, pseudorandom_weak_vector\n"),
        ("from gensim.test.utils import datapath\n",
         "from _peer_gensim_support import datapath\n"),
        ("import gensim.models.keyedvectors\n",
         "import _peer_gensim_support as gensim\n"),
    ],
}

# Imported by the rewritten files: gensim's test helpers (corpora, temporary files), with
# datapath() pointing at the copied test_data, and a ``gensim`` stand-in whose ``models``
# is pyaiml.models (test_keyedvectors.py spells ``gensim.models.KeyedVectors`` in full).
SUPPORT = '''"""Names the rewritten gensim tests import: gensim's test helpers, pyaiml's models."""
import os
import types

import gensim.test.utils as _gensim_test_utils
import gensim.utils as utils  # noqa: F401  (gensim.utils.open in test_keyedvectors.py)
from gensim.test.utils import (  # noqa: F401
    LeeCorpus, common_texts, get_tmpfile, lee_corpus_list, temporary_file,
)

import pyaiml.models as models  # noqa: F401

_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_data")


def datapath(fname):
    return os.path.join(_DATA, fname)


test = types.SimpleNamespace(utils=types.SimpleNamespace(get_tmpfile=get_tmpfile, datapath=datapath))
'''


def gensim_test_dir():
    try:
        import gensim.test
    except ImportError:
        return None
    return os.path.dirname(gensim.test.__file__)


def _data_names(text):
    """test_data entries a test file names through datapath('...')."""
    names = set()
    for m in re.finditer(r"datapath\(\s*['\"]([^'\"]+)['\"]", text):
        names.add(m.group(1).split("/")[0])
    names.add("lee_background.cor")  # LeeCorpus / lee_corpus_list
    return names


def _copy_data(src_dir, dst_dir, names):
    os.makedirs(dst_dir, exist_ok=True)
    for entry in sorted(os.listdir(src_dir)):
        if not any(entry == n or entry.startswith(n + ".") for n in names):
            continue  # sidecar arrays of a model (name.syn1neg.npy) come along with it
        s, d = os.path.join(src_dir, entry), os.path.join(dst_dir, entry)
        if os.path.isdir(s):
            shutil.copytree(s, d)
        else:
            shutil.copy2(s, d)


def rewrite(name, text):
    """The test file ``name`` with its gensim model imports pointed at pyaiml."""
    for old, new in REWRITES[name]:
        if text.count(old) != 1:
            raise RuntimeError(f"peer_gensim: expected the import line {old.strip()!r} once in {name}; "
                               f"found it {text.count(old)} times (has gensim's test file changed?)")
        text = text.replace(old, new)
    return text


def prepare(workdir, control=False):
    """Copy the test files (rewritten unless ``control``) and their data into ``workdir``."""
    src = gensim_test_dir()
    if src is None:
        raise RuntimeError("peer_gensim: gensim is not installed (pip install gensim==4.4.0)")
    names = set()
    for name in FILES:
        with open(os.path.join(src, name), encoding="utf8") as f:
            text = f.read()
        names |= _data_names(text)
        with open(os.path.join(workdir, name), "w", encoding="utf8") as f:
            f.write(text if control else rewrite(name, text))
    _copy_data(os.path.join(src, "test_data"), os.path.join(workdir, "test_data"), names)
    if not control:
        with open(os.path.join(workdir, "_peer_gensim_support.py"), "w", encoding="utf8") as f:
            f.write(SUPPORT)


def _results(xml_path):
    """{'file::Class::test': 'passed'|'failed'|'error'|'skipped'} and failure messages."""
    out, why = {}, {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        mod = case.get("classname", "")
        if mod:
            parts = mod.split(".")
            node = "::".join([parts[0] + ".py"] + parts[1:] + [case.get("name")])
        else:  # a file that failed to import: pytest reports it under its module name
            node = f"{case.get('name')}.py::<collection>"
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                status = "failed" if child.tag == "failure" else "error"
                why[node] = (child.get("message") or "").strip().splitlines()[0][:200] if child.get("message") \
                    else (child.text or "").strip().splitlines()[-1][:200]
            elif child.tag == "skipped":
                status = "skipped"
                why[node] = (child.get("message") or "")[:200]
        out[node] = status
    return out, why


def run(control=False, workdir=None, pytest_args=(), timeout=1800):
    """Run the suite; returns a dict with per-file and total counts and the failures."""
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="peer_gensim_")
    try:
        prepare(workdir, control)
        xml = os.path.join(workdir, "results.xml")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
               "--rootdir", workdir, f"--junitxml={xml}", *FILES, *pytest_args]
        for node in EXCLUDED:
            cmd += ["--deselect", node]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([workdir, ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        proc = subprocess.run(cmd, check=False, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
        if not os.path.exists(xml):
            raise RuntimeError(f"peer_gensim: pytest produced no report (exit {proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        status, why = _results(xml)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    per_file = {}
    for node, st in status.items():
        c = per_file.setdefault(node.split("::")[0], {"passed": 0, "failed": 0, "error": 0, "skipped": 0})
        c[st] += 1
    total = {k: sum(c[k] for c in per_file.values()) for k in ("passed", "failed", "error", "skipped")}
    ran = total["passed"] + total["failed"] + total["error"]
    return {"control": control, "per_file": per_file, "total": total,
            "fraction": total["passed"] / ran if ran else 0.0,
            "failures": {n: why.get(n, "") for n, s in status.items() if s in ("failed", "error")},
            "skipped": {n: why.get(n, "") for n, s in status.items() if s == "skipped"},
            "excluded": dict(EXCLUDED)}


def report(res, out=sys.stdout):
    side = "gensim (control)" if res["control"] else "pyaiml"
    print(f"gensim 4.4 test suite against {side}", file=out)
    print(f"excluded ({len(res['excluded'])}):", file=out)
    by_reason = {}
    for node, reason in res["excluded"].items():
        by_reason.setdefault(reason, []).append(node.split("::")[-1])
    for reason, tests in by_reason.items():
        print(f"  {', '.join(tests)}: {reason}", file=out)
    for fname, c in sorted(res["per_file"].items()):
        print(f"{fname}: {c['passed']} passed, {c['failed'] + c['error']} failed, {c['skipped']} skipped", file=out)
    t = res["total"]
    print(f"total: {t['passed']} passed, {t['failed'] + t['error']} failed, {t['skipped']} skipped; "
          f"pass fraction {res['fraction']:.3f}", file=out)
    for node, msg in res["skipped"].items():
        print(f"  skipped {node}: {msg}", file=out)
    for node, msg in res["failures"].items():
        print(f"  FAILED {node}: {msg}", file=out)


def main(argv=None):
    """Command line: returns 0 when the pass fraction meets the target (control: 100%)."""
    p = argparse.ArgumentParser(prog="peer_gensim", description=__doc__.split("\n\n")[0])
    p.add_argument("--control", action="store_true", help="run the unmodified tests against gensim")
    p.add_argument("--keep", metavar="DIR", help="work in DIR (kept afterwards) instead of a temporary directory")
    p.add_argument("-k", dest="keyword", help="pytest -k expression (select a subset)")
    args = p.parse_args(argv)
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
    res = run(control=args.control, workdir=args.keep, pytest_args=(["-k", args.keyword] if args.keyword else []))
    report(res)
    need = 1.0 if args.control else TARGET
    return 0 if res["fraction"] >= need and not (args.control and res["failures"]) else 1


if __name__ == "__main__":
    sys.exit(main())
