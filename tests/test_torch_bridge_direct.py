"""pyaiml.torch's eager calls: outside torch.compile, functorch transforms, torch function or
dispatch modes and tensor subclasses, the public functions run the op's implementation
directly (no torch.library dispatcher), through the same autograd formula when gradients are
needed. Checked here: bitwise the same outputs and gradients as the registered ops, the
registered ops are still what a dispatch mode or a transform sees, double backward still
refuses as before, and the per-signature argument check cache never lets a bad call through.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode

import pyaiml.torch as pt


def _t(rng, *shape, grad=True, dtype=torch.float64):
    return torch.tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=grad)


def _cases(rng):
    x2 = _t(rng, 2, 3, 7, 6)
    w2 = _t(rng, 4, 3, 3, 2)
    b2 = _t(rng, 4)
    x1 = _t(rng, 2, 4, 9)
    w1 = _t(rng, 6, 2, 3)
    q, k, v = _t(rng, 2, 3, 5, 4), _t(rng, 2, 3, 6, 4), _t(rng, 2, 3, 6, 4)
    xcl = _t(rng, 2, 3, 6, 6, grad=False).to(memory_format=torch.channels_last).requires_grad_()
    return {
        "conv2d": (lambda: pt.conv2d(x2, w2, b2, stride=(1, 2), padding=1),
                   lambda: torch.ops.pyaiml.conv2d(x2, w2, b2, [1, 2], [1, 1], [1, 1], 1, False), (x2, w2, b2)),
        "conv2d_cl": (lambda: pt.conv2d(xcl, w2, None, padding="same"),
                      lambda: torch.ops.pyaiml.conv2d(xcl, w2, None, [1, 1], [0, 0], [1, 1], 1, True), (xcl, w2)),
        "conv1d_groups": (lambda: pt.conv1d(x1, w1, None, dilation=2, groups=2),
                          lambda: torch.ops.pyaiml.conv1d(x1, w1, None, [1], [0], [2], 2, False), (x1, w1)),
        "max_pool2d": (lambda: pt.max_pool2d(x2, 2, stride=1, padding=1),
                       lambda: torch.ops.pyaiml.max_pool2d(x2, [2, 2], [1, 1], [1, 1])[0], (x2,)),
        "max_pool1d": (lambda: pt.max_pool1d(x1, 3, stride=2),
                       lambda: torch.ops.pyaiml.max_pool1d(x1, [3], [2], [0])[0], (x1,)),
        "sdpa": (lambda: pt.scaled_dot_product_attention(q, k, v, is_causal=False),
                 lambda: torch.ops.pyaiml.sdpa(q, k, v, None, False, None, False)[0], (q, k, v)),
    }


@pytest.mark.parametrize("name", ["conv2d", "conv2d_cl", "conv1d_groups", "max_pool2d", "max_pool1d", "sdpa"])
def test_direct_equals_registered_op(name):
    rng = np.random.default_rng(11)
    direct, registered, inputs = _cases(rng)[name]
    a, b = direct(), registered()
    assert a.grad_fn is not None and b.grad_fn is not None
    assert "_Direct" in type(a.grad_fn).__name__  # the eager call skipped the dispatcher
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert a.stride() == b.stride()
    g = torch.tensor(rng.standard_normal(a.shape), dtype=a.dtype)
    ga = torch.autograd.grad(a, inputs, g)
    gb = torch.autograd.grad(b, inputs, g)
    for u, w in zip(ga, gb):
        torch.testing.assert_close(u, w, rtol=0, atol=0)
    with torch.no_grad():
        c = direct()
    assert c.grad_fn is None
    torch.testing.assert_close(c, b.detach(), rtol=0, atol=0)


class _Seen(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_modes_and_transforms_still_see_the_registered_ops():
    rng = np.random.default_rng(2)
    x, w = _t(rng, 1, 2, 5, 5), _t(rng, 3, 2, 3, 3)
    with _Seen() as mode:
        y = pt.conv2d(x, w)
        y.sum().backward()
    assert "pyaiml.conv2d.default" in mode.ops and "pyaiml.conv2d_backward.default" in mode.ops
    torch.testing.assert_close(y.detach(), pt.conv2d(x.detach(), w.detach()), rtol=0, atol=0)
    # a functorch transform gets the registered op, and so the same answer as calling it
    # directly (torch.library's autograd under torch.func needs a setup_context formula, which
    # the registered ops do not give: both refuse alike)
    from torch.func import grad

    def outcome(f):
        try:
            return grad(f)(x.detach())
        except RuntimeError as e:
            return str(e)

    a = outcome(lambda t: pt.max_pool2d(t, 2).sum())
    b = outcome(lambda t: torch.ops.pyaiml.max_pool2d(t, [2, 2], [2, 2], [0, 0])[0].sum())
    if isinstance(a, str):
        assert a == b
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_double_backward_still_refused():
    rng = np.random.default_rng(3)
    x, w = _t(rng, 1, 2, 5, 5), _t(rng, 3, 2, 3, 3)
    gx, = torch.autograd.grad(pt.conv2d(x, w).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        torch.autograd.grad(gx.sum(), w)


def test_argument_cache_never_admits_a_bad_call():
    x = torch.zeros(1, 2, 6, 6)
    w = torch.zeros(3, 2, 3, 3)
    assert pt.conv2d(x, w, stride=2).shape == (1, 3, 2, 2)
    for _ in range(2):  # a bad call is checked every time, also after a good one of the same shapes
        with pytest.raises(ValueError, match="stride must be >= 1"):
            pt.conv2d(x, w, stride=0)
        with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
            pt.conv2d(x, w, torch.zeros(2))
        with pytest.raises(ValueError, match="at most half the kernel"):
            pt.max_pool2d(x, 2, padding=2)
    assert pt.conv2d(x, w, torch.zeros(3), stride=2).shape == (1, 3, 2, 2)
    # lists and tuples, ints and 1-tuples are the same call; a new input shape is checked afresh
    assert pt.max_pool2d(x, [2, 2]).shape == pt.max_pool2d(x, (2, 2)).shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match=r"kernel_size \(3, 3\) must fit in the padded input \(2, 2\)"):
        pt.max_pool2d(torch.zeros(1, 2, 2, 2), [3, 3])
    # unhashable or unusual argument types are checked without the cache
    assert pt.max_pool2d(x, np.int64(2)).shape == (1, 2, 3, 3)
    with pytest.raises(ValueError):
        pt.max_pool2d(x, np.int64(0))
