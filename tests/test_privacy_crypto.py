"""Encrypted files (pyaiml.privacy.crypto and the key= path of pyaiml/_io.py): round trips,
and a clear error (nothing loaded) for a wrong key, a changed byte anywhere, a truncation, a
header field altered in a replayed file, and an encrypted file opened without a key."""
import json
import os
import struct

import numpy as np
import pytest

pytest.importorskip("cryptography")

from pyaiml import _io  # noqa: E402
from pyaiml.cli import main as cli  # noqa: E402
from pyaiml.privacy import crypto  # noqa: E402

K1 = bytes(range(32))
K2 = bytes(range(1, 33))


def test_round_trip_and_fresh_nonce():
    data = os.urandom(1000)
    a, b = crypto.seal(data, K1, "hmm"), crypto.seal(data, K1, "hmm")
    assert a != b  # a fresh nonce per save
    assert crypto.open_sealed(a, K1) == data and crypto.open_sealed(b, K1, inner="hmm") == data
    h, body = crypto.read_header(a)
    assert h["key_id"] == crypto.key_id(K1) and h["inner"] == "hmm" and h["size"] == 1000
    assert len(a) == body + 1000 + 16
    assert crypto.open_sealed(crypto.seal(b"", K1), K1) == b""


def test_wrong_key_is_named():
    blob = crypto.seal(b"secret model", K1)
    with pytest.raises(crypto.DecryptionError, match=f"encrypted with key {crypto.key_id(K1)}; the key given is "
                                                     f"{crypto.key_id(K2)} \\(wrong key\\)"):
        crypto.open_sealed(blob, K2)


def test_every_changed_byte_is_detected():
    blob = crypto.seal(b"weights" * 20, K1)
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(ValueError):  # DecryptionError (or a malformed-header DecryptionError)
            crypto.open_sealed(bytes(bad), K1)


@pytest.mark.parametrize("cut", [0, 4, 8, 11, 30, -17, -16, -1])
def test_truncation_is_detected(cut):
    blob = crypto.seal(b"weights" * 20, K1)
    with pytest.raises(crypto.DecryptionError):
        crypto.open_sealed(blob[:cut] if cut else b"", K1)


def test_extra_bytes_are_detected():
    blob = crypto.seal(b"weights", K1)
    with pytest.raises(crypto.DecryptionError, match="truncated or corrupted"):
        crypto.open_sealed(blob + b"\0", K1)


def _rewrite_header(blob, **changes):
    h, body = crypto.read_header(blob)
    h.update(changes)
    hb = json.dumps(h, sort_keys=True, separators=(",", ":")).encode()
    return crypto.MAGIC + struct.pack(">I", len(hb)) + hb + blob[body:]


def test_replayed_file_with_altered_header_fields():
    blob = crypto.seal(b"model v2", K1, "keras")
    # a version this reader does not know: refused before decrypting
    with pytest.raises(crypto.DecryptionError, match="container version 2 .* is not supported"):
        crypto.open_sealed(_rewrite_header(blob, version=2), K1)
    # the header is authenticated: an altered field fails even where it still parses
    for change in ({"inner": "hmm"}, {"nonce": "00" * 12}):
        with pytest.raises(crypto.DecryptionError, match="failed authentication"):
            crypto.open_sealed(_rewrite_header(blob, **change), K1)
    with pytest.raises(crypto.DecryptionError, match="holds an encrypted 'keras' file, not 'hmm'"):
        crypto.open_sealed(blob, K1, inner="hmm")


def test_key_sources(tmp_path, monkeypatch):
    blob = crypto.seal(b"x", K1)
    raw, hexf, b64f = tmp_path / "raw.key", tmp_path / "hex.key", tmp_path / "b64.key"
    raw.write_bytes(K1)
    hexf.write_text(K1.hex() + "\n")
    import base64
    b64f.write_text(base64.b64encode(K1).decode())
    for k in (crypto.KeyFile(raw), f"file:{hexf}", crypto.KeyFile(b64f)):
        assert crypto.open_sealed(blob, k) == b"x"
    monkeypatch.setenv("MODEL_KEY", K1.hex())
    assert crypto.open_sealed(blob, "env:MODEL_KEY") == b"x"
    seen = []
    assert crypto.open_sealed(blob, lambda kid: seen.append(kid) or K1) == b"x"
    assert seen == [crypto.key_id(K1)]  # the KMS hook is told which key the file wants
    with pytest.raises(ValueError, match="key must be 32 bytes \\(AES-256\\). Received 16 bytes"):
        crypto.seal(b"x", b"k" * 16)
    with pytest.raises(ValueError, match="key as a string must be 'file:PATH' or 'env:NAME'"):
        crypto.seal(b"x", K1.hex())
    with pytest.raises(ValueError, match="environment variable 'NOPE' is not set"):
        crypto.seal(b"x", "env:NOPE")
    (tmp_path / "short.key").write_text("abcd")
    with pytest.raises(ValueError, match="must hold a 32-byte key"):
        crypto.seal(b"x", f"file:{tmp_path / 'short.key'}")
    with pytest.raises(TypeError, match="key callback must return bytes"):
        crypto.seal(b"x", lambda kid: "nope")


def test_npz_through_io_with_and_without_key(tmp_path):
    p = tmp_path / "m.npz"
    a = np.arange(12.0).reshape(3, 4)
    _io.atomic_savez(p, key=K1, inner="hmm", w=a)
    assert crypto.is_sealed(p.read_bytes()[:8])
    np.testing.assert_array_equal(_io.read_npz(p, "load", key=K1, inner="hmm")["w"], a)
    with pytest.raises(ValueError, match=f"load: {p} is encrypted \\(key id {crypto.key_id(K1)}\\): pass key="):
        _io.read_npz(p, "load")
    with pytest.raises(crypto.DecryptionError, match="wrong key"):
        _io.read_npz(p, "load", key=K2)
    plain = tmp_path / "plain.npz"
    _io.atomic_savez(plain, w=a)
    with pytest.raises(ValueError, match="is not encrypted, but a key was given"):
        _io.read_npz(plain, "load", key=K1)
    assert sorted(os.listdir(tmp_path)) == ["m.npz", "plain.npz"]  # no temporary left behind


def test_cli_keygen_encrypt_decrypt_rekey(tmp_path, capsys):
    k1, k2 = tmp_path / "k1", tmp_path / "k2"
    assert cli(["keygen", str(k1)]) == 0 and cli(["keygen", str(k2)]) == 0
    assert oct(os.stat(k1).st_mode & 0o777) == "0o600"
    with pytest.raises(FileExistsError):
        crypto.generate_key_file(k1)  # never overwrites a key
    src = tmp_path / "model.bin"
    src.write_bytes(b"model bytes" * 100)
    enc = tmp_path / "model.enc"
    assert cli(["encrypt", str(src), str(enc), "--key-file", str(k1)]) == 0
    assert cli(["encrypt", str(enc), "--key-file", str(k1)]) == 1  # already encrypted
    assert cli(["rekey", str(enc), "--key-file", str(k1), "--new-key-file", str(k2)]) == 0
    assert cli(["decrypt", str(enc), str(tmp_path / "bad"), "--key-file", str(k1)]) == 1  # old key: refused
    assert not (tmp_path / "bad").exists()
    assert cli(["decrypt", str(enc), str(tmp_path / "out.bin"), "--key-file", str(k2)]) == 0
    assert (tmp_path / "out.bin").read_bytes() == src.read_bytes()
    err = capsys.readouterr().err
    assert "wrong key" in err and "already encrypted" in err
