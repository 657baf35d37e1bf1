"""File helpers shared by every save and load in pyaiml.

- :func:`atomic_write`: the data goes to a temporary file in the target's folder, which is
  renamed over the target only once it is complete, so a failed or interrupted save never
  leaves a half-written file and keeps any previous one intact. Used by every save (Keras
  models, HMMs and HMMClassifier, KeyedVectors/Word2Vec in .npz and word2vec formats, WAV).
- :func:`read_npz`: the arrays of an ``np.savez`` archive, read without pickle and without
  trusting the sizes it declares: every member's size is checked against the archive, and
  every array's header against its member, before anything is allocated; CRCs are checked;
  anything malformed is a ``ValueError`` naming the file. :func:`zip_members` does the same
  for the members of any ZIP archive (Keras .keras files).
- Encrypted files (pyaiml.privacy.crypto): ``atomic_write(..., key=)`` seals what it writes;
  :func:`plain_source` opens a sealed file for the readers above (``key=`` on both), and
  names an encrypted file opened without a key.

Not here: the formats themselves (each family's save/load). Tests: tests/test_io_*.py and
the save tests of each family (no temporary is left behind, corrupted files are refused).
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import tempfile
import zipfile
import zlib

import numpy as np

# The most a deflate stream can expand (zlib's documented bound is 1032:1).
_DEFLATE_RATIO = 1032


def _umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def atomic_write(path, write_fn, *, suffix=".tmp", mode=None, fsync=False, append=False, key=None,
                 inner="file"):
    """Call ``write_fn(f)`` on a binary file that becomes ``path`` when it returns.

    mode: permission bits for the result; default: those of the file being replaced, else
    0o666 less the umask (what ``open(path, "wb")`` gives). fsync: flush the data to disk
    before the rename. append: the new file starts with a copy of the existing one (if any),
    so an interrupted append also leaves the old file as it was. key: encrypt what
    ``write_fn`` writes (AES-256-GCM, pyaiml.privacy.crypto; ``inner`` names the format in the
    authenticated header). Returns the path as a str.
    """
    if key is not None:
        if append:
            raise ValueError("atomic_write: append and key cannot be combined")
        buf = io.BytesIO()
        write_fn(buf)
        from pyaiml.privacy.crypto import seal

        blob = seal(buf.getvalue(), key, inner)
        return atomic_write(path, lambda f: f.write(blob), suffix=suffix, mode=mode, fsync=fsync)
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    try:
        old_mode = os.stat(path).st_mode & 0o7777
    except OSError:
        old_mode = None
    if mode is None:
        mode = old_mode if old_mode is not None else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            if append and old_mode is not None:
                with open(path, "rb") as src:
                    shutil.copyfileobj(src, f)
            write_fn(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def atomic_savez(path, key=None, inner="npz", **arrays):
    """``np.savez(path, **arrays)`` through :func:`atomic_write` (no ``.npz`` is appended);
    encrypted with ``key`` when given."""
    return atomic_write(path, lambda f: np.savez(f, **arrays), suffix=".npz", key=key, inner=inner)


def npz_bytes(**arrays) -> bytes:
    """What ``np.savez`` writes, as bytes (for archives nested in other files)."""
    b = io.BytesIO()
    np.savez(b, **arrays)
    return b.getvalue()


class CorruptFileError(ValueError):
    """A file that is corrupted, truncated or not of the format its loader reads; ``why``
    holds the reason alone."""

    def __init__(self, msg, why=""):
        super().__init__(msg)
        self.why = why


def bad_file(op: str, label, why: str) -> CorruptFileError:
    """The error of a loader for a file that is corrupted, truncated or not of its format."""
    return CorruptFileError(f"{op}: {label} is corrupted, truncated or not a file of this format ({why})", why)


# Everything reading a malformed archive or .npy header can raise (zipfile reports bad offsets
# as OSError or struct.error, bad flags as RuntimeError or NotImplementedError, bad names as
# UnicodeDecodeError, bad headers as ValueError or SyntaxError, ...).
_PARSE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, struct.error, zlib.error,
                 KeyError, IndexError, ValueError, TypeError, AttributeError, OverflowError, RuntimeError,
                 NotImplementedError, SyntaxError, RecursionError)


_CHUNK = 1 << 20  # bytes copied at a time from an archive member into its array


def _npy_header(f, op, label, member):
    """(shape, fortran_order, dtype, header bytes) of the .npy stream ``f``, checked."""
    pre = f.read(12)
    try:
        version = np.lib.format.read_magic(io.BytesIO(pre))
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy version {version} is not supported")
        if version == (1, 0):
            start = 10 + struct.unpack_from("<H", pre, 8)[0]
        else:
            start = 12 + struct.unpack_from("<I", pre, 8)[0]
        if start > 10 + 65536:
            raise ValueError(f"a header of {start} bytes")
        head = pre + f.read(start - len(pre))
        h = io.BytesIO(head)
        np.lib.format.read_magic(h)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(h, max_header_size=65536)
        if h.tell() != start:
            raise ValueError("the header is shorter than its length field says")
    except _PARSE_ERRORS as e:
        raise bad_file(op, label, f"member {member!r} has a bad array header: {type(e).__name__}: {e}") from None
    if dtype.hasobject:
        raise bad_file(op, label, f"member {member!r} holds Python objects ({dtype}), which are never unpickled")
    if dtype.subdtype is not None or dtype.itemsize == 0:
        raise bad_file(op, label, f"member {member!r} declares dtype {dtype}")
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise bad_file(op, label, f"member {member!r} declares shape {shape}")
    return shape, fortran, dtype, len(head)


def _npy_member(z, info, op, label) -> np.ndarray:
    """One .npy member as a writable array: the header is checked against the member's size
    before the array is allocated, then the data is copied in chunks (CRC checked at the end)."""
    name = info.filename
    with z.open(info) as m:
        if info.compress_type != zipfile.ZIP_STORED:
            # np.savez_compressed: the declared size may exceed the file's many times, so the
            # member is inflated first (as much as its data really gives) and read from memory
            data = m.read(info.file_size + 1)
            if len(data) != info.file_size:
                raise bad_file(op, label, f"member {name!r} holds {len(data)} bytes, its header says "
                                          f"{info.file_size}")
            m = io.BytesIO(data)
        shape, fortran, dtype, start = _npy_header(m, op, label, name)
        count = 1
        for n in shape:
            count *= n
        nbytes = count * dtype.itemsize
        if nbytes != info.file_size - start:
            raise bad_file(op, label, f"member {name!r} declares shape {shape} of {dtype} ({nbytes} bytes) but "
                                      f"holds {info.file_size - start} bytes of data")
        # nbytes <= file_size: checked against the archive's size (stored) or already read (deflated)
        a = np.empty(count, dtype=dtype)
        buf = a.view(np.uint8).reshape(-1) if count else a
        for off in range(0, nbytes, _CHUNK):
            chunk = m.read(min(_CHUNK, nbytes - off))
            if len(chunk) != min(_CHUNK, nbytes - off):
                raise bad_file(op, label, f"member {name!r} ends after {off + len(chunk)} of {nbytes} data bytes")
            buf[off:off + len(chunk)] = np.frombuffer(chunk, np.uint8)
        if m.read(1):  # also reaches the end of the member, where zipfile compares the CRC
            raise bad_file(op, label, f"member {name!r} is longer than its header says")
    if fortran:
        return a.reshape(shape[::-1]).transpose()
    return a.reshape(shape)


def _declared_entries(fobj, total):
    """Member count in the archive's end-of-central-directory record (zip64 when needed), or
    None when there is none. zipfile parses the central directory until its byte size is
    used up and never compares the count, so a damaged entry can silently hide the rest."""
    n = min(total, 22 + 65535)
    fobj.seek(total - n)
    tail = fobj.read(n)
    i = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" else tail.rfind(b"PK\x05\x06")
    if i < 0 or i + 22 > len(tail):
        return None
    entries = struct.unpack_from("<H", tail, i + 10)[0]
    j = i - 20  # a zip64 locator sits just before the record
    if j >= 0 and tail[j:j + 4] == b"PK\x06\x07":
        off = struct.unpack_from("<Q", tail, j + 8)[0]
        if off + 56 <= total:
            fobj.seek(off)
            rec = fobj.read(56)
            if rec[:4] == b"PK\x06\x06":
                entries = struct.unpack_from("<Q", rec, 32)[0]
    return entries


class EncryptedFileError(ValueError):
    """An encrypted file opened without a key."""


def plain_source(source, op: str, label=None, key=None, inner=None):
    """What a loader reads: ``source`` itself (a path or bytes) when it is not encrypted and no
    key is given, else the decrypted bytes. An encrypted file without a key, or a key for a
    file that is not encrypted, is a ValueError naming the file (a key means the caller
    expects an authenticated file: a plain one in its place is refused, not trusted)."""
    from pyaiml.privacy.crypto import MAGIC, open_sealed, read_header

    label = _label(source, label)
    if isinstance(source, (bytes, bytearray, memoryview)):
        head = bytes(source[:len(MAGIC)])
    else:
        with open(os.fspath(source), "rb") as f:
            head = f.read(len(MAGIC))
    if head != MAGIC:
        if key is not None:
            raise ValueError(f"{op}: {label} is not encrypted, but a key was given (refusing an unauthenticated "
                             "file where an encrypted one is expected)")
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        blob = bytes(source)
    else:
        with open(os.fspath(source), "rb") as f:
            blob = f.read()
    if key is None:
        h, _ = read_header(blob, f"{op}: {label}")
        raise EncryptedFileError(f"{op}: {label} is encrypted (key id {h['key_id']}): pass key= (bytes, "
                                 "'file:PATH', 'env:NAME' or a callable)")
    return open_sealed(blob, key, f"{op}: {label}", inner)


@contextlib.contextmanager
def _zip(source, op, label, kind):
    """The ZipFile of ``source`` (a path or bytes) and its members, once the directory has
    been checked: member count against the end record, distinct names, and no member
    declaring more bytes than the archive could hold (stored: its size; deflated: 1032 times
    it)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        fobj, total = io.BytesIO(source), len(source)
    else:
        fobj = open(os.fspath(source), "rb")
        total = os.fstat(fobj.fileno()).st_size
    with fobj:
        try:
            z = zipfile.ZipFile(fobj)
        except _PARSE_ERRORS as e:
            raise bad_file(op, label, f"not a {kind}: {type(e).__name__}: {e}") from None
        with z:
            infos = z.infolist()
            declared = _declared_entries(fobj, total)
            if declared != len(infos):
                raise bad_file(op, label, f"the archive's directory lists {len(infos)} members, its end record "
                                          f"says {declared}")
            seen = set()
            for info in infos:
                if info.filename in seen:
                    raise bad_file(op, label, f"member {info.filename!r} appears twice")
                seen.add(info.filename)
                limit = total if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_RATIO * total
                if info.compress_size > total or info.file_size > limit:
                    raise bad_file(op, label, f"member {info.filename!r} declares {info.file_size} bytes "
                                              f"({info.compress_size} stored) in a {total}-byte file")
            try:
                yield z, infos
            except _PARSE_ERRORS as e:
                if isinstance(e, CorruptFileError):
                    raise
                raise bad_file(op, label, f"{type(e).__name__}: {e}") from None


