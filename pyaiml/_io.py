"""File helpers shared by every save and load in pyaiml.

- :func:`atomic_write`: the data goes to a temporary file in the target's folder, which is
  renamed over the target only once it is complete, so a failed or interrupted save never
  leaves a half-written file and keeps any previous one intact. Used by every save (Keras
  models, HMMs and HMMClassifier, KeyedVectors/Word2Vec in .npz and word2vec formats, WAV).
- :func:`read_npz`: the arrays of an ``np.savez`` archive, read without pickle and without
  trusting the sizes it declares: every member's size is checked against the archive, and
  every array's header against its member, before anything is allocated; CRCs are checked;
  anything malformed is a ``ValueError`` naming the file.

Not here: the formats themselves (each family's save/load). Tests: tests/test_io_*.py and
the save tests of each family (no temporary is left behind, corrupted files are refused).
"""
from __future__ import annotations

import io
import os
import shutil
import struct
import tempfile
import zipfile
import zlib

import numpy as np

# The most a deflate stream can expand (zlib's documented bound is 1032:1), plus slack.
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


def atomic_write(path, write_fn, *, suffix=".tmp", mode=None, fsync=False, append=False):
    """Call ``write_fn(f)`` on a binary file that becomes ``path`` when it returns.

    mode: permission bits for the result; default: those of the file being replaced, else
    0o666 less the umask (what ``open(path, "wb")`` gives). fsync: flush the data to disk
    before the rename. append: the new file starts with a copy of the existing one (if any),
    so an interrupted append also leaves the old file as it was. Returns the path as a str.
    """
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


def atomic_savez(path, **arrays):
    """``np.savez(path, **arrays)`` through :func:`atomic_write` (no ``.npz`` is appended)."""
    return atomic_write(path, lambda f: np.savez(f, **arrays), suffix=".npz")


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


def _npy(data: bytes, op: str, label, member: str) -> np.ndarray:
    """One .npy member (its bytes already read and CRC-checked) as a writable array."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy version {version} is not supported")
    except _PARSE_ERRORS as e:
        raise bad_file(op, label, f"member {member!r} has a bad array header: {type(e).__name__}: {e}") from None
    if dtype.hasobject:
        raise bad_file(op, label, f"member {member!r} holds Python objects ({dtype}), which are never unpickled")
    if dtype.subdtype is not None or dtype.itemsize == 0:
        raise bad_file(op, label, f"member {member!r} declares dtype {dtype}")
    if any(not isinstance(s, int) or s < 0 for s in shape):
        raise bad_file(op, label, f"member {member!r} declares shape {shape}")
    count = 1
    for s in shape:
        count *= s
    nbytes = count * dtype.itemsize
    start = f.tell()
    if nbytes != len(data) - start:
        raise bad_file(op, label, f"member {member!r} declares shape {shape} of {dtype} ({nbytes} bytes) but "
                                  f"holds {len(data) - start} bytes of data")
    a = np.frombuffer(data, dtype=dtype, count=count, offset=start)
    return a.reshape(shape, order="F" if fortran else "C").copy()


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


def zip_members(source, op: str, label=None, kind="ZIP archive") -> dict:
    """Every member of a ZIP archive: ``{name: bytes}``, each read in full (CRC checked).

    source: a path or the archive's bytes; label: how errors name it (default the path).
    The member count must match the archive's end record, names must be distinct, and no
    member may declare more bytes than the archive could hold (stored: its size; deflated:
    1032 times it) before it is read. Anything malformed is a ``ValueError``
    (:class:`CorruptFileError`) naming ``label``; a missing file is ``FileNotFoundError``.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        fobj, total = io.BytesIO(source), len(source)
        label = "<bytes>" if label is None else label
    else:
        path = os.fspath(source)
        label = path if label is None else label
        fobj = open(path, "rb")
        total = os.fstat(fobj.fileno()).st_size
    out = {}
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
            for info in infos:
                name = info.filename
                if name in out:
                    raise bad_file(op, label, f"member {name!r} appears twice")
                limit = total if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_RATIO * total
                if info.compress_size > total or info.file_size > limit:
                    raise bad_file(op, label, f"member {name!r} declares {info.file_size} bytes "
                                              f"({info.compress_size} stored) in a {total}-byte file")
                try:
                    with z.open(info) as m:  # checks the member's CRC once all of it is read
                        data = m.read(info.file_size + 1)
                except _PARSE_ERRORS as e:
                    raise bad_file(op, label, f"member {name!r} cannot be read: {type(e).__name__}: {e}") from None
                if len(data) != info.file_size:
                    raise bad_file(op, label, f"member {name!r} holds {len(data)} bytes, its header says "
                                              f"{info.file_size}")
                out[name] = data
    return out


def read_npz(source, op: str, label=None) -> dict:
    """The arrays of an ``np.savez`` archive: ``{name: array}``.

    source: a path or the archive's bytes; label: how errors name it (default the path).
    The archive is read by :func:`zip_members`; each .npy header is checked against its
    member's size before the array is made; object arrays are refused (no pickle).
    Anything malformed is a ``ValueError`` naming ``label``.
    """
    if label is None:
        label = "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
    out = {}
    for name, data in zip_members(source, op, label, kind=".npz (ZIP) archive").items():
        if not name.endswith(".npy"):
            raise bad_file(op, label, f"member {name!r} is not an .npy array")
        if name[:-4] in out:
            raise bad_file(op, label, f"member {name!r} appears twice")
        out[name[:-4]] = _npy(data, op, label, name)
    return out
