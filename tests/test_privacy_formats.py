"""Encrypted files for every format pyaiml saves: Keras models and weights, HMMs and
HMMClassifier, Word2Vec, KeyedVectors (native and word2vec formats), TransformerLM and its
tokenizer. Each format: ``save(path, key=)`` / ``load(path, key=)`` gives an identical model;
a wrong key, a flipped byte in the header or the body, a truncation, a replayed file with an
altered version field, an encrypted file without a key and a plain file where a key is given
each raise a clear ValueError and load nothing; a save that fails leaves the old file."""
import json
import struct

import numpy as np
import pytest

pytest.importorskip("cryptography")

from pyaiml import hmm, keras  # noqa: E402
from pyaiml._io import EncryptedFileError  # noqa: E402
from pyaiml.models import KeyedVectors, Word2Vec  # noqa: E402
from pyaiml.privacy import crypto  # noqa: E402
from pyaiml.seq import CharTokenizer, TransformerLM  # noqa: E402

K1 = bytes(range(32))
K2 = bytes(range(1, 33))
CORPUS = [["the", "cat", "sat", "on", "the", "mat"], ["a", "dog", "sat", "on", "a", "log"]] * 20


def _keras():
    keras.utils.set_random_seed(1)
    m = keras.Sequential([keras.layers.Conv1D(4, 3, activation="relu", input_shape=(10, 2)),
                          keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(16, 10, 2)).astype(np.float32)
    m.fit(x, keras.utils.to_categorical(np.arange(16) % 3, 3), epochs=1, verbose=0)
    return m


def _weights_equal(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


def _gauss():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (40, 2)), rng.normal(4, 1, (40, 2))])
    return hmm.GaussianHMM(2, n_iter=3, random_state=0).fit(X)


def _hmm_equal(a, b):
    return (type(a) is type(b) and all(np.array_equal(getattr(a, k), getattr(b, k))
                                       for k in ("startprob_", "transmat_", "means_", "covars_")))


def _classifier():
    rng = np.random.default_rng(1)
    X = [rng.normal(c, 1, (12, 2)) for c in (0, 3) for _ in range(4)]
    return hmm.HMMClassifier(n_states=2, emission="gaussian", n_iter=2, random_state=0).fit(X, [0] * 4 + [1] * 4)


def _clf_equal(a, b):
    return np.array_equal(a.classes_, b.classes_) and all(_hmm_equal(x, y) for x, y in zip(a.models_, b.models_))


def _w2v():
    return Word2Vec(CORPUS, vector_size=8, min_count=1, epochs=2, workers=1, seed=1)


def _w2v_equal(a, b):
    return (a.wv.index_to_key == b.wv.index_to_key and np.array_equal(a.wv.vectors, b.wv.vectors)
            and np.array_equal(a.syn1neg, b.syn1neg))


def _kv_equal(a, b):
    return a.index_to_key == b.index_to_key and np.array_equal(a.vectors, b.vectors)


def _lm():
    keras.utils.set_random_seed(2)
    return TransformerLM(tokenizer=CharTokenizer("abcdefgh "), context=8, width=16, num_layers=1, num_heads=2)


def _lm_equal(a, b):
    return a.config == b.config and a.tokenizer == b.tokenizer and _weights_equal(a.model, b.model)


# name -> (make, save(obj, path, key), load(path, key), equal(a, b))
FORMATS = {
    "keras": (_keras, lambda m, p, k: m.save(p, key=k), lambda p, k: keras.models.load_model(p, key=k),
              lambda a, b: _weights_equal(a, b) and a.optimizer.get_state()[0] == b.optimizer.get_state()[0]),
    "keras-weights": (_keras, lambda m, p, k: m.save_weights(p, key=k),
                      lambda p, k: _loaded_weights(p, k), _weights_equal),
    "hmm": (_gauss, lambda m, p, k: m.save(p, key=k), lambda p, k: hmm.load(p, key=k), _hmm_equal),
    "hmm-classifier": (_classifier, lambda m, p, k: m.save(p, key=k),
                       lambda p, k: hmm.HMMClassifier.load(p, key=k), _clf_equal),
    "word2vec": (_w2v, lambda m, p, k: m.save(p, key=k), lambda p, k: Word2Vec.load(p, key=k), _w2v_equal),
    "keyedvectors": (lambda: _w2v().wv, lambda m, p, k: m.save(p, key=k),
                     lambda p, k: KeyedVectors.load(p, key=k), _kv_equal),
    "word2vec-text": (lambda: _w2v().wv, lambda m, p, k: m.save_word2vec_format(p, key=k),
                      lambda p, k: KeyedVectors.load_word2vec_format(p, key=k), _kv_equal),
    "word2vec-binary": (lambda: _w2v().wv, lambda m, p, k: m.save_word2vec_format(p, binary=True, key=k),
                        lambda p, k: KeyedVectors.load_word2vec_format(p, binary=True, key=k), _kv_equal),
    "transformer-lm": (_lm, lambda m, p, k: m.save(p, key=k), lambda p, k: TransformerLM.load(p, key=k), _lm_equal),
    "char-tokenizer": (lambda: CharTokenizer("xyz", specials=["<pad>"]), lambda m, p, k: m.save(p, key=k),
                       lambda p, k: CharTokenizer.load(p, key=k), lambda a, b: a == b),
}


