"""KeyedVectors/Word2Vec files: atomic saves (a save that fails midway leaves the previous
file as it was and no temporary behind), and loaders that refuse, with a ValueError naming
the file, what used to crash, allocate terabytes or load silently wrong: headers declaring
more than the file holds, text cut off inside its last number, rows beyond the header, keys
that are not UTF-8, negative or malformed vocabulary counts, inconsistent .npz saves."""
import errno
import io
import json
import os
import tracemalloc

import numpy as np
import pytest

import pyaiml._io
from pyaiml.models import KeyedVectors, Word2Vec


def _kv(n=6, D=3):
    kv = KeyedVectors(D)
    kv.add_vectors([f"w{i}" for i in range(n)], np.arange(n * D, dtype=np.float32).reshape(n, D) / 7)
    return kv


def _only(tmp_path, *names):
    assert sorted(os.listdir(tmp_path)) == sorted(names)  # no temporary left behind


# -- saves ----------------------------------------------------------------------------------
@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("key,msg", [("bad\ud800", "cannot be written as UTF-8"), ("two words", "contains ' '"),
                                     ("new\nline", r"contains '\\n'")])
def test_save_refuses_unwritable_keys_and_keeps_the_old_file(tmp_path, binary, key, msg):
    p, pv = tmp_path / "v.txt", tmp_path / "vocab.txt"
    _kv().save_word2vec_format(str(p), fvocab=str(pv), binary=binary)
    before, vbefore = p.read_bytes(), pv.read_bytes()
    kv = _kv()
    kv.add_vectors([key], np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match=f"save_word2vec_format: key .*{msg}"):
        kv.save_word2vec_format(str(p), fvocab=str(pv), binary=binary)
    assert p.read_bytes() == before and pv.read_bytes() == vbefore
    _only(tmp_path, "v.txt", "vocab.txt")


def test_save_refuses_inconsistent_vectors(tmp_path):
    p = tmp_path / "v.bin"
    _kv().save_word2vec_format(str(p), binary=True)
    before = p.read_bytes()
    kv = _kv()
    kv.vectors = kv.vectors[:4]  # 6 keys, 4 rows
    with pytest.raises(ValueError, match=r"vectors must have one row of 3 values per key, shape \(6, 3\). "
                                         r"Received shape \(4, 3\)"):
        kv.save_word2vec_format(str(p), binary=True)
    assert p.read_bytes() == before
    _only(tmp_path, "v.bin")


