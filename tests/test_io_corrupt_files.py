"""Every loader on damaged copies of a valid file of its format: truncated at many lengths and
with bytes flipped at many positions.

Each load must either succeed or raise ValueError naming the file: never another exception
type, never a crash, never an allocation beyond a few MB (the files are a few KB; peaks are
measured with tracemalloc). What a successful load may return depends on the format:
- formats with checksums (the .npz saves of KeyedVectors, Word2Vec, pyaiml.hmm models and
  HMMClassifier; Keras .keras archives): exactly the saved content, truncated or flipped;
- formats without (word2vec text and binary, WAV): exactly the saved content when truncated
  (a cut is always detected, even inside the last number of a text file); after a flipped
  byte, content of the same layout (a flipped digit or key byte cannot be detected).
The default run samples positions (all of the first and last 32 bytes, where the headers
and archive directories are, and 48 spread over the rest) and one flip pattern per position;
the slow run cuts at every byte and flips every byte three ways.
"""
import tracemalloc

import numpy as np
import pytest

from pyaiml import hmm as ph
from pyaiml.audio import read_wav, write_wav
from pyaiml.hmm import HMMClassifier
from pyaiml.keras import layers as L
from pyaiml.keras.models import Sequential, load_model
from pyaiml.models import KeyedVectors, Word2Vec

PEAK_LIMIT = 16 << 20  # bytes any one load of these few-KB files may allocate at its peak


# -- one valid file per format, its loader and its content ------------------------------------
def _kv():
    r = np.random.default_rng(0)
    kv = KeyedVectors(5)
    kv.add_vectors([f"w{i}" for i in range(9)] + ["naïve"], r.standard_normal((10, 5)).astype(np.float32))
    for i, k in enumerate(kv.index_to_key):
        kv.set_vecattr(k, "count", 50 - i)
    return kv


def _kv_content(kv):
    return kv.index_to_key, kv.vectors, {k: v.tolist() for k, v in kv.expandos.items()}


def _w2v_model():
    corpus = [[f"a{i % 5}", f"b{(i * 3) % 7}", "c"] for i in range(30)]
    return Word2Vec(corpus, vector_size=4, min_count=1, epochs=1, workers=1, hs=1, negative=2, seed=3)


def _hmm_content(m):
    arrays = {n: np.asarray(m._raw(n)) for n in m._saved_attributes() if hasattr(m, n)}
    cfg = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in m.get_params().items()}
    return type(m).__name__, arrays, cfg, list(m.monitor_.history)


def _gmm():
    m = ph.GMMHMM(2, 2, covariance_type="full", init_params="")
    m.startprob_, m.transmat_ = np.array([0.6, 0.4]), np.array([[0.7, 0.3], [0.2, 0.8]])
    m.weights_ = np.array([[0.3, 0.7], [0.5, 0.5]])
    m.means_ = np.arange(8.0).reshape(2, 2, 2) / 4
    m.covars_ = np.tile(np.eye(2), (2, 2, 1, 1)) * 1.5
    return m


def _cat():
    m = ph.CategoricalHMM(2, init_params="")
    m.startprob_, m.transmat_ = np.array([0.5, 0.5]), np.array([[0.9, 0.1], [0.4, 0.6]])
    m.emissionprob_ = np.array([[0.2, 0.8, 0.0], [0.1, 0.1, 0.8]])
    return m


def _clf():
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(10, 2)) + (i % 2) * 3 for i in range(6)]
    return HMMClassifier(n_states=2, n_iter=2).fit(X, [7, 9] * 3)


def _clf_content(c):
    return c.classes_.tolist(), c.get_params(), [_hmm_content(m) for m in c.models_], c.n_features_in_


