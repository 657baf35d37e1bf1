"""pyaiml.audio.read_wav / write_wav against scipy.io.wavfile and the stdlib wave module, on
files generated in every supported encoding, and the errors on bad files."""
import os
import struct
import wave

import numpy as np
import pytest

from pyaiml.audio import WavError, read_wav, write_wav

SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]
BITS = {"PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "DOUBLE": 64}


def _signal(n, ch, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, ch)).astype(np.float32)
    x[:4] = [[-1.0], [1.0], [0.0], [-0.5]]  # full-scale corners
    return x[:, 0] if ch == 1 else x


def _scipy_to_float(d):
    """scipy's integer arrays scaled to [-1, 1) the way read_wav documents."""
    if d.dtype == np.uint8:
        return (d.astype(np.float64) - 128) / 128
    if d.dtype == np.int16:
        return d / 32768.0
    if d.dtype == np.int32:  # 24-bit files come back left-aligned in int32
        return d / 2147483648.0
    return d.astype(np.float64)


@pytest.mark.parametrize("extensible", [False, True])
@pytest.mark.parametrize("ch", [1, 2, 3])
@pytest.mark.parametrize("subtype", SUBTYPES)
def test_roundtrip_and_scipy(tmp_path, subtype, ch, extensible):
    wf = pytest.importorskip("scipy.io.wavfile")
    x = _signal(97, ch)
    p = tmp_path / "a.wav"
    write_wav(p, x, 8000 + ch, subtype=subtype, extensible=extensible)
    y, sr = read_wav(p)
    assert sr == 8000 + ch and y.dtype == np.float32 and y.shape == x.shape
    bits = BITS[subtype]
    q = 0 if subtype in ("FLOAT", "DOUBLE") else 2.0 ** (1 - bits)
    # integer encodings: rounding error <= half a step, except +1.0 clips to 1 - step
    assert np.abs(y - x).max() <= q + 1e-7
    sr2, d = wf.read(p)
    assert sr2 == sr
    np.testing.assert_allclose(y, _scipy_to_float(d).reshape(y.shape), rtol=0, atol=1e-7)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("ch", [1, 2])
def test_stdlib_wave_files(tmp_path, width, ch):
    rng = np.random.default_rng(width)
    n = 33
    bits = 8 * width
    if width == 1:
        ints = rng.integers(0, 256, size=n * ch)
        raw = ints.astype(np.uint8).tobytes()
        want = (ints - 128) / 128.0
    else:
        ints = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=n * ch)
        raw = b"".join(int(v).to_bytes(width, "little", signed=True) for v in ints)
        want = ints / 2.0 ** (bits - 1)
    p = str(tmp_path / "w.wav")
    with wave.open(p, "wb") as w:
        w.setnchannels(ch)
        w.setsampwidth(width)
        w.setframerate(11025)
        w.writeframes(raw)
    y, sr = read_wav(p)
    assert sr == 11025
    np.testing.assert_allclose(y.ravel(), want, rtol=0, atol=1e-7)
    # and wave reads what write_wav writes (PCM)
    q = str(tmp_path / "o.wav")
    write_wav(q, y, 11025, subtype={1: "PCM_U8", 2: "PCM_16", 3: "PCM_24", 4: "PCM_32"}[width])
    with wave.open(q, "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (ch, width, 11025, n)
        back = w.readframes(n)
    if width < 4:
        assert back == raw
    else:  # float32 holds 24 bits of a 32-bit sample: equal to within 2**-24 of full scale
        got = np.frombuffer(back, dtype="<i4").astype(np.int64)
        assert np.abs(got - ints).max() <= 2 ** 7


def _riff(chunks):
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _chunk(cid, data):
    return cid + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) & 1 else b"")


def _fmt(tag=1, ch=1, rate=8000, bits=16):
    block = ch * bits // 8
    return _chunk(b"fmt ", struct.pack("<HHIIHH", tag, ch, rate, rate * block, block, bits))