class _DiskFull(io.RawIOBase):
    """A file that accepts `room` bytes, then fails like a full disk."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def writable(self):
        return True

    def write(self, b):
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(b)
        return self.f.write(b)

    def fileno(self):
        return self.f.fileno()

    def close(self):
        self.f.close()
        super().close()


@pytest.mark.parametrize("binary", [False, True])
def test_save_failing_midway_keeps_the_old_file(tmp_path, binary, monkeypatch):
    p = tmp_path / "v.w2v"
    old = _kv(3)
    old.save_word2vec_format(str(p), binary=binary)
    before = p.read_bytes()
    real = os.fdopen
    monkeypatch.setattr(pyaiml._io.os, "fdopen", lambda fd, mode: _DiskFull(real(fd, mode), 40))
    with pytest.raises(OSError, match="No space left"):
        _kv(50).save_word2vec_format(str(p), binary=binary)
    monkeypatch.undo()
    assert p.read_bytes() == before
    _only(tmp_path, "v.w2v")
    kv = KeyedVectors.load_word2vec_format(str(p), binary=binary)
    assert kv.index_to_key == old.index_to_key and np.array_equal(kv.vectors, old.vectors)


def test_append_is_atomic_too(tmp_path, monkeypatch):
    p = tmp_path / "v.txt"
    _kv(2).save_word2vec_format(str(p), total_vec=4)
    more = KeyedVectors(3)
    more.add_vectors(["x", "y"], np.ones((2, 3), np.float32))
    before = p.read_bytes()
    real = os.fdopen
    monkeypatch.setattr(pyaiml._io.os, "fdopen", lambda fd, mode: _DiskFull(real(fd, mode), len(before) + 5))
    with pytest.raises(OSError):
        more.save_word2vec_format(str(p), write_header=False, append=True)
    monkeypatch.undo()
    assert p.read_bytes() == before
    more.save_word2vec_format(str(p), write_header=False, append=True)
    kv = KeyedVectors.load_word2vec_format(str(p))
    assert kv.index_to_key == ["w0", "w1", "x", "y"]


def test_saved_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        _kv().save_word2vec_format(str(tmp_path / "a.txt"))
        _kv().save(str(tmp_path / "a.npz"))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == 0o640
    assert os.stat(tmp_path / "a.npz").st_mode & 0o777 == 0o640
    os.chmod(tmp_path / "a.txt", 0o604)
    _kv().save_word2vec_format(str(tmp_path / "a.txt"))  # replacing a file keeps its mode
    assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == 0o604


# -- word2vec formats -----------------------------------------------------------------------
@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("header", [b"1000000000000 4\n", b"300000000 4\n", b"2 1000000000000\n"])
def test_header_larger_than_the_file_allocates_nothing(tmp_path, binary, header):
    p = tmp_path / "huge.bin"
    p.write_bytes(header + b"a " + b"\x00" * 16 + b"\n")
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=f"load_word2vec_format: {p}.*the header declares .*but only 19 follow"):
            KeyedVectors.load_word2vec_format(str(p), binary=binary)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_text_cut_off_inside_the_last_number(tmp_path):
    p = tmp_path / "v.txt"
    kv = _kv()
    kv.vectors[-1, -1] = 0.125
    kv.save_word2vec_format(str(p))
    data = p.read_bytes()
    assert data.endswith(b" 0.125\n")
    for cut in (1, 2, 3):  # '0.125' -> '0.125' without newline, '0.12', '0.1'
        p.write_bytes(data[:-cut])
        with pytest.raises(ValueError, match=f"{p}.*line 7 does not end with a newline: the file is cut off"):
            KeyedVectors.load_word2vec_format(str(p))
    p.write_bytes(data[:-cut].split(b"\n", 1)[1])
    with pytest.raises(ValueError, match="line 6 does not end with a newline"):
        KeyedVectors.load_word2vec_format(str(p), no_header=True)


@pytest.mark.parametrize("binary", [False, True])
def test_more_rows_than_the_header_says(tmp_path, binary):
    p = tmp_path / "v"
    _kv(6).save_word2vec_format(str(p), binary=binary)
    data = p.read_bytes()
    p.write_bytes(b"5" + data[1:])
    with pytest.raises(ValueError, match=f"{p}.*the header says 5 vectors, but more data follows vector 5"):
        KeyedVectors.load_word2vec_format(str(p), binary=binary)
    assert len(KeyedVectors.load_word2vec_format(str(p), binary=binary, limit=3)) == 3


def test_binary_key_that_is_not_utf8(tmp_path):
    p = tmp_path / "v.bin"
    p.write_bytes(b"1 2\n\xff\xfe " + np.array([1, 2], "<f4").tobytes() + b"\n")
    with pytest.raises(ValueError, match=f"load_word2vec_format: {p}.*vector 0: the key is not utf8 text"):
        KeyedVectors.load_word2vec_format(str(p), binary=True)
    kv = KeyedVectors.load_word2vec_format(str(p), binary=True, unicode_errors="replace")
    assert kv.index_to_key == ["\ufffd\ufffd"] and kv.vectors.tolist() == [[1.0, 2.0]]


@pytest.mark.parametrize("line,msg", [
    (b"w1 -3\n", r"count must be >= 0 \(a word count\) and < 2\*\*63. Received -3 for 'w1' on line 2"),
    (b"w1 9223372036854775808\n", r"count must be .* Received 9223372036854775808 for 'w1'"),
    (b"w1 lots\n", r"line 2 is not '<word> <count>'"),
    (b"w1\n", r"line 2 is not '<word> <count>'"),
    (b"w1 \xff\n", r"line 2 is not utf8 text"),
])
def test_bad_vocabulary_files(tmp_path, line, msg):
    p, pv = tmp_path / "v.txt", tmp_path / "vocab.txt"
    _kv().save_word2vec_format(str(p), fvocab=str(pv))
    pv.write_bytes(b"w0 10\n" + line)
    with pytest.raises(ValueError, match=f"load_word2vec_format: {pv}.*{msg}"):
        KeyedVectors.load_word2vec_format(str(p), fvocab=str(pv))


def test_vocabulary_counts_round_trip(tmp_path):
    p, pv = tmp_path / "v.txt", tmp_path / "vocab.txt"
    kv = _kv()
    for i, k in enumerate(kv.index_to_key):
        kv.set_vecattr(k, "count", 100 - 7 * i)
    kv.save_word2vec_format(str(p), fvocab=str(pv))
    back = KeyedVectors.load_word2vec_format(str(p), fvocab=str(pv))
    assert [back.get_vecattr(k, "count") for k in back.index_to_key] == [100 - 7 * i for i in range(6)]


# -- .npz saves -----------------------------------------------------------------------------
def _rewrite(path, **changes):
    z = dict(np.load(path))
    z.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del z[k]
    np.savez(path, **z)


def _model(tmp_path, **kw):
    corpus = [[f"a{i % 5}", f"b{(i * 3) % 7}", "c"] for i in range(30)]
    m = Word2Vec(corpus, vector_size=5, min_count=1, epochs=1, workers=1, **kw)
    p = str(tmp_path / "m.npz")
    m.save(p)
    return m, p


def _meta(d):
    return np.frombuffer(json.dumps(d).encode(), np.uint8)


def test_keyedvectors_npz_checks(tmp_path):
    kv = _kv()
    kv.set_vecattr("w0", "count", 3)
    p = str(tmp_path / "kv.npz")
    kv.save(p)
    back = KeyedVectors.load(p)
    assert back.index_to_key == kv.index_to_key and np.array_equal(back.vectors, kv.vectors)
    _rewrite(p, attr_count=np.array([3, 0, 0, -2, 0, 0]))
    with pytest.raises(ValueError, match=f"KeyedVectors.load: {p}.*attr_count must be >= 0 \\(word counts\\). "
                                         "Received -2 at row 3"):
        KeyedVectors.load(p)
    kv.save(p)
    _rewrite(p, keys=_meta(["w0", "w1", "w0", "w3", "w4", "w5"]))
    with pytest.raises(ValueError, match="key 'w0' appears twice"):
        KeyedVectors.load(p)
    kv.save(p)
    _rewrite(p, vectors=np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match=r"vectors must be a float array of shape \(6, 3\)"):
        KeyedVectors.load(p)
    kv.save(p)
    _rewrite(p, meta=np.frombuffer(b"{not json", np.uint8))
    with pytest.raises(ValueError, match="meta is not JSON"):
        KeyedVectors.load(p)
    kv.save(p)
    _rewrite(p, score=np.zeros(3))
    with pytest.raises(ValueError, match=r"unexpected members \['score'\]"):
        KeyedVectors.load(p)
    np.savez(p, meta=_meta({"format": "pyaiml.KeyedVectors/1", "vector_size": 3}),
             keys=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="holds Python objects"):
        KeyedVectors.load(p)


def test_word2vec_npz_checks(tmp_path):
    m, p = _model(tmp_path, hs=1, negative=2)
    back = Word2Vec.load(p)
    assert np.array_equal(back.syn1, m.syn1) and np.array_equal(back.syn1neg, m.syn1neg)
    _rewrite(p, counts=-np.asarray(m.wv.expandos["count"]))
    with pytest.raises(ValueError, match=f"Word2Vec.load: {p}.*counts must be >= 0"):
        Word2Vec.load(p)
    m.save(p)
    _rewrite(p, syn1=None)
    with pytest.raises(ValueError, match=r"members .* expected .*'syn1'.* for negative=2, hs=1"):
        Word2Vec.load(p)
    m.save(p)
    meta = json.loads(np.load(p)["meta"].tobytes())
    _rewrite(p, meta=_meta({**meta, "window": 2**31}))
    with pytest.raises(ValueError, match=f"{p}.*settings are invalid: Word2Vec: window must be an integer <= "
                                         "2147483647"):
        Word2Vec.load(p)
    m.save(p)
    _rewrite(p, sample_thr=np.asarray(m._sample_thr, np.int64))
    with pytest.raises(ValueError, match="sample_thr must be .* uint32 values"):
        Word2Vec.load(p)


def test_npz_load_reads_arrays_in_place(tmp_path):
    """read_npz copies each stored member straight into its array: loading 8 MB of vectors
    peaks near 8 MB, not at twice that."""
    kv = KeyedVectors(250)
    kv.add_vectors([f"w{i}" for i in range(8000)], np.random.default_rng(0).standard_normal((8000, 250)))
    p = str(tmp_path / "big.npz")
    kv.save(p)
    tracemalloc.start()
    try:
        back = KeyedVectors.load(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(back.vectors, kv.vectors)
    assert peak < kv.vectors.nbytes * 1.3 + (2 << 20), (peak, kv.vectors.nbytes)