def _keras():
    m = Sequential([L.Dense(3, activation="relu", input_shape=(4,)), L.Dense(2, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    m.fit(x, np.eye(2, dtype=np.float32)[[0, 1] * 4], epochs=1, batch_size=4, verbose=0)
    return m


def _keras_content(m):
    return (m.get_config(), m.get_weights(), m.optimizer.iterations,
            [{k: v for k, v in s.items()} for s in m.optimizer._state], m.history.epoch)


def _w2v_layout(kv):
    # a flipped key byte can repeat another key, and the first of two equal keys is kept (as gensim)
    return kv.vectors.shape[1], len(kv) + (len(kv) == 9)


def _wav_layout(r):
    y, _ = r
    return y.shape[1:], y.dtype


# name: (write(path), load(path), content(loaded), checksummed, layout(loaded) for unchecked formats)
FORMATS = {
    "w2v-text": (lambda p: _kv().save_word2vec_format(p), KeyedVectors.load_word2vec_format,
                 lambda kv: _kv_content(kv)[:2], False, _w2v_layout),
    "w2v-binary": (lambda p: _kv().save_word2vec_format(p, binary=True),
                   lambda p: KeyedVectors.load_word2vec_format(p, binary=True), lambda kv: _kv_content(kv)[:2],
                   False, _w2v_layout),
    "keyedvectors-npz": (lambda p: _kv().save(p), KeyedVectors.load, _kv_content, True, None),
    "word2vec-npz": (lambda p: _w2v_model().save(p), Word2Vec.load,
                     lambda m: (_kv_content(m.wv), m.syn1neg, m.syn1, m.window, m.seed, m.corpus_count), True, None),
    "hmm-gaussian": (lambda p: _clf().models_[0].save(p), ph.load, _hmm_content, True, None),
    "hmm-gmm-full": (lambda p: _gmm().save(p), ph.load, _hmm_content, True, None),
    "hmm-categorical": (lambda p: _cat().save(p), ph.load, _hmm_content, True, None),
    "hmm-classifier": (lambda p: _clf().save(p), HMMClassifier.load, _clf_content, True, None),
    "keras": (lambda p: _keras().save(p), load_model, _keras_content, True, None),
    "wav-pcm16": (lambda p: write_wav(p, np.sin(np.arange(40)).reshape(20, 2), 8000), read_wav, lambda r: r, False,
                  _wav_layout),
    "wav-float-extensible": (lambda p: write_wav(p, np.cos(np.arange(9)) / 2, 16000, "FLOAT", extensible=True),
                             read_wav, lambda r: r, False, _wav_layout),
}


def _equal(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _positions(n, exhaustive, edge=32, count=48):
    if exhaustive or n <= 2 * edge + count:
        return list(range(n))
    middle = np.linspace(edge, n - edge, count, endpoint=False).astype(int).tolist()
    return sorted(set(range(edge)) | set(middle) | set(range(n - edge, n)))


def _check(name, tmp_path, exhaustive):
    write, load, content, checksummed, layout = FORMATS[name]
    good = str(tmp_path / f"good-{name}")
    write(good)
    data = open(good, "rb").read()
    want = content(load(good))
    bad = str(tmp_path / f"bad-{name}")
    stats = {"same": 0, "value-error": 0, "other-content": 0}
    positions = _positions(len(data), exhaustive)
    damaged = [(f"cut at {n}", data[:n], True) for n in positions]
    masks = (0x01, 0x80, 0xFF)
    for k, i in enumerate(positions):
        for mask in masks if exhaustive else masks[k % 3:k % 3 + 1]:
            b = bytearray(data)
            b[i] ^= mask
            damaged.append((f"byte {i} ^ {mask:#x}", bytes(b), False))
    tracemalloc.start()
    try:
        for what, payload, cut in damaged:
            with open(bad, "wb") as f:
                f.write(payload)
            tracemalloc.reset_peak()
            try:
                got = load(bad)
            except ValueError as e:
                assert bad in str(e), f"{name}, {what}: the error does not name the file: {e}"
                stats["value-error"] += 1
                continue
            except Exception as e:  # noqa: BLE001 - the point of the test
                pytest.fail(f"{name}, {what}: {type(e).__name__} instead of ValueError: {e}")
            finally:
                peak = tracemalloc.get_traced_memory()[1]
                assert peak < PEAK_LIMIT, f"{name}, {what}: the load allocated {peak} bytes"
            if _equal(content(got), want):
                stats["same"] += 1
            else:
                assert not checksummed and not cut, f"{name}, {what}: loaded without error but changed"
                assert _equal(layout(got), layout(load(good))), f"{name}, {what}: loaded with another layout"
                stats["other-content"] += 1
    finally:
        tracemalloc.stop()
    assert stats["value-error"] > len(damaged) // 4, stats  # most damage is detected
    return stats


@pytest.mark.parametrize("name", list(FORMATS))
def test_damaged_files_give_the_content_or_a_value_error(name, tmp_path):
    _check(name, tmp_path, exhaustive=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FORMATS))
def test_damaged_files_every_byte(name, tmp_path):
    _check(name, tmp_path, exhaustive=True)


def test_missing_files_stay_file_not_found(tmp_path):
    p = str(tmp_path / "absent")
    for name, (_, load, *_rest) in FORMATS.items():
        with pytest.raises(FileNotFoundError):
            load(p)
