"""WAV (RIFF/WAVE) reading and writing in pure NumPy, no audio library needed.

What it is: a RIFF chunk parser (unknown chunks skipped, odd chunk sizes padded to even as
the RIFF rules say) that decodes integer PCM (8-bit unsigned, 16/24/32-bit signed) and IEEE
float (32/64-bit), plain or WAVE_FORMAT_EXTENSIBLE, any channel count and rate, into
float32 samples in [-1, 1]; and an atomic writer for the same encodings.
What it is not: a codec. A-law, mu-law, ADPCM and other compressed tags, big-endian RIFX
and RF64 files are refused with an error naming the file and the format tag.
Test: tests/test_audio_wav.py (checks against scipy.io.wavfile and the stdlib ``wave``).
"""
from __future__ import annotations

import os
import struct

import numpy as np

from pyaiml._io import atomic_write

PCM, IEEE_FLOAT, ALAW, MULAW, EXTENSIBLE = 0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE
_TAG_NAMES = {
    0x0001: "PCM", 0x0002: "MS ADPCM", 0x0003: "IEEE float", 0x0006: "A-law", 0x0007: "mu-law",
    0x0011: "IMA ADPCM", 0x0031: "GSM 6.10", 0x0050: "MPEG", 0x0055: "MPEG layer 3",
    0xFFFE: "WAVE_FORMAT_EXTENSIBLE",
}
# The 14 bytes that follow the 2-byte format tag in every standard KSDATAFORMAT_SUBTYPE GUID.
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def _tag_name(tag: int) -> str:
    return f"0x{tag:04X} ({_TAG_NAMES.get(tag, 'unknown')})"


class WavError(ValueError):
    """A file that is not a WAV file, is truncated, or uses an encoding pyaiml cannot decode."""


def _chunks(buf: bytes):
    """Yield (chunk id, offset of data, declared size) for each chunk after 'WAVE'."""
    pos, n = 12, len(buf)
    while pos + 8 <= n:
        cid, size = struct.unpack_from("<4sI", buf, pos)
        yield cid, pos + 8, size
        pos += 8 + size + (size & 1)  # RIFF pads odd-sized chunks to an even length
    # fewer than 8 stray bytes at the end cannot hold a chunk header: ignored


def _parse_fmt(body: bytes, path: str) -> tuple[int, int, int, int, int]:
    if len(body) < 16:
        raise WavError(f"read_wav: {path}: 'fmt ' chunk is {len(body)} bytes, needs at least 16 (truncated file?)")
    tag, ch, rate, _byte_rate, block, bits = struct.unpack_from("<HHIIHH", body, 0)
    if tag == EXTENSIBLE:
        if len(body) < 40:
            raise WavError(f"read_wav: {path}: WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk is {len(body)} bytes, needs 40")
        _cb, _valid_bits, _mask = struct.unpack_from("<HHI", body, 16)
        guid = body[24:40]
        sub = struct.unpack_from("<H", guid, 0)[0]
        if guid[2:] != _GUID_TAIL:
            raise WavError(f"read_wav: {path}: unsupported WAVE_FORMAT_EXTENSIBLE sub-format GUID {guid.hex()}")
        tag = sub
    return tag, ch, rate, block, bits


def _decode(raw: bytes, tag: int, ch: int, bits: int, block: int, path: str) -> np.ndarray:
    width = bits // 8 if bits % 8 == 0 else 0
    if tag == PCM:
        if bits not in (8, 16, 24, 32) or block != ch * width:
            raise WavError(f"read_wav: {path}: PCM with {bits} bits per sample and block size {block} "
                           f"for {ch} channels is not supported (8, 16, 24 or 32 bits, packed)")
    elif tag == IEEE_FLOAT:
        if bits not in (32, 64) or block != ch * width:
            raise WavError(f"read_wav: {path}: IEEE float with {bits} bits per sample and block size {block} "
                           f"is not supported (32 or 64 bits, packed)")
    else:
        raise WavError(f"read_wav: {path}: unsupported encoding, format tag {_tag_name(tag)}; "
                       "only PCM (8/16/24/32-bit) and IEEE float (32/64-bit) are decoded")
    if len(raw) % block:
        raise WavError(f"read_wav: {path}: 'data' chunk holds {len(raw)} bytes, not a whole number of "
                       f"{block}-byte sample frames (truncated or corrupt file)")
    if tag == IEEE_FLOAT:
        x = np.frombuffer(raw, dtype="<f4" if bits == 32 else "<f8").astype(np.float32)
    elif bits == 8:  # unsigned, offset 128
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) * (1.0 / 128)
    elif bits == 16:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) * (1.0 / 32768)
    elif bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        v = np.zeros((b.shape[0], 4), dtype=np.uint8)
        v[:, 1:] = b  # little-endian: the 3 bytes become the top of an int32, sign included
        x = (v.view("<i4").ravel() >> 8).astype(np.float32) * (1.0 / 8388608)
    else:
        x = (np.frombuffer(raw, dtype="<i4").astype(np.float64) * (1.0 / 2147483648)).astype(np.float32)
    return x.reshape(-1, ch) if ch > 1 else x


