"""Inputs whose data does not start on a multiple of 4 bytes (a view such as
np.frombuffer(buf, np.float32, offset=1)): every op, on every backend, gives the result of
the same call on an aligned copy, which matches the NumPy reference (float64). The bindings
copy such inputs before the kernels read them through float* and vector types (the kernels'
vector loads and stores, common/simd.h, are alignment-free), refuse them where the kernel
writes in place (word2vec), and all_finite reads them through NumPy."""
import os
import shutil
import subprocess
import sysconfig

import numpy as np
import pytest

import pyaiml.ops as ops
from pyaiml import _backend

from helpers import backends_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mis(a):
    """A copy of a (as float32 unless it is another type) whose data starts 1 byte past an
    aligned address: not aligned to its item size."""
    a = np.asarray(a)
    a = a.astype(np.float32) if a.dtype == np.float64 else a
    buf = np.zeros(a.nbytes + 16, np.uint8)
    m = buf[1:1 + a.nbytes].view(a.dtype).reshape(a.shape)
    m[...] = a
    assert not m.flags.aligned
    return m


def f64(*arrays):
    return [None if a is None else np.asarray(a, np.float64) for a in arrays]


# Tolerance (float32 kernels against the float64 reference): 1e-4 relative and absolute for
# sums of at most a few hundred products of unit normals.
TOL = dict(rtol=1e-4, atol=1e-4)


def _same(got, aligned_got, ref):
    np.testing.assert_array_equal(got, aligned_got)  # misaligned reads are exact reads
    np.testing.assert_allclose(got, ref, **TOL)


@pytest.mark.parametrize("backend", backends_for("gemm"))
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (3, 7, 33), (97, 65, 32), (33, 300, 64)])
def test_matmul_linear_misaligned(backend, M, K, N, monkeypatch, rng):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    _same(ops.matmul(mis(a), mis(b)), ops.matmul(a, b), a.astype(np.float64) @ b)
    _same(ops.matmul(mis(b).T, mis(a).T), ops.matmul(b.T, a.T), (a.astype(np.float64) @ b).T)  # strided views
    w = np.ascontiguousarray(b.T)
    _same(ops.linear(mis(a), mis(w), mis(bias)), ops.linear(a, w, bias), a.astype(np.float64) @ b + bias)
    g = rng.standard_normal((M, N)).astype(np.float32)
    got = ops.matmul_backward(mis(g), mis(a), mis(b))
    for x, y, r in zip(got, ops.matmul_backward(g, a, b), ops.matmul_backward(*f64(g, a, b))):
        _same(x, y, r)
    got = ops.linear_backward(mis(g), mis(a), mis(w))
    for x, y, r in zip(got, ops.linear_backward(g, a, w), ops.linear_backward(*f64(g, a, w))):
        _same(x, y, r)


def test_batched_matmul_misaligned(rng):
    a = rng.standard_normal((3, 17, 9)).astype(np.float32)
    b = rng.standard_normal((3, 9, 5)).astype(np.float32)
    _same(ops.matmul(mis(a), mis(b)), ops.matmul(a, b), a.astype(np.float64) @ b)


CONV = [  # N, C, H, W, OC, k, stride, padding, dilation, groups
    (2, 3, 17, 19, 8, 3, 1, 1, 1, 1),
    (1, 16, 12, 12, 32, 3, 1, 1, 1, 1),
    (2, 4, 9, 7, 6, 3, 2, 0, 2, 2),
    (1, 1, 5, 5, 1, 1, 1, 0, 1, 1),
    (2, 8, 11, 11, 8, 5, 1, 2, 1, 8),
]