def _label(source, label):
    if label is not None:
        return label
    return "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)


def zip_members(source, op: str, label=None, kind="ZIP archive", key=None, inner=None) -> dict:
    """Every member of a ZIP archive: ``{name: bytes}``, each read in full (CRC checked).

    source: a path or the archive's bytes; label: how errors name it (default the path).
    The directory is checked before anything is read (member count against the archive's
    end record, distinct names, no member declaring more than the archive could hold).
    Anything malformed is a ``ValueError`` (:class:`CorruptFileError`) naming ``label``; a
    missing file is ``FileNotFoundError``.
    """
    label = _label(source, label)
    source = plain_source(source, op, label, key, inner)
    out = {}
    with _zip(source, op, label, kind) as (z, infos):
        for info in infos:
            name = info.filename
            with z.open(info) as m:  # checks the member's CRC once all of it is read
                data = m.read(info.file_size + 1)
            if len(data) != info.file_size:
                raise bad_file(op, label, f"member {name!r} holds {len(data)} bytes, its header says "
                                          f"{info.file_size}")
            out[name] = data
    return out


def read_npz(source, op: str, label=None, key=None, inner=None) -> dict:
    """The arrays of an ``np.savez`` archive: ``{name: array}``.

    source: a path or the archive's bytes; label: how errors name it (default the path).
    The archive's directory is checked as :func:`zip_members` does; each .npy header is
    checked against its member's size before the array is allocated, and the data is read
    straight into the array; object arrays are refused (no pickle). Anything malformed is a
    ``ValueError`` naming ``label``; a missing file is ``FileNotFoundError``.
    """
    label = _label(source, label)
    source = plain_source(source, op, label, key, inner)
    out = {}
    with _zip(source, op, label, ".npz (ZIP) archive") as (z, infos):
        for info in infos:
            name = info.filename
            if not name.endswith(".npy"):
                raise bad_file(op, label, f"member {name!r} is not an .npy array")
            if name[:-4] in out:
                raise bad_file(op, label, f"member {name!r} appears twice")
            out[name[:-4]] = _npy_member(z, info, op, label)
    return out