def read_wav(path) -> tuple[np.ndarray, int]:
    """Read a WAV file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    samples : float32 array, shape (n,) for mono or (n, channels)
        Integer PCM is scaled by 1 / 2**(bits-1) (8-bit: (v - 128) / 128), so it lies in
        [-1, 1); float files are returned as stored (converted to float32).
    rate : int
        Sample rate in Hz.

    Raises
    ------
    FileNotFoundError
        No such file.
    WavError (a ValueError)
        Not RIFF/WAVE, truncated, missing chunks, or an encoding other than PCM/IEEE float;
        the message names the file and the format tag.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 12:
        raise WavError(f"read_wav: {path}: file is {len(buf)} bytes, too short to be a WAV file")
    riff, _size, wave = struct.unpack_from("<4sI4s", buf, 0)
    if riff in (b"RIFX", b"RF64") and wave == b"WAVE":
        raise WavError(f"read_wav: {path}: {riff.decode()} WAV files are not supported (only little-endian RIFF)")
    if riff != b"RIFF" or wave != b"WAVE":
        raise WavError(f"read_wav: {path}: not a RIFF/WAVE file (header {buf[:4]!r}...{buf[8:12]!r})")
    fmt = None
    data = None
    for cid, off, size in _chunks(buf):
        if cid == b"fmt ":
            if off + size > len(buf):
                raise WavError(f"read_wav: {path}: 'fmt ' chunk declares {size} bytes, "
                               f"only {len(buf) - off} present (truncated file)")
            fmt = _parse_fmt(buf[off:off + size], path)
        elif cid == b"data":
            if off + size > len(buf):
                raise WavError(f"read_wav: {path}: 'data' chunk declares {size} bytes, "
                               f"only {len(buf) - off} present (truncated file)")
            data = (off, size)
            if fmt is not None:
                break
    if fmt is None:
        raise WavError(f"read_wav: {path}: no 'fmt ' chunk (truncated or not a WAV file)")
    if data is None:
        raise WavError(f"read_wav: {path}: no 'data' chunk (truncated file?)")
    tag, ch, rate, block, bits = fmt
    if ch < 1:
        raise WavError(f"read_wav: {path}: 'fmt ' chunk says {ch} channels")
    if rate < 1:
        raise WavError(f"read_wav: {path}: 'fmt ' chunk says sample rate {rate}")
    off, size = data
    return _decode(buf[off:off + size], tag, ch, bits, block, path), int(rate)


_SUBTYPES = {  # name -> (format tag, bits)
    "PCM_U8": (PCM, 8), "PCM_16": (PCM, 16), "PCM_24": (PCM, 24), "PCM_32": (PCM, 32),
    "FLOAT": (IEEE_FLOAT, 32), "DOUBLE": (IEEE_FLOAT, 64),
}


def _encode(x: np.ndarray, tag: int, bits: int) -> bytes:
    if tag == IEEE_FLOAT:
        return x.astype("<f4" if bits == 32 else "<f8").tobytes()
    scale = float(2 ** (bits - 1))
    v = np.clip(np.rint(x.astype(np.float64) * scale), -scale, scale - 1)
    if bits == 8:
        return (v + 128).astype(np.uint8).tobytes()
    if bits == 16:
        return v.astype("<i2").tobytes()
    if bits == 32:
        return v.astype("<i4").tobytes()
    v = v.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]  # low 3 bytes, little-endian
    return np.ascontiguousarray(v).tobytes()


def write_wav(path, data, rate: int, subtype: str = "PCM_16", extensible: bool = False) -> None:
    """Write samples to a WAV file atomically (a temporary file in the same folder, then rename).

    Parameters
    ----------
    path : str or os.PathLike
    data : array, shape (n,) or (n, channels)
        Float samples, nominally in [-1, 1]; integer subtypes scale by 2**(bits-1), round
        and clip. Integer arrays are taken as already-scaled int PCM only for
        ``subtype`` with the same width (int16 -> PCM_16, int32 -> PCM_32, uint8 -> PCM_U8).
    rate : int
        Sample rate in Hz, >= 1.
    subtype : {"PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"}
    extensible : bool
        Write a WAVE_FORMAT_EXTENSIBLE header (the usual form for > 2 channels or > 16 bits).
    """
    if subtype not in _SUBTYPES:
        raise ValueError(f"write_wav: subtype must be one of {', '.join(_SUBTYPES)}. Received {subtype!r}")
    tag, bits = _SUBTYPES[subtype]
    x = np.asarray(data)
    if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] == 0):
        raise ValueError(f"write_wav: data must be 1-D (n,) or 2-D (n, channels). Received shape {x.shape}")
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, np.integer)) or not 1 <= rate <= 0xFFFFFFFF:
        raise ValueError(f"write_wav: rate must be an integer in [1, 4294967295] (Hz). Received {rate!r}")
    ch = 1 if x.ndim == 1 else x.shape[1]
    # Every header field is checked against its width before anything is encoded.
    block = ch * bits // 8
    if ch > 0xFFFF:
        raise ValueError(f"write_wav: channels must be <= 65535 (a 16-bit header field). Received data of shape "
                         f"{x.shape}, {ch} channels")
    if block > 0xFFFF:
        raise ValueError(f"write_wav: a sample frame of {ch} channels x {bits} bits is {block} bytes; the header's "
                         f"16-bit block size holds <= 65535, so <= {0xFFFF // (bits // 8)} channels with subtype "
                         f"{subtype!r}. Received data of shape {x.shape}")
    if rate * block > 0xFFFFFFFF:
        raise ValueError(f"write_wav: rate x block size = {rate} x {block} = {rate * block} bytes per second exceeds "
                         f"the header's 32-bit field (4294967295). Received rate {rate}, data of shape {x.shape}")
    nbytes = (x.shape[0] if x.ndim == 2 else x.size) * block
    fmt_len = 40 if extensible else 16
    riff = 4 + (8 + fmt_len) + (12 if tag == IEEE_FLOAT else 0) + 8 + nbytes + (nbytes & 1)
    if riff > 0xFFFFFFFF:
        raise ValueError(f"write_wav: {nbytes} bytes of audio exceed the 4 GiB RIFF limit (32-bit sizes). Received "
                         f"data of shape {x.shape}")
    if x.dtype.kind in "iu":
        native = {np.dtype(np.int16): 16, np.dtype(np.int32): 32, np.dtype(np.uint8): 8}.get(x.dtype)
        if tag != PCM or native != bits:
            raise ValueError(f"write_wav: integer data of dtype {x.dtype} needs the matching subtype "
                             f"(int16: PCM_16, int32: PCM_32, uint8: PCM_U8); pass floats otherwise. "
                             f"Received subtype {subtype!r}")
        raw = x.astype(x.dtype.newbyteorder("<")).tobytes()
    elif x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise ValueError("write_wav: data must be finite (no NaN or inf)")
        raw = _encode(x, tag, bits)
    else:
        raise TypeError(f"write_wav: data must be a float or integer array. Received dtype {x.dtype}")
    if extensible:
        guid = struct.pack("<H", tag) + _GUID_TAIL
        fmt = struct.pack("<HHIIHHHHI", EXTENSIBLE, ch, rate, rate * block, block, bits, 22, bits, 0) + guid
    else:
        fmt = struct.pack("<HHIIHH", tag, ch, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    if tag == IEEE_FLOAT:  # a 'fact' chunk (sample frames) is required for non-PCM formats
        chunks += b"fact" + struct.pack("<II", 4, len(raw) // block)
    chunks += b"data" + struct.pack("<I", len(raw)) + raw + (b"\x00" if len(raw) & 1 else b"")
    out = b"RIFF" + struct.pack("<I", len(chunks) + 4) + b"WAVE" + chunks
    atomic_write(path, lambda f: f.write(out), suffix=".wav")
