"""Integer parameters at the native boundary: sizes are computed exactly (Python ints) and
kept within MAX_EXTENT = 2**31 - 1 before any C++ arithmetic, so huge stride / padding /
dilation / kernel_size / groups values get a ValueError naming the argument, never a wrapped
size, a wrong result or pybind11's anonymous "incompatible function arguments". One integer
rule (pyaiml/ops/_validate.py int_tuple) for the ops and the torch bridge: ints and NumPy
integer scalars, a tuple of n or of 1; bools refused."""

import numpy as np
import pytest

import pyaiml.ops as ops
from pyaiml import _backend
from pyaiml.ops._validate import MAX_EXTENT

from helpers import backends_for, run_py


X = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
W = np.random.default_rng(1).standard_normal((3, 2, 3, 3)).astype(np.float32)
BIG = [2**31, 2**62, 2**63, 2**64, 2**70]


def test_max_extent_matches_native():
    assert MAX_EXTENT == 2**31 - 1


def test_conv2d_huge_padding_and_dilation_named():
    # Used to return a (1, 3, 5, 3) array (int64 overflow in the binding); torch refuses too.
    with pytest.raises(ValueError, match=r"conv2d: padding must be at most 2147483647\. "
                                         r"Received \(4611686018427387904, 0\)"):
        ops.conv2d(X, W, padding=(2**62, 0), dilation=(2**62, 1))


@pytest.mark.parametrize("v", BIG)
@pytest.mark.parametrize("name", ["stride", "padding", "dilation", "groups"])
def test_conv_huge_ints_named(name, v):
    for fn, x, w in ((ops.conv2d, X, W), (ops.conv1d, X[:, :, 0], W[:, :, 0])):
        op = fn.__name__
        with pytest.raises(ValueError, match=rf"{op}: {name} must be at most 2147483647\. Received {v}"):
            fn(x, w, **{name: v})
        with pytest.raises(ValueError, match=rf"{op}_backward: {name} must be at most 2147483647"):
            getattr(ops, op + "_backward")(np.zeros((1, 3, 3, 3) if op == "conv2d" else (1, 3, 3), np.float32), x, w,
                                           **{name: v})


@pytest.mark.parametrize("v", BIG)
@pytest.mark.parametrize("name", ["kernel_size", "stride", "padding"])
def test_pool_huge_ints_named(name, v):
    kw = {"kernel_size": 2, name: v}
    for fn, x in ((ops.max_pool2d, X), (ops.max_pool1d, X[:, :, 0])):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: {name} must be at most 2147483647\. Received {v}"):
            fn(x, **kw)


def test_padded_and_dilated_extents_named():
    with pytest.raises(ValueError, match=r"conv2d: padding makes the padded input larger than 2147483647\. "
                                         r"Received padding \(1073741824, 0\) for input size \(5, 5\)"):
        ops.conv2d(X, W, padding=(2**30, 0))
    with pytest.raises(ValueError, match=r"conv1d: dilation makes the kernel extent .* larger than 2147483647\. "
                                         r"Received dilation \(1073741824,\) for kernel size \(3,\)"):
        ops.conv1d(X[:, :, 0], W[:, :, 0], dilation=2**30)
    with pytest.raises(ValueError, match=r"max_pool2d: padding makes the padded input larger than 2147483647"):
        ops.max_pool2d(X, kernel_size=(2**31 - 1, 2), padding=(2**30 - 1, 0))


@pytest.mark.parametrize("backend", [b for b in backends_for("max_pool2d") if b != "numpy"])
def test_large_but_valid_window_is_exact(backend, monkeypatch):
    # A 2^30 x 2^30 window padded by half of it covers the whole 5 x 5 input: one output,
    # the maximum, as torch gives for the same (smaller) covering window. (The NumPy
    # reference materializes the padding, so it cannot run this.)
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    y, idx = ops.max_pool2d(X, kernel_size=2**30, padding=2**29, return_indices=True)
    assert y.shape == (1, 2, 1, 1)
    np.testing.assert_array_equal(y[..., 0, 0], X.max(axis=(2, 3)))
    np.testing.assert_array_equal(idx[..., 0, 0], X.reshape(1, 2, 25).argmax(-1))
    with pytest.raises(ValueError, match=r"index_format='window' needs kernel_size\[0\] \* kernel_size\[1\] <= 254"):
        ops.max_pool2d(X, kernel_size=(2**30, 2**30), padding=2**29, return_indices=True, index_format="window")


@pytest.mark.parametrize("fn,kw", [
    (ops.conv2d, dict(weight=W)), (ops.max_pool2d, dict(kernel_size=2)),
])
def test_one_int_rule(fn, kw):
    base = fn(X, **kw, stride=2)
    np.testing.assert_array_equal(fn(X, **kw, stride=np.int64(2)), base)
    np.testing.assert_array_equal(fn(X, **kw, stride=(2,)), base)
    np.testing.assert_array_equal(fn(X, **kw, stride=[np.int32(2), 2]), base)
    for bad in (True, (2, True), np.True_, 2.0, (2, 2.0), np.array([2, 2])):
        with pytest.raises(TypeError, match=rf"{fn.__name__}: stride must be an int or a tuple of 2 ints"):
            fn(X, **kw, stride=bad)