def test_unknown_and_odd_chunks_skipped(tmp_path):
    pcm = np.array([0, 1000, -1000, 32767, -32768], dtype="<i2")
    raw = _riff([_chunk(b"LIST", b"INFOabc"),  # odd size: padded
                 _fmt(), _chunk(b"junk", b"x" * 5), _chunk(b"data", pcm.tobytes()), _chunk(b"cue ", b"1")])
    p = tmp_path / "c.wav"
    p.write_bytes(raw)
    y, sr = read_wav(p)
    assert sr == 8000
    np.testing.assert_array_equal(y, pcm / 32768.0)
    # data before fmt is fine too
    p.write_bytes(_riff([_chunk(b"data", pcm.tobytes()), _fmt()]))
    np.testing.assert_array_equal(read_wav(p)[0], pcm / 32768.0)


def test_odd_sized_data_chunk_8bit(tmp_path):
    raw = _riff([_fmt(bits=8), _chunk(b"data", bytes([128, 255, 0])), _chunk(b"zzzz", b"")])
    p = tmp_path / "o.wav"
    p.write_bytes(raw)
    np.testing.assert_array_equal(read_wav(p)[0], np.array([0, 127 / 128, -1], dtype=np.float32))


@pytest.mark.parametrize("tag,name", [(6, "A-law"), (7, "mu-law"), (2, "MS ADPCM"), (0x55, "MPEG")])
def test_unsupported_encoding(tmp_path, tag, name):
    p = tmp_path / "enc.wav"
    p.write_bytes(_riff([_fmt(tag=tag, bits=8), _chunk(b"data", b"\x00" * 8)]))
    with pytest.raises(WavError, match=rf"enc\.wav.*0x{tag:04X} \({name}"):
        read_wav(p)


def test_unsupported_extensible_subformat(tmp_path):
    guid = struct.pack("<H", 7) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 8000, 8000, 1, 8, 22, 8, 4) + guid
    p = tmp_path / "ext.wav"
    p.write_bytes(_riff([_chunk(b"fmt ", fmt), _chunk(b"data", b"\x00" * 8)]))
    with pytest.raises(WavError, match=r"ext\.wav.*0x0007 \(mu-law"):
        read_wav(p)


def test_bad_files(tmp_path):
    p = tmp_path / "bad.wav"
    good = _riff([_fmt(), _chunk(b"data", b"\x01\x00" * 100)])
    p.write_bytes(good[:-50])
    with pytest.raises(WavError, match=r"bad\.wav.*'data' chunk declares 200 bytes, only 150.*truncated"):
        read_wav(p)
    p.write_bytes(good[:30])
    with pytest.raises(WavError, match=r"bad\.wav.*truncated"):
        read_wav(p)
    p.write_bytes(good[:8])
    with pytest.raises(WavError, match="too short"):
        read_wav(p)
    p.write_bytes(b"OggS" + b"\x00" * 60)
    with pytest.raises(WavError, match=r"bad\.wav: not a RIFF/WAVE"):
        read_wav(p)
    p.write_bytes(b"RIFX" + b"\x00" * 4 + b"WAVE")
    with pytest.raises(WavError, match="RIFX"):
        read_wav(p)
    p.write_bytes(_riff([_chunk(b"data", b"\x00\x00")]))
    with pytest.raises(WavError, match="no 'fmt ' chunk"):
        read_wav(p)
    p.write_bytes(_riff([_fmt()]))
    with pytest.raises(WavError, match="no 'data' chunk"):
        read_wav(p)
    p.write_bytes(_riff([_fmt(bits=16, ch=2), _chunk(b"data", b"\x00" * 6)]))
    with pytest.raises(WavError, match="not a whole number of 4-byte sample frames"):
        read_wav(p)
    p.write_bytes(_riff([_fmt(bits=12), _chunk(b"data", b"\x00" * 6)]))
    with pytest.raises(WavError, match="12 bits"):
        read_wav(p)
    with pytest.raises(FileNotFoundError):
        read_wav(tmp_path / "missing.wav")
    assert issubclass(WavError, ValueError)