def _loaded_weights(p, k):
    m = _keras()
    m.set_weights([np.zeros_like(w) for w in m.get_weights()])
    m.load_weights(p, key=k)
    return m


@pytest.fixture(scope="module", params=sorted(FORMATS))
def saved(request, tmp_path_factory):
    make, save, load, equal = FORMATS[request.param]
    obj = make()
    path = tmp_path_factory.mktemp(request.param) / "model.bin"
    save(obj, path, K1)
    return request.param, obj, path, path.read_bytes()


def test_round_trip_identical(saved):
    fmt, obj, path, blob = saved
    assert crypto.is_sealed(blob)
    _, _, load, equal = FORMATS[fmt]
    assert equal(obj, load(path, K1))
    # key sources other than bytes reach the same file
    assert equal(obj, load(path, lambda kid: K1))


def _expect_error(fmt, tmp_path, data, key, match):
    p = tmp_path / "bad.bin"
    p.write_bytes(data)
    with pytest.raises(ValueError, match=match):
        FORMATS[fmt][2](p, key)


def test_wrong_key(saved, tmp_path):
    fmt, _, _, blob = saved
    _expect_error(fmt, tmp_path, blob, K2, "wrong key")


def test_flipped_byte_in_header_and_body(saved, tmp_path):
    fmt, _, _, blob = saved
    _, body = crypto.read_header(blob)
    h = bytearray(blob)
    i = blob.index(b'"nonce":"') + 12  # a hex digit of the nonce: still parses, fails authentication
    h[i] = ord("0") if h[i] != ord("0") else ord("1")
    _expect_error(fmt, tmp_path, bytes(h), K1, "failed authentication")
    for pos in (body, body + (len(blob) - body) // 2, len(blob) - 1):
        b = bytearray(blob)
        b[pos] ^= 0x40
        _expect_error(fmt, tmp_path, bytes(b), K1, "failed authentication")


@pytest.mark.parametrize("keep", [0.0, 0.5, 0.999])
def test_truncation(saved, tmp_path, keep):
    fmt, _, _, blob = saved
    _expect_error(fmt, tmp_path, blob[:max(9, int(len(blob) * keep))], K1, "truncated|corrupted|not a pyaiml")


def test_replayed_with_altered_version_field(saved, tmp_path):
    fmt, _, _, blob = saved
    h, body = crypto.read_header(blob)
    for change, match in (({"version": 2}, "container version 2"), ({"inner": "other"}, "failed authentication|not")):
        h2 = dict(h, **change)
        hb = json.dumps(h2, sort_keys=True, separators=(",", ":")).encode()
        _expect_error(fmt, tmp_path, crypto.MAGIC + struct.pack(">I", len(hb)) + hb + blob[body:], K1, match)


def test_encrypted_without_key_and_plain_with_key(saved, tmp_path):
    fmt, obj, _, blob = saved
    p = tmp_path / "enc.bin"
    p.write_bytes(blob)
    with pytest.raises(EncryptedFileError, match="is encrypted .*pass key="):
        FORMATS[fmt][2](p, None)
    plain = tmp_path / "plain.bin"
    FORMATS[fmt][1](obj, plain, None)
    assert not crypto.is_sealed(plain.read_bytes())
    assert FORMATS[fmt][3](obj, FORMATS[fmt][2](plain, None))
    with pytest.raises(ValueError, match="not encrypted, but a key was given"):
        FORMATS[fmt][2](plain, K1)


def test_failed_encrypted_save_keeps_old_file(saved, tmp_path):
    fmt, obj, _, blob = saved
    p = tmp_path / "keep.bin"
    p.write_bytes(blob)

    def bad_key(kid):
        raise RuntimeError("key service down")

    with pytest.raises(RuntimeError, match="key service down"):
        FORMATS[fmt][1](obj, p, bad_key)
    assert p.read_bytes() == blob
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.bin"]  # no temporary file left


def test_model_checkpoint_encrypts(tmp_path):
    m = _keras()
    x = np.zeros((6, 10, 2), np.float32)
    y = keras.utils.to_categorical(np.arange(6) % 3, 3)
    m.fit(x, y, epochs=2, verbose=0,
          callbacks=[keras.callbacks.ModelCheckpoint(str(tmp_path / "ck-{epoch}.keras"), monitor="loss", key=K1)])
    for e in (1, 2):
        assert crypto.is_sealed((tmp_path / f"ck-{e}.keras").read_bytes())
    assert _weights_equal(m, keras.models.load_model(tmp_path / "ck-2.keras", key=K1))