def test_groups_numpy_int_and_bool():
    np.testing.assert_array_equal(ops.conv2d(X, W, groups=np.int64(1)), ops.conv2d(X, W))
    with pytest.raises(TypeError, match="conv2d: groups must be an int. Received True"):
        ops.conv2d(X, W, groups=True)


def test_attention_scale_beyond_float_range():
    q = np.ones((1, 1, 2, 4), np.float32)
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: scale must be finite\. Received 1000"):
        ops.scaled_dot_product_attention(q, q, q, scale=10**400)
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention_backward: scale must be finite"):
        ops.scaled_dot_product_attention_backward(q, q, q, q, scale=-10**400)


# --------------------------------------------------------------------------- the bindings

def _C():
    C = _backend.native()
    if C is None:
        pytest.skip("C++ backend not built")
    return C


@pytest.mark.parametrize("p,what", [
    ((1, 1, 2**62, 0, 0, 0, 2**62, 1, 1), "dilation must be at most 2147483647"),
    ((1, 1, 2**62, 0, 0, 0, 1, 1, 1), "padding must be at most 2147483647"),
    ((2**40, 1, 0, 0, 0, 0, 1, 1, 1), "stride must be at most 2147483647"),
    ((1, 1, 2**30, 2**30, 0, 0, 1, 1, 1), "the padded input must be at most 2147483647"),
    ((1, 1, 0, 0, 0, 0, 2**30, 1, 1), "the dilated kernel must be at most 2147483647"),
])
def test_conv_binding_refuses_huge_parameters(p, what):
    C = _C()
    with pytest.raises(ValueError, match="conv2d: " + what):
        C.conv2d(X, W, None, p, False)
    with pytest.raises(ValueError, match="conv2d_backward: " + what):
        C.conv2d_backward(np.zeros((1, 3, 3, 3), np.float32), X, W, p, False)


def test_pool_binding_window_product_does_not_wrap():
    # (2^32)^2 wrapped to 0 in int64 and passed the "<= 254 window positions" check.
    C = _C()
    q = (2**32, 2**32, 1, 1, 2**31, 2**31)
    with pytest.raises(ValueError, match=r"max_pool2d: kernel_size must be at most 2147483647\. "
                                         r"Received \(4294967296, 4294967296\)"):
        C.max_pool2d(X, q, False, True, False, True)
    with pytest.raises(ValueError, match="max_pool2d_backward: kernel_size must be at most 2147483647"):
        C.max_pool2d_backward(np.zeros((1, 2, 1, 1), np.float32), X, q, False, np.zeros((1, 2, 1, 1), np.uint8), True)
    with pytest.raises(ValueError, match="max_pool2d: the padded input must be at most 2147483647"):
        C.max_pool2d(X, (2**31 - 1, 2, 1, 1, 2**30 - 1, 0), False)


def test_padded_input_element_count_bounded():
    # Stride 2^30 - 1 keeps the output at 2 x 2 while the channels-last kernel copies the
    # padded region it reads, (2^30)^2 x 16 floats: the count wrapped to 0 in int64 and the
    # copy wrote through a null buffer (a segfault). Run in a child so a regression cannot
    # take the test process down.
    code = """
import numpy as np, pyaiml.ops as ops
from pyaiml import _backend
x = np.ones((1, 1, 1, 16), np.float32); w = np.ones((1, 16, 1, 1), np.float32)
try:
    ops.conv2d(x, w, padding=2**29, stride=2**30 - 1, data_format="NHWC")
except ValueError as e:
    print("ops:", e)
C = _backend.native()
if C is not None:
    try:
        C.conv2d(x, w, None, (2**30 - 1, 2**30 - 1, 2**29, 2**29, 2**29, 2**29, 1, 1, 1), True)
    except ValueError as e:
        print("binding:", e)
else:
    print("binding: the padded input must hold at most 2^60 elements (no extension)")
"""
    r = run_py(code)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout.splitlines()
    assert len(out) == 2, r.stdout
    assert out[0].startswith("ops: conv2d: padding makes the padded input too large") and "more than 2**60" in out[0]
    assert "Received padding 536870912 for x of shape (1, 1, 1, 16)" in out[0]
    assert out[1].startswith("binding: ") and "the padded input must hold at most 2^60 elements" in out[1]


def test_torch_bridge_sdpa_scale_is_checked():
    torch = pytest.importorskip("torch")
    import pyaiml.torch as pt

    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="scale must be finite. Received an integer of 1329 bits"):
        pt.ops.scaled_dot_product_attention(q, q, q, scale=10**400)
    with pytest.raises(ValueError, match="scale must be finite. Received nan"):
        pt.ops.scaled_dot_product_attention(q, q, q, scale=float("nan"))
    with pytest.raises(TypeError, match="scale must be a real number or None. Received str"):
        pt.ops.scaled_dot_product_attention(q, q, q, scale="x")


def test_an_output_too_large_to_allocate_says_what_was_asked_for():
    if _backend.choose("conv2d")[0] != "cpp":
        pytest.skip("the C++ allocation message")
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    with pytest.raises(MemoryError, match=r"cannot allocate an output of shape \(1, 1, 2097154, 2097154\) \(16.0 TiB\)"):
        ops.conv2d(x, w, padding=2**20)
