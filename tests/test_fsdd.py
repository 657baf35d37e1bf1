"""pyaiml.datasets.fsdd.load_fsdd: the layout, the official split, bad files (raise / warn and
skip), on a small generated folder, and on FSDD itself (found through PYAIML_FSDD, see
tests/conftest.py; skipped when absent)."""
import os

import numpy as np
import pytest

from pyaiml.audio import mfcc_features, write_wav
from pyaiml.datasets.fsdd import load_fsdd


def _make(folder, speakers=("alice", "bob"), digits=(0, 1, 2), indexes=(0, 4, 5, 9)):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for s in speakers:
        for d in digits:
            for i in indexes:
                n = 800 + 10 * d + i
                write_wav(os.path.join(folder, f"{d}_{s}_{i}.wav"), 0.3 * rng.standard_normal(n), 8000)


def test_layout_and_split(tmp_path):
    _make(tmp_path / "recordings")
    (tmp_path / "README.md").write_text("x")
    (tmp_path / "recordings" / "notes.txt").write_text("ignored")
    for p in (tmp_path, tmp_path / "recordings"):  # the dataset folder or its recordings/ folder
        ds = load_fsdd(p)
        assert len(ds) == 2 * 3 * 4 and ds.skipped == []
        assert ds.filenames[0] == "0_alice_0.wav" and ds.filenames[-1] == "2_bob_9.wav"
        for k, f in enumerate(ds.filenames):
            d, s, i = f[:-4].split("_")
            assert (ds.digits[k], ds.speakers[k], ds.indexes[k]) == (int(d), s, int(i))
            assert ds.signals[k].dtype == np.float32 and ds.signals[k].shape == (800 + 10 * int(d) + int(i),)
        assert set(ds.rates.tolist()) == {8000}
        tr, te = ds.split()
        assert np.array_equal(te, ds.test_idx) and np.array_equal(tr, ds.train_idx)
        assert set(ds.indexes[te].tolist()) == {0, 4} and set(ds.indexes[tr].tolist()) == {5, 9}
        assert len(tr) + len(te) == len(ds) and not set(tr) & set(te)
    tr, te = ds.split(test_speaker="bob")
    assert set(ds.speakers[te].tolist()) == {"bob"} and set(ds.speakers[tr].tolist()) == {"alice"}
    with pytest.raises(ValueError, match=r"test_speaker must be one of \['alice', 'bob'\]"):
        ds.split(test_speaker="carol")
    sub = ds.subset(ds.test_idx)
    assert len(sub) == len(ds.test_idx) and len(sub.test_idx) == len(sub)
    only = load_fsdd(tmp_path, speakers=["alice"])
    assert set(only.speakers.tolist()) == {"alice"} and len(only) == 12


def test_bad_files(tmp_path):
    _make(tmp_path)
    good = (tmp_path / "0_alice_5.wav").read_bytes()
    (tmp_path / "1_alice_5.wav").write_bytes(good[:60])          # truncated
    (tmp_path / "2_bob_9.wav").write_bytes(b"not a wav file at all")
    (tmp_path / "oops.wav").write_bytes(good)                    # name off the pattern
    with pytest.raises(ValueError, match=r"load_fsdd: .*oops\.wav: name does not follow"):
        load_fsdd(tmp_path)
    os.remove(tmp_path / "oops.wav")
    with pytest.raises(ValueError, match=r"load_fsdd: cannot read .*1_alice_5\.wav: .*truncated"):
        load_fsdd(tmp_path)
    (tmp_path / "oops.wav").write_bytes(good)
    with pytest.warns(RuntimeWarning, match=r"skipped 3 file\(s\)") as rec:
        ds = load_fsdd(tmp_path, on_error="warn")
    msg = str(rec[0].message)
    assert "1_alice_5.wav" in msg and "2_bob_9.wav" in msg and "oops.wav" in msg and "not a RIFF/WAVE" in msg
    assert len(ds) == 24 - 2 and "1_alice_5.wav" not in ds.filenames
    assert sorted(f for f, _ in ds.skipped) == ["1_alice_5.wav", "2_bob_9.wav", "oops.wav"]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_fsdd(tmp_path / "nope")
    with pytest.raises(ValueError, match="no readable"):
        load_fsdd(tmp_path)
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'warn'"):
        load_fsdd(tmp_path, on_error="ignore")


def test_shared_fsdd(fsdd_path):
    ds = load_fsdd(fsdd_path)
    assert len(ds) == 2500 and ds.skipped == []
    assert sorted(set(ds.speakers.tolist())) == ["george", "jackson", "nicolas", "theo", "yweweler"]
    assert set(ds.rates.tolist()) == {8000}
    assert len(ds.test_idx) == 250 and len(ds.train_idx) == 2250
    assert np.bincount(ds.digits[ds.test_idx]).tolist() == [25] * 10
    # every recording gives features (sample of 50 to keep the test short)
    for k in range(0, 2500, 50):
        F = mfcc_features(ds.signals[k], ds.rates[k], name=ds.filenames[k])
        assert F.shape[1] == 39 and F.shape[0] >= 5 and np.isfinite(F).all()
