"""Encrypted model files: AES-256-GCM containers around any file pyaiml saves.

Layout (all integers big-endian)::

    magic   8 bytes  b"PYAIMLE\\x01"
    hlen    4 bytes  length of the header
    header  hlen     UTF-8 JSON: {"format": "pyaiml-encrypted", "version": 1,
                     "cipher": "AES-256-GCM", "key_id": 16 hex digits, "nonce": 24 hex digits,
                     "inner": what the plaintext is ("keras", "hmm", "word2vec", ... or "file"),
                     "size": plaintext bytes}
    body    rest     ciphertext followed by GCM's 16-byte tag

The magic, hlen and header are the associated data, so changing any header field (the
version, the key id, the inner format, the size) is detected like a change of the body. A
fresh random 96-bit nonce is drawn for every save (os.urandom); a key id is the first 8
bytes of SHA-256 over "pyaiml-key-id" and the key, so a wrong key is named as such before
any decryption is tried. Keys are 32 bytes: raw, 64 hex digits, or base64 in a key file.

Where a key comes from (``resolve_key``): bytes; a :class:`KeyFile` or a path given as
``key="file:PATH"``; an environment variable ``key="env:NAME"`` (hex or base64); or a callable
``key(key_id or None) -> bytes`` (the hook for a key-management service: on save it is called
with None, on load with the file's key id).

Needs the ``cryptography`` package (``pip install "pyaiml[privacy]"``); importing this module
without it works, the first encryption or decryption says what to install.
Not here: the formats themselves (each family's save/load calls :func:`seal` / :func:`open_sealed`
through pyaiml/_io.py). Tests: tests/test_privacy_crypto.py.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
import struct

MAGIC = b"PYAIMLE\x01"
VERSION = 1
CIPHER = "AES-256-GCM"
_TAG = 16
_MAX_HEADER = 1 << 16


class DecryptionError(ValueError):
    """An encrypted file that cannot be opened: wrong key, tampered or truncated data, or an
    unknown container version. Nothing of the file's content is returned."""


def _aesgcm(key: bytes):
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("pyaiml encrypted files need the 'cryptography' package: pip install 'pyaiml[privacy]'"
                          ) from e
    return AESGCM(key)


def key_id(key: bytes) -> str:
    """16 hex digits naming a key (not secret: a hash prefix, never the key)."""
    return hashlib.sha256(b"pyaiml-key-id" + key).hexdigest()[:16]


def _parse_key_text(text: str, where: str) -> bytes:
    t = text.strip()
    if len(t) == 64:
        try:
            return bytes.fromhex(t)
        except ValueError:
            pass
    try:
        k = base64.b64decode(t, validate=True)
    except (binascii.Error, ValueError):
        k = b""
    if len(k) == 32:
        return k
    raise ValueError(f"{where} must hold a 32-byte key as 64 hex digits or base64. Received {len(t)} characters "
                     "that are neither")


class KeyFile:
    """A key read from a file: 32 raw bytes, or 64 hex digits / base64 text."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def read(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                data = f.read(4097)
        except OSError as e:
            raise ValueError(f"key file {self.path!r} cannot be read: {e.strerror or e}") from None
        if len(data) == 32:
            return data
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"key file {self.path!r} must hold 32 raw bytes, or 64 hex digits or base64 text. "
                             f"Received {len(data)} bytes") from None
        return _parse_key_text(text, f"key file {self.path!r}")


def resolve_key(key, file_key_id: str | None = None) -> bytes:
    """The 32-byte key that ``key`` stands for (see the module docstring for the forms)."""
    if key is None:
        raise ValueError("key must be given (bytes, KeyFile, 'file:PATH', 'env:NAME' or a callable). Received None")
    if isinstance(key, KeyFile):
        k = key.read()
    elif isinstance(key, str):
        if key.startswith("file:"):
            k = KeyFile(key[5:]).read()
        elif key.startswith("env:"):
            name = key[4:]
            if name not in os.environ:
                raise ValueError(f"key: environment variable {name!r} is not set")
            k = _parse_key_text(os.environ[name], f"environment variable {name!r}")
        else:
            raise ValueError("key as a string must be 'file:PATH' or 'env:NAME' (raw key text is refused so that a "
                             f"key never sits in source code). Received a string starting {key[:5]!r}")
    elif isinstance(key, (bytes, bytearray, memoryview)):
        k = bytes(key)
    elif callable(key):
        k = key(file_key_id)
        if not isinstance(k, (bytes, bytearray)):
            raise TypeError(f"key callback must return bytes. Received {type(k).__name__}")
        k = bytes(k)
    else:
        raise TypeError(f"key must be bytes, KeyFile, 'file:PATH', 'env:NAME' or a callable. Received "
                        f"{type(key).__name__}")
    if len(k) != 32:
        raise ValueError(f"key must be 32 bytes (AES-256). Received {len(k)} bytes")
    return k


def generate_key_file(path) -> str:
    """Write a fresh random key (64 hex digits) to a new file readable by its owner only;
    returns its key id. Refuses to overwrite an existing file."""
    path = os.fspath(path)
    k = os.urandom(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as f:
        f.write(k.hex() + "\n")
    return key_id(k)


def _header_bytes(kid: str, nonce: bytes, inner: str, size: int) -> bytes:
    h = {"format": "pyaiml-encrypted", "version": VERSION, "cipher": CIPHER, "key_id": kid, "nonce": nonce.hex(),
         "inner": inner, "size": size}
    return json.dumps(h, sort_keys=True, separators=(",", ":")).encode()


def seal(data: bytes, key, inner: str = "file") -> bytes:
    """The encrypted container of ``data`` (bytes)."""
    k = resolve_key(key)
    nonce = os.urandom(12)
    header = _header_bytes(key_id(k), nonce, str(inner), len(data))
    prefix = MAGIC + struct.pack(">I", len(header)) + header
    return prefix + _aesgcm(k).encrypt(nonce, bytes(data), prefix)


def is_sealed(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file) starts an encrypted container."""
    return head[:len(MAGIC)] == MAGIC


