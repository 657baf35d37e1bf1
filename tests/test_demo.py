"""Smoke tests of ``pyaiml demo`` (pyaiml/demo.py) and of the ``pyaiml bench`` report files.

What they are: the demo's machinery with ``--quick`` budgets (every section trains for a
second or so), the FSDD look-up and its skip / error paths, the progress bar in both modes,
and ``pyaiml bench <suite> --quick --json --plot`` on a one-case suite, with the JSON read
back and the PNG decoded. What they are not: checks of how well the full demo learns (its
budgets take minutes; run ``pyaiml demo`` and read the summary) or of benchmark figures.
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_demo.py
"""
import io
import json
import os
import sys

import numpy as np
import pytest

from pyaiml import cli, demo


def _run(capsys, **kw):
    rc = demo.main(quick=True, **kw)
    return rc, capsys.readouterr().out


# ----------------------------------------------------------------------------- demo
def test_parse_only():
    assert demo.parse_only(None) == list(demo.SECTIONS)
    assert demo.parse_only("text, word2vec") == ["word2vec", "text"]  # demo order, spaces allowed
    for bad in ("", "cnn,images", "all"):
        with pytest.raises(ValueError, match="--only must be a comma-separated subset"):
            demo.parse_only(bad)


def test_cli_rejects_unknown_section(capsys):
    assert cli.main(["demo", "--only", "cnn,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["demo", "--threads", "0"])


def test_quick_word2vec_cnn_text(capsys, monkeypatch):
    recorded = []
    run_demo = demo.run_demo
    monkeypatch.setattr(demo, "run_demo", lambda *a, **kw: recorded.extend(run_demo(*a, **kw)) or recorded)
    rc, out = _run(capsys, only="word2vec,cnn,text")
    assert rc == 0, out
    assert "model.wv['machine learning'][:8] = [" in out
    assert "(shape (100,))" in out
    assert "Nearest neighbours" in out
    assert "epoch 2/2" in out                         # one progress line per epoch (stdout is not a TTY)
    assert "Epoch 1/1" in out and "test accuracy" in out
    assert "validation loss" in out and "ROMEO:" in out
    summary = out.split("\nSummary\n", 1)[1].splitlines()
    rows = {ln.split()[0]: ln.split() for ln in summary[2:]}
    assert set(rows) == {"word2vec", "cnn", "text", "total"}
    # the seconds column is each section's measured time and the total covers them all
    assert [r.section for r in recorded] == ["word2vec", "cnn", "text"]
    for r in recorded:
        assert rows[r.section][1] == r.status == "ok", out
        assert rows[r.section][-1] == f"{r.seconds:.1f}"
    total = float(rows["total"][-1])
    assert total + 0.05 >= sum(r.seconds for r in recorded)
    # the language model trains until its time budget is spent
    assert recorded[2].seconds >= demo.QUICK.text_seconds
    assert "speech" not in rows


def test_cnn_data_is_the_mission_shape():
    xtr, xte, ytr, yte = demo.digits_32x32x3()
    assert xtr.shape[1:] == (32, 32, 3) and xtr.dtype == np.float32
    assert len(xtr) + len(xte) == 1797 and len(yte) == len(xte)
    assert 0.0 <= xtr.min() and xtr.max() <= 1.0
    # each 8x8 pixel became a 4x4 block repeated over the 3 channels
    assert np.array_equal(xtr[0, :4, :4, 0], np.full((4, 4), xtr[0, 0, 0, 0]))
    assert np.array_equal(xtr[0, ..., 0], xtr[0, ..., 2])
    m = demo.mission_cnn()
    assert [type(layer).__name__ for layer in m.layers] == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D",
                                                            "Flatten", "Dense"]


def _fake_fsdd(root):
    rec = root / "recordings"
    rec.mkdir(parents=True)
    (rec / "0_someone_0.wav").write_bytes(b"")
    return root


def test_find_fsdd_order(tmp_path):
    cwd = tmp_path / "work" / "repo"
    cwd.mkdir(parents=True)
    # nothing anywhere: None, and the one default was tried
    p, src, tried = demo.find_fsdd(None, environ={}, cwd=str(cwd))
    assert p is None and src == "default" and tried == [str(cwd / "data" / "fsdd")]
    # a development checkout's ../shared/data/fsdd is not a place the library knows about
    _fake_fsdd(tmp_path / "work" / "shared" / "data" / "fsdd")
    p, src, _ = demo.find_fsdd(None, environ={}, cwd=str(cwd))
    assert p is None and src == "default"
    # ./data/fsdd
    _fake_fsdd(cwd / "data" / "fsdd")
    p, src, _ = demo.find_fsdd(None, environ={}, cwd=str(cwd))
    assert (p, src) == (str(cwd / "data" / "fsdd"), "default")
    # the environment variable wins over the default, --fsdd over both (returned even if empty)
    p, src, _ = demo.find_fsdd(None, environ={"PYAIML_FSDD": str(tmp_path / "env")}, cwd=str(cwd))
    assert (p, src) == (str(tmp_path / "env"), "PYAIML_FSDD")
    p, src, _ = demo.find_fsdd("mine", environ={"PYAIML_FSDD": "x"}, cwd=str(cwd))
    assert (p, src) == (str(cwd / "mine"), "--fsdd")


def test_speech_skipped_without_data(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYAIML_FSDD", raising=False)
    rc, out = _run(capsys, only="speech")
    assert rc == 0, out                               # a skip is not an error
    assert "FSDD not found" in out and "--fsdd" in out and "PYAIML_FSDD" in out
    assert "speech     skipped" in out


def test_speech_explicit_path_without_data_fails(capsys, tmp_path):
    rc, out = _run(capsys, only="speech", fsdd=str(tmp_path / "nowhere"))
    assert rc == 1
    assert "FAILED" in out and "holds no .wav files" in out
    assert "speech     failed" in out


def test_speech_quick_on_fsdd(capsys, fsdd_path):
    # found through PYAIML_FSDD (tests/conftest.py sets it when the shared copy exists)
    rc, out = _run(capsys, only="speech")
    assert rc == 0, out
    assert f"FSDD at {os.path.abspath(fsdd_path)} (PYAIML_FSDD)" in out
    assert "official split" in out and "test accuracy" in out and "pyaiml.hmm.HMMClassifier" in out
    acc = float(out.split("test accuracy ")[1].split()[0])
    assert acc > 0.2                                  # 2 EM iterations on 100 recordings; chance is 0.1


def test_speech_explicit_path_wins_over_the_environment(capsys, fsdd_path, tmp_path, monkeypatch):
    monkeypatch.setenv("PYAIML_FSDD", str(tmp_path / "nowhere"))
    rc, out = _run(capsys, only="speech", fsdd=fsdd_path)
    assert rc == 0, out
    assert f"FSDD at {os.path.abspath(fsdd_path)} (--fsdd)" in out


def test_progress_bar_modes(monkeypatch):
    class Term(io.StringIO):
        def isatty(self):
            return True

    for stream, tty in ((Term(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stdout", stream)
        bar = demo.Progress("epoch", 3)
        for k in (1, 2, 3):
            bar.update(k, f"loss {k}")
        bar.close()
        text = stream.getvalue()
        if tty:
            assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
            assert "[" + "#" * 28 + "] 3/3" in text
        else:
            assert "\r" not in text and text.count("\n") == 3
            assert "epoch 3/3" in text.splitlines()[-1]


# ----------------------------------------------------------------------------- bench report files
TINY_SUITE = '''
import numpy as np
from pyaiml.bench.harness import Case, check_close
from pyaiml.ops import matmul

def cases(quick=False):
    a = np.ones((8, 8), np.float32)
    yield Case(suite="tiny", name="matmul 8", shape="8x8x8", flops=2 * 8 ** 3, ours="pyaiml",
               fns={"pyaiml": lambda: matmul(a, a), "numpy": lambda: a @ a}, peer="numpy",
               validate=lambda: check_close("tiny", matmul(a, a), a @ a, 1e-5, 1e-5))
    yield Case(suite="tiny", name="broken", shape="-", flops=None, ours="pyaiml",
               fns={"pyaiml": lambda: None}, validate=lambda: check_close("broken", [1.0], [2.0], 1e-6, 1e-6))
'''


def test_bench_writes_json_and_png(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    import matplotlib.image as mpimg

    from pyaiml import bench

    (tmp_path / "pyaiml_tiny_suite.py").write_text(TINY_SUITE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(bench.SUITES, "tiny", "pyaiml_tiny_suite")
    js, png = tmp_path / "r.json", tmp_path / "r.png"
    rc = cli.main(["bench", "tiny", "--quick", "--threads", "1", "--json", str(js), "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 1                                    # the failed validation is reported in the exit status
    assert "ERROR" in out and "JSON written" in out and "plot written" in out
    report = json.loads(js.read_text())
    assert report["quick"] is True and report["machine"]["cores"] == os.cpu_count()
    # a quick run says, in its table and its JSON (and its chart's title), that its ratios are
    # not comparable with a full run's
    assert report["comparable"] is False and "not comparable" in report["note"]
    assert out.count("not comparable") == 2
    assert set(report["suite_seconds"]) == {"tiny"}
    ok, bad = report["rows"]
    t = ok["timings"]
    assert ok["ratio"] == pytest.approx(t["numpy"]["median_s"] / t["pyaiml"]["median_s"], rel=1e-12)
    assert t["pyaiml"]["gflops"] == pytest.approx(2 * 8 ** 3 / t["pyaiml"]["median_s"] / 1e9, rel=1e-12)
    assert t["pyaiml"]["p25_s"] <= t["pyaiml"]["median_s"] <= t["pyaiml"]["p75_s"]
    assert "differs" in bad["error"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(str(png))
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 200


def test_bench_suite_that_cannot_start_is_a_row(tmp_path, monkeypatch, capsys):
    from pyaiml import bench

    (tmp_path / "pyaiml_bad_suite.py").write_text("def cases(quick=False):\n    raise ImportError('no peer here')\n"
                                                  "    yield\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(bench.SUITES, "bad", "pyaiml_bad_suite")
    js = tmp_path / "r.json"
    rc = cli.main(["bench", "bad", "--quick", "--threads", "1", "--json", str(js)])
    capsys.readouterr()
    assert rc == 1
    (row,) = json.loads(js.read_text())["rows"]
    assert row["suite"] == "bad" and "no peer here" in row["error"]


def test_cpu_per_wall_times_after_a_lead_in_call():
    from pyaiml.bench.harness import cpu_per_wall

    calls = []
    r = cpu_per_wall(lambda: calls.append(1), n=5, settle=0)
    assert len(calls) == 6 and r >= 0          # one untimed lead-in call, then the n timed ones
    calls.clear()
    cpu_per_wall(lambda: calls.append(1), min_time=0.0, settle=0)
    assert len(calls) == 4                     # at least three timed calls however short the budget
    calls.clear()
    cpu_per_wall(lambda: (calls.append(1), sum(range(2000))), min_time=0.1, settle=0)
    assert len(calls) > 4                      # a budget longer than one call takes several
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="cpu_per_wall: n must be an int >= 1"):
            cpu_per_wall(lambda: None, n=bad, settle=0)