@pytest.mark.parametrize("backend", backends_for("conv2d"))
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CONV)
def test_conv2d_misaligned(backend, fmt, case, monkeypatch, rng):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    N, C, H, W, OC, k, s, p, d, G = case
    x = rng.standard_normal((N, H, W, C) if fmt == "NHWC" else (N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((OC, C // G, k, k)).astype(np.float32)
    b = rng.standard_normal(OC).astype(np.float32)
    kw = dict(stride=s, padding=p, dilation=d, groups=G, data_format=fmt)
    y = ops.conv2d(mis(x), mis(w), mis(b), **kw)
    _same(y, ops.conv2d(x, w, b, **kw), ops.conv2d(*f64(x, w, b), **kw))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    got = ops.conv2d_backward(mis(gy), mis(x), mis(w), **kw)
    for g, ga, r in zip(got, ops.conv2d_backward(gy, x, w, **kw), ops.conv2d_backward(*f64(gy, x, w), **kw)):
        np.testing.assert_array_equal(g, ga)
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)  # grad_w sums N*OH*OW products


@pytest.mark.parametrize("backend", backends_for("conv2d"))
def test_conv1d_misaligned(backend, monkeypatch, rng):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    x = rng.standard_normal((2, 33, 4)).astype(np.float32)  # NLC
    w = rng.standard_normal((7, 4, 3)).astype(np.float32)
    y = ops.conv1d(mis(x), mis(w), padding=1, data_format="NLC")
    _same(y, ops.conv1d(x, w, padding=1, data_format="NLC"), ops.conv1d(*f64(x, w), padding=1, data_format="NLC"))


POOL = [  # N, C, H, W, k, stride, padding
    (2, 3, 17, 19, 3, 2, 1),
    (2, 64, 13, 13, 2, 2, 0),
    (1, 33, 7, 7, 3, 1, 1),
    (2, 16, 8, 8, 2, 2, 0),
]


@pytest.mark.parametrize("backend", backends_for("max_pool2d"))
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", POOL)
def test_max_pool2d_misaligned(backend, fmt, case, monkeypatch, rng):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    N, C, H, W, k, s, p = case
    x = rng.standard_normal((N, H, W, C) if fmt == "NHWC" else (N, C, H, W)).astype(np.float32)
    kw = dict(kernel_size=k, stride=s, padding=p, data_format=fmt)
    y, idx = ops.max_pool2d(mis(x), **kw, return_indices=True)
    ya, idxa = ops.max_pool2d(x, **kw, return_indices=True)
    yr, idxr = ops.max_pool2d(x.astype(np.float64), **kw, return_indices=True)
    _same(y, ya, yr)
    np.testing.assert_array_equal(idx, idxr)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    ref = ops.max_pool2d_backward(gy.astype(np.float64), x.astype(np.float64), **kw, indices=idxr)
    for ind in (None, mis(idx)):
        _same(ops.max_pool2d_backward(mis(gy), mis(x), **kw, indices=ind),
              ops.max_pool2d_backward(gy, x, **kw, indices=idxa), ref)
    _, win = ops.max_pool2d(x, **kw, return_indices=True, index_format="window")
    _same(ops.max_pool2d_backward(mis(gy), mis(x), **kw, indices=win, index_format="window"),
          ops.max_pool2d_backward(gy, x, **kw, indices=win, index_format="window"), ref)


ATTN = [  # N, H, Lq, Lk, D, Dv, causal
    (1, 1, 1, 1, 1, 1, False),
    (2, 3, 17, 19, 33, 35, False),
    (1, 4, 64, 64, 64, 64, True),
    (2, 2, 65, 97, 16, 8, True),
]


@pytest.mark.parametrize("backend", backends_for("attention_forward"))
@pytest.mark.parametrize("case", ATTN)
def test_attention_misaligned(backend, case, monkeypatch, rng):
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    N, H, Lq, Lk, D, Dv, causal = case
    q = rng.standard_normal((N, H, Lq, D)).astype(np.float32)
    k = rng.standard_normal((N, H, Lk, D)).astype(np.float32)
    v = rng.standard_normal((N, H, Lk, Dv)).astype(np.float32)
    m = rng.standard_normal((Lq, Lk)).astype(np.float32)  # additive float mask
    for mask in (None, m):
        mm = None if mask is None else mis(mask)
        out, lse = ops.scaled_dot_product_attention(mis(q), mis(k), mis(v), attn_mask=mm, is_causal=causal,
                                                    return_lse=True)
        outa, lsea = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, return_lse=True)
        outr = ops.scaled_dot_product_attention(*f64(q, k, v, mask), is_causal=causal)
        _same(out, outa, outr)
        g = rng.standard_normal(out.shape).astype(np.float32)
        ref = ops.scaled_dot_product_attention_backward(*f64(g, q, k, v, mask), is_causal=causal)
        want = ops.scaled_dot_product_attention_backward(g, q, k, v, attn_mask=mask, is_causal=causal, out=outa,
                                                         lse=lsea)
        got = ops.scaled_dot_product_attention_backward(mis(g), mis(q), mis(k), mis(v), attn_mask=mm,
                                                        is_causal=causal, out=mis(out), lse=mis(lse))
        for a, b, r in zip(got, want, ref):
            _same(a, b, r)


# --------------------------------------------------------------------------- the bindings

def _C():
    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    return C


def test_bindings_read_misaligned_inputs(rng):
    C = _C()
    a = rng.standard_normal((2, 37, 33)).astype(np.float32)
    b = rng.standard_normal((2, 33, 65)).astype(np.float32)
    np.testing.assert_array_equal(C.gemm(mis(a), mis(b)), C.gemm(a, b))
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    p = (1, 1, 1, 1, 1, 1, 1, 1, 1)
    b = np.ones(4, np.float32)
    np.testing.assert_array_equal(C.conv2d(mis(x), mis(w), mis(b), p, False), C.conv2d(x, w, b, p, False))
    got = C.max_pool2d(mis(x), (2, 2, 2, 2, 0, 0), False, True)
    want = C.max_pool2d(x, (2, 2, 2, 2, 0, 0), False, True)
    for g, wnt in zip(got, want):
        np.testing.assert_array_equal(g, wnt)
    q = rng.standard_normal((1, 2, 5, 8)).astype(np.float32)
    for g, wnt in zip(C.attention_forward(mis(q), mis(q), mis(q)), C.attention_forward(q, q, q)):
        np.testing.assert_array_equal(g, wnt)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_misaligned(dtype):
    C = _C()
    x = np.arange(37, dtype=dtype)
    m = mis(x) if dtype == np.float32 else np.frombuffer(b"\0" + x.tobytes(), dtype, offset=1)
    assert not m.flags.aligned
    assert C.all_finite(m)
    x[17] = np.nan
    m = mis(x) if dtype == np.float32 else np.frombuffer(b"\0" + x.tobytes(), dtype, offset=1)
    assert not C.all_finite(m)
    with pytest.raises(ValueError, match=r"conv2d: x must be finite .* Received nan at index \(0, 0, 0, 17\)"):
        ops.conv2d(m.reshape(1, 1, 1, 37), np.ones((1, 1, 1, 1), dtype))


def test_word2vec_refuses_misaligned_in_place_arrays():
    C = _C()
    syn0 = mis(np.zeros((4, 16), np.float32))
    e = np.zeros((0, 16), np.float32)
    i64 = np.zeros(1, np.int64)
    with pytest.raises(ValueError, match="word2vec: syn0 must be aligned to its item size"):
        C.w2v_train_epoch(syn0, np.zeros((4, 16), np.float32), e, np.zeros(0, np.int32), i64, i64,
                          np.zeros(4, np.float32), np.zeros(4, np.uint32), np.zeros(4, np.int32), np.zeros(0, np.uint8),
                          np.zeros(0, np.int32), np.zeros(5, np.int64), 1, 0, 5, 5, 1, 1, 0.025, 0.0001, 0, 1, 1,
                          1, 0)


def _cxx():
    for c in (os.environ.get("CXX"), sysconfig.get_config_var("CXX"), "c++", "g++"):
        if c and shutil.which(c.split()[0]):
            return c.split()[0]
    return None


def test_simd_loads_and_stores_are_alignment_free(tmp_path):
    """common/simd.h loadu / storeu at odd addresses, under the compiler's alignment
    sanitizer (an access through a type whose alignment the address lacks aborts)."""
    cxx = _cxx()
    if cxx is None:
        pytest.skip("no C++ compiler")
    src = tmp_path / "t.cpp"
    src.write_text(
        '#include <cstdio>\n#include "common/simd.h"\nusing namespace pyaiml::t;\n'
        "int main() {\n"
        "  alignas(64) unsigned char buf[256] = {};\n"
        "  for (int i = 0; i < 64; ++i) reinterpret_cast<float*>(buf)[i] = 0.f;\n"
        "  vf v = loadu(reinterpret_cast<const float*>(buf + 1)) + 1.f;\n"
        "  storeu(reinterpret_cast<float*>(buf + 67), v);\n"
        '  std::printf("%g\\n", (double)hsum(loadu(reinterpret_cast<const float*>(buf + 67))));\n'
        "}\n")
    exe = tmp_path / "t"
    r = subprocess.run([cxx, "-std=c++17", "-O1", "-DPYAIML_ISA_NS=t", "-fsanitize=alignment",
                        "-fno-sanitize-recover=all", "-I", os.path.join(ROOT, "csrc"), str(src), "-o", str(exe)],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"the compiler cannot build with -fsanitize=alignment: {r.stderr[-300:]}")
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "misaligned" not in r.stderr, r.stderr
    assert float(r.stdout) == 4.0  # the baseline build's 4 lanes of 0 + 1