def test_empty_data_chunk(tmp_path):
    p = tmp_path / "e.wav"
    p.write_bytes(_riff([_fmt(), _chunk(b"data", b"")]))
    y, sr = read_wav(p)
    assert y.shape == (0,) and sr == 8000


def test_write_errors_and_atomicity(tmp_path):
    p = tmp_path / "w.wav"
    with pytest.raises(ValueError, match="subtype must be one of"):
        write_wav(p, np.zeros(4), 8000, subtype="ULAW")
    with pytest.raises(ValueError, match=r"data must be 1-D.*Received shape \(2, 2, 2\)"):
        write_wav(p, np.zeros((2, 2, 2)), 8000)
    with pytest.raises(ValueError, match=r"rate must be an integer in \[1, 4294967295\] \(Hz\). Received 0"):
        write_wav(p, np.zeros(4), 0)
    with pytest.raises(ValueError, match="rate must be an integer .* Received True"):
        write_wav(p, np.zeros(4), True)
    with pytest.raises(ValueError, match="finite"):
        write_wav(p, np.array([0.0, np.nan]), 8000)
    with pytest.raises(ValueError, match="int16: PCM_16"):
        write_wav(p, np.zeros(4, dtype=np.int16), 8000, subtype="PCM_24")
    assert not p.exists() and os.listdir(tmp_path) == []
    write_wav(p, np.array([1, -2, 3], dtype=np.int16), 8000)
    np.testing.assert_array_equal(read_wav(p)[0] * 32768, [1, -2, 3])
    assert [f for f in os.listdir(tmp_path)] == ["w.wav"]  # no temporary left behind


@pytest.mark.parametrize("shape,kw,msg", [
    ((2, 65536), {}, r"channels must be <= 65535 \(a 16-bit header field\). Received data of shape \(2, 65536\), "
                     "65536 channels"),
    ((1, 40000), {}, r"a sample frame of 40000 channels x 16 bits is 80000 bytes.*<= 32767 channels with subtype "
                     r"'PCM_16'. Received data of shape \(1, 40000\)"),
    ((1, 8192), {"subtype": "DOUBLE"}, r"a sample frame of 8192 channels x 64 bits is 65536 bytes.*<= 8191 channels"),
    ((3, 2), {"rate": 2**31}, r"rate x block size = 2147483648 x 4 = 8589934592 bytes per second exceeds the "
                              r"header's 32-bit field"),
])
def test_header_fields_checked_before_writing(tmp_path, shape, kw, msg):
    p = tmp_path / "w.wav"
    write_wav(p, np.zeros(3), 8000)
    before = p.read_bytes()
    kw = {"rate": 8000, **kw}
    with pytest.raises(ValueError, match=f"write_wav: {msg}"):
        write_wav(p, np.zeros(shape, np.float32), **kw)
    assert p.read_bytes() == before and os.listdir(tmp_path) == ["w.wav"]


def test_widest_header_fields_round_trip(tmp_path):
    p = tmp_path / "w.wav"
    x = np.linspace(-1, 0.99, 2 * 32767, dtype=np.float32).reshape(2, 32767)
    write_wav(p, x, 8000)  # block size 65534 bytes: the largest that fits
    y, sr = read_wav(p)
    np.testing.assert_array_equal(y, np.clip(np.rint(x.astype(np.float64) * 32768), -32768, 32767) / 32768)
    write_wav(p, np.zeros((1, 1), np.float32), 0xFFFFFFFF, subtype="PCM_U8")  # byte rate 2**32 - 1
    assert read_wav(p)[1] == 0xFFFFFFFF


def test_fsdd_file_matches_scipy(fsdd_path):
    wf = pytest.importorskip("scipy.io.wavfile")
    p = os.path.join(fsdd_path, "recordings", "0_jackson_0.wav")
    y, sr = read_wav(p)
    sr2, d = wf.read(p)
    assert sr == sr2 == 8000
    np.testing.assert_array_equal(y, d / 32768.0)
