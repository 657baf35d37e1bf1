"""pyaiml.keras saving: save -> load_model -> predict identical; a run resumed from a
ModelCheckpoint continues its History and ends with the same weights as an uninterrupted
run; atomic writes; clear errors for truncated, corrupted or unknown files.
"""
import io
import json
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

from pyaiml.keras import callbacks, layers as L, saving, utils
from pyaiml.keras.models import Sequential, load_model


def _model():
    m = Sequential([L.Conv1D(4, 3, activation="relu", input_shape=(12, 2)), L.BatchNormalization(),
                    L.MaxPooling1D(2), L.Flatten(), L.Dropout(0.2), L.Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return m


def _data(rng, n=48):
    return rng.standard_normal((n, 12, 2)).astype(np.float32), utils.to_categorical(rng.integers(0, 3, n), 3)


def test_save_load_predict_identical(rng, tmp_path):
    x, y = _data(rng)
    m = _model()
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    p = tmp_path / "m.keras"
    m.save(p)
    m2 = load_model(p)
    np.testing.assert_array_equal(m.predict(x), m2.predict(x))
    assert [type(l) for l in m2.layers] == [type(l) for l in m.layers]
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert m2.optimizer.iterations == m.optimizer.iterations and m2.history.epoch == [0, 1]
    with zipfile.ZipFile(p) as z:
        meta = json.loads(z.read("metadata.json"))
        assert meta["format"] == "pyaiml.keras" and meta["format_version"] == 1
        assert {"config.json", "weights.npz", "optimizer.npz", "history.json"} <= set(z.namelist())


def test_resume_from_checkpoint_continues_history(rng, tmp_path):
    x, y = _data(rng)
    m = Sequential([L.Dense(8, activation="relu", input_shape=(12, 2)), L.Flatten(), L.Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    init = m.get_weights()
    full = m.fit(x, y, epochs=4, batch_size=16, shuffle=False, verbose=0)

    m.set_weights(init)
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    ck = str(tmp_path / "ck-{epoch:02d}.keras")
    m.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0, callbacks=[callbacks.ModelCheckpoint(ck)])
    r = load_model(tmp_path / "ck-02.keras")
    assert r.history.epoch == [0, 1]
    h = r.fit(x, y, epochs=4, initial_epoch=2, batch_size=16, shuffle=False, verbose=0)
    assert h.epoch == [0, 1, 2, 3]
    np.testing.assert_allclose(h.history["loss"], full.history["loss"], rtol=1e-6)
    # same weights as the uninterrupted run: optimizer state travelled with the checkpoint
    m.set_weights(init)
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    m.fit(x, y, epochs=4, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(r.get_weights(), m.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_checkpoint_best_only_and_weights(rng, tmp_path):
    x, y = _data(rng)
    m = _model()
    ck = tmp_path / "best.weights.npz"
    m.fit(x, y, epochs=3, batch_size=16, verbose=0, validation_split=0.25,
          callbacks=[callbacks.ModelCheckpoint(str(ck), monitor="val_loss", save_best_only=True, save_weights_only=True)])
    assert ck.exists()
    m2 = _model()
    m2.load_weights(ck)
    assert len(m2.get_weights()) == len(m.get_weights())


def test_failed_save_leaves_previous_file(rng, tmp_path, monkeypatch):
    x, y = _data(rng)
    m = _model()
    p = tmp_path / "m.keras"
    m.save(p)
    before = p.read_bytes()
    m.fit(x, y, epochs=1, verbose=0)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(saving.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        m.save(p)
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.keras"]  # no temporary left behind
    monkeypatch.undo()
    load_model(p)


def test_corrupted_files(rng, tmp_path):
    m = _model()
    p = tmp_path / "m.keras"
    m.save(p)
    data = p.read_bytes()
    t = tmp_path / "trunc.keras"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is not a valid pyaiml model file.*truncated or corrupted"):
        load_model(t)
    g = tmp_path / "garbage.keras"
    g.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ValueError, match="not a ZIP archive"):
        load_model(g)
    # flip bytes inside the compressed weights: CRC check fails
    with zipfile.ZipFile(p) as z:
        info = z.getinfo("weights.npz")
        off = info.header_offset + 30 + len(info.filename) + len(info.extra) + 10
    bad = bytearray(data)
    for i in range(off, off + 8):
        bad[i] ^= 0xFF
    c = tmp_path / "crc.keras"
    c.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="not a valid pyaiml model file"):
        load_model(c)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_model(tmp_path / "missing.keras")


def test_newer_format_version(tmp_path):
    m = _model()
    p = tmp_path / "m.keras"
    m.save(p)
    q = tmp_path / "new.keras"
    with zipfile.ZipFile(p) as zi, zipfile.ZipFile(q, "w") as zo:
        for n in zi.namelist():
            d = zi.read(n)
            if n == "metadata.json":
                meta = json.loads(d)
                meta["format_version"] = 99
                d = json.dumps(meta).encode()
            zo.writestr(n, d)
    with pytest.raises(ValueError, match="format_version 99; this pyaiml reads versions 1..1"):
        load_model(q)


def test_custom_layer_registration(tmp_path):
    @L.register
    class Scale(L.Layer):
        def __init__(self, factor=2.0, **kw):
            super().__init__(**kw)
            self.factor = factor

        def forward(self, x, training=False, mask=None):
            return x * np.float32(self.factor)

        def backward(self, dy, need_dx=True):
            return dy * np.float32(self.factor)

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    m = Sequential([L.Dense(2, input_shape=(3,)), Scale(3.0)])
    p = tmp_path / "c.keras"
    m.save(p)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(load_model(p).predict(x), m.predict(x))


def _repack(src, dst, **members):
    """Copy the archive src to dst with some members replaced (bytes) or dropped (None)."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for n in zi.namelist():
            if n in members:
                if members[n] is not None:
                    zo.writestr(n, members[n])
            else:
                zo.writestr(n, zi.read(n))
        for n, d in members.items():
            if n not in zi.namelist() and d is not None:
                zo.writestr(n, d)


def _npy_declaring(shape):
    """An .npz whose one array's header declares `shape` (float64) over 8 bytes of data."""
    hdr = np.lib.format.header_data_from_array_1_0(np.zeros(1))
    hdr["shape"] = shape
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, hdr)
    z = io.BytesIO()
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("000/00.npy", b.getvalue() + b"\0" * 8)
    return z.getvalue()


def test_inconsistent_archives(tmp_path):
    m = _model()
    p = tmp_path / "m.keras"
    m.save(p)
    q = tmp_path / "q.keras"
    tracemalloc.start()
    try:
        _repack(p, q, **{"weights.npz": _npy_declaring((1 << 40,))})
        with pytest.raises(ValueError, match=rf"load_model: {q} .*weights.npz cannot be read: member '000/00.npy' "
                                             r"declares shape \(1099511627776,\) of float64 \(8796093022208 bytes\) "
                                             r"but holds 8 bytes"):
            load_model(q)
        assert tracemalloc.get_traced_memory()[1] < 64 << 20
    finally:
        tracemalloc.stop()
    cases = [
        ({"config.json": b"[1, 2]"}, "config.json must hold a JSON object"),
        ({"config.json": json.dumps({"model": {"config": {"layers": "x"}}}).encode()}, "model config cannot be used"),
        ({"metadata.json": b"\xff\xfe"}, "metadata.json cannot be parsed"),
        ({"history.json": b'{"epoch": ["x"]}'}, "history.json cannot be used"),
        ({"optimizer.npz": _npy_declaring(())}, "optimizer.npz needs 'iterations'"),
        ({"evil.py": b"print(1)"}, r"unexpected members \['evil.py'\]"),
        ({"weights.npz": None}, "member weights.npz is missing"),
    ]
    for members, msg in cases:
        _repack(p, q, **members)
        with pytest.raises(ValueError, match=rf"load_model: {q} is not a valid pyaiml model file \(.*{msg}"):
            load_model(q)
    w = tmp_path / "w.npz"
    w.write_bytes(_npy_declaring((2, 1 << 40)))
    with pytest.raises(ValueError, match=rf"load_weights: {w} is corrupted.*declares shape \(2, 1099511627776\)"):
        m.load_weights(w)