def read_header(blob: bytes, label="the file") -> tuple[dict, int]:
    """(header dict, offset of the body); checks the layout, not the authenticity."""
    if not is_sealed(blob):
        raise DecryptionError(f"{label} is not a pyaiml encrypted file (no {MAGIC!r} magic)")
    if len(blob) < len(MAGIC) + 4:
        raise DecryptionError(f"{label} is truncated (its header length is cut off)")
    (hlen,) = struct.unpack(">I", blob[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if hlen > _MAX_HEADER or start + hlen + _TAG > len(blob):
        raise DecryptionError(f"{label} is truncated or corrupted (header length {hlen} for a {len(blob)}-byte file)")
    try:
        h = json.loads(blob[start:start + hlen].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise DecryptionError(f"{label} has a corrupted header") from None
    if not isinstance(h, dict) or h.get("format") != "pyaiml-encrypted":
        raise DecryptionError(f"{label} has a corrupted header")
    if h.get("version") != VERSION or h.get("cipher") != CIPHER:
        raise DecryptionError(f"{label}: container version {h.get('version')!r} / cipher {h.get('cipher')!r} is not "
                              f"supported (this pyaiml reads version {VERSION}, {CIPHER})")
    for name, n in (("key_id", 16), ("nonce", 24)):
        v = h.get(name)
        if not isinstance(v, str) or len(v) != n or any(c not in "0123456789abcdef" for c in v):
            raise DecryptionError(f"{label} has a corrupted header ({name})")
    if not isinstance(h.get("size"), int) or h["size"] != len(blob) - start - hlen - _TAG:
        raise DecryptionError(f"{label} is truncated or corrupted (the header declares {h.get('size')!r} bytes of "
                              f"content, the file holds {len(blob) - start - hlen - _TAG})")
    return h, start + hlen


def open_sealed(blob: bytes, key, label="the file", inner: str | None = None) -> bytes:
    """The plaintext of an encrypted container; DecryptionError when the key is wrong or any
    byte of the file was changed, removed or added. ``inner``: the format the caller expects."""
    h, body = read_header(blob, label)
    k = resolve_key(key, h["key_id"])
    if key_id(k) != h["key_id"]:
        raise DecryptionError(f"{label} was encrypted with key {h['key_id']}; the key given is {key_id(k)} (wrong key)")
    if inner is not None and h.get("inner") not in (inner, "file"):
        raise DecryptionError(f"{label} holds an encrypted {h.get('inner')!r} file, not {inner!r}")
    try:
        from cryptography.exceptions import InvalidTag
    except ImportError:  # pragma: no cover
        InvalidTag = Exception
    try:
        return _aesgcm(k).decrypt(bytes.fromhex(h["nonce"]), blob[body:], blob[:body])
    except InvalidTag:
        raise DecryptionError(f"{label} failed authentication: it was modified, truncated or damaged after it was "
                              "encrypted (nothing was loaded)") from None


def encrypt_file(src, dst, key, inner: str = "file") -> str:
    """Encrypt the file ``src`` into ``dst`` (atomically; ``dst`` may equal ``src``)."""
    from pyaiml._io import atomic_write

    with open(src, "rb") as f:
        data = f.read()
    if is_sealed(data):
        raise ValueError(f"encrypt: {os.fspath(src)!r} is already encrypted (use rekey to change its key)")
    blob = seal(data, key, inner)
    return atomic_write(dst, lambda f: f.write(blob))


def decrypt_file(src, dst, key) -> str:
    """Decrypt ``src`` into ``dst`` (atomically)."""
    from pyaiml._io import atomic_write

    with open(src, "rb") as f:
        blob = f.read()
    data = open_sealed(blob, key, repr(os.fspath(src)))
    return atomic_write(dst, lambda f: f.write(data))


def rekey_file(path, old_key, new_key) -> str:
    """Re-encrypt ``path`` under ``new_key`` in place (atomically), keeping its inner format."""
    from pyaiml._io import atomic_write

    with open(path, "rb") as f:
        blob = f.read()
    h, _ = read_header(blob, repr(os.fspath(path)))
    data = open_sealed(blob, old_key, repr(os.fspath(path)))
    new = seal(data, new_key, h.get("inner", "file"))
    return atomic_write(path, lambda f: f.write(new))
