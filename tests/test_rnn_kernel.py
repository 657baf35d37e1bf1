"""The fused LSTM and GRU sequence ops (pyaiml.ops.lstm_sequence / lstm_sequence_backward,
gru_sequence / gru_sequence_backward) and the Keras LSTM and GRU layers on them.

What it checks: forward states and every gradient (xp, recurrent kernel, h0, c0) of each
backend (C++, Numba, NumPy reference) against torch autograd in float64 (a step-by-step
torch transcription of Keras's rule for padded steps; torch.nn.LSTM itself where there is
no mask), on awkward shapes (batch 1, 1 step, units 1, 5, 17, 33 that are no multiple of the
vector width, masks with all-padded rows and padded first/last steps); the C++ kernel on
every ISA this CPU runs; the vectorised sigmoid and tanh against float64; thread-count
independence; the errors. Tolerance: float32 results against float64, 2e-5 absolute and
relative on O(1) values (float32 rounding through up to 9 steps; measured max 2.1e-7), 1e-10
for the float64 path. The GRU (reset_after=True) the same way, with torch.nn.GRU as the
second oracle. Layer level: the LSTM and GRU layers in float32 on the fused ops against the
NumPy scan they replace (recurrent._FUSED_LSTM off), for masks, go_backwards, return_state,
return_sequences, initial states, dropout and Bidirectional.
What it is not: a speed test (benchmarks/scripts/lstm_train_step.py).
Run: PYTHONPATH=$PWD python -m pytest -q tests/test_rnn_kernel.py
"""
import numpy as np
import pytest

from pyaiml import _backend, ops
from tests.helpers import run_py, same_at_thread_counts

torch = pytest.importorskip("torch")

BACKENDS = ["cpp", "numba", "numpy"]
SHAPES = [(1, 1, 1), (1, 5, 3), (3, 7, 33), (2, 1, 16), (4, 6, 17), (5, 9, 5), (2, 3, 64)]
TOL32 = 2e-5


def _backend_or_skip(backend):
    if backend == "cpp" and not _backend.cpp_available():
        pytest.skip("pyaiml._C is not built")
    if backend == "numba" and not _backend._numba_available():
        pytest.skip("numba is not installed")


def _case(B, T, H, seed=0, dtype=np.float32, scale=1.0):
    rs = np.random.default_rng(seed + 1000 * B + 100 * T + H)
    xp = (rs.normal(size=(B, T, 4 * H)) * scale).astype(dtype)
    U = (rs.normal(size=(H, 4 * H)) / np.sqrt(H)).astype(dtype)
    h0 = rs.normal(0, 0.5, size=(B, H)).astype(dtype)
    c0 = rs.normal(0, 0.5, size=(B, H)).astype(dtype)
    gh = rs.normal(size=(B, T, H)).astype(dtype)
    gc = rs.normal(size=(B, H)).astype(dtype)
    return xp, U, h0, c0, gh, gc


def _mask(B, T, seed=0):
    """Random padding plus the awkward rows: all padded, padded first and last steps."""
    rs = np.random.default_rng(seed)
    m = rs.random((B, T)) > 0.35
    m[0] = False
    if B > 1:
        m[1] = True
        m[1, 0] = m[1, -1] = False
    return m


def _torch_lstm(xp, U, h0, c0, mask, gh, gc):
    """Keras's LSTM written step by step in torch float64: hs, c_T and the gradients of
    sum(hs * gh) + sum(c_T * gc) for xp, U, h0, c0."""
    t = [torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in (xp, U, h0, c0)]
    x, u, h, c = t
    H = U.shape[0]
    hs = []
    for s in range(xp.shape[1]):
        z = x[:, s] + h @ u
        i, f = torch.sigmoid(z[:, :H]), torch.sigmoid(z[:, H:2 * H])
        g, o = torch.tanh(z[:, 2 * H:3 * H]), torch.sigmoid(z[:, 3 * H:])
        cn = f * c + i * g
        hn = o * torch.tanh(cn)
        if mask is not None:
            m = torch.tensor(mask[:, s:s + 1])
            cn = torch.where(m, cn, c)
            hn = torch.where(m, hn, h)
        h, c = hn, cn
        hs.append(h)
    hs = torch.stack(hs, 1)
    loss = (hs * torch.tensor(gh, dtype=torch.float64)).sum() + (c * torch.tensor(gc, dtype=torch.float64)).sum()
    loss.backward()
    return hs.detach().numpy(), c.detach().numpy(), [a.grad.numpy() for a in t]


def _run(xp, U, h0, c0, mask, gh, gc):
    saved = ops.lstm_sequence(xp, U, h0, c0, mask)
    grads = ops.lstm_sequence_backward(gh, gc, U, saved, h0, c0, mask)
    return saved, grads


def _close(a, b, tol, what):
    err = np.abs(np.asarray(a, np.float64) - b).max() / (1.0 + np.abs(b).max())
    assert err < tol, f"{what}: max error {err:.3g} (tolerance {tol})"


# ---------------------------------------------------------------- against torch autograd
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("masked", [False, True])
def test_forward_backward_match_torch_float64(backend, shape, masked, monkeypatch):
    _backend_or_skip(backend)
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    B, T, H = shape
    xp, U, h0, c0, gh, gc = _case(B, T, H)
    mask = _mask(B, T) if masked else None
    (hs, cs, gates, _tc), (gx, gU, gh0, gc0) = _run(xp, U, h0, c0, mask, gh, gc)
    assert hs.dtype == cs.dtype == gx.dtype == gU.dtype == np.float32
    assert hs.shape == (B, T, H) and cs.shape == (B, T + 1, H) and gates.shape == (B, T, 4 * H)
    th, tcT, (tx, tU, th0, tc0) = _torch_lstm(xp, U, h0, c0, mask, gh, gc)
    _close(hs, th, TOL32, "hs")
    _close(cs[:, -1], tcT, TOL32, "c_T")
    np.testing.assert_array_equal(cs[:, 0], c0)
    for name, a, b in (("xp", gx, tx), ("recurrent_kernel", gU, tU), ("h0", gh0, th0), ("c0", gc0, tc0)):
        _close(a, b, TOL32, f"grad {name}")
    if masked:  # an all-padded row keeps its states and passes its gradients straight through
        np.testing.assert_array_equal(hs[0], np.broadcast_to(h0[0], (T, H)))
        np.testing.assert_array_equal(gx[0], 0)
        np.testing.assert_allclose(gh0[0], gh[0].sum(axis=0), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(gc0[0], gc[0])


def test_float64_runs_the_reference_exactly_to_torch():
    xp, U, h0, c0, gh, gc = _case(3, 5, 7, dtype=np.float64)
    mask = _mask(3, 5)
    (hs, cs, _, _), (gx, gU, gh0, gc0) = _run(xp, U, h0, c0, mask, gh, gc)
    th, tcT, (tx, tU, th0, tc0) = _torch_lstm(xp, U, h0, c0, mask, gh, gc)
    assert hs.dtype == np.float64
    for a, b in ((hs, th), (cs[:, -1], tcT), (gx, tx), (gU, tU), (gh0, th0), (gc0, tc0)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_matches_torch_nn_lstm_at_the_benchmark_shape(backend, monkeypatch):
    """batch 32, 64 steps, 128 units against torch.nn.LSTM in float64 (gate order i, f, g, o
    is Keras's i, f, c, o; U is weight_hh transposed; the input projection comes in whole)."""
    _backend_or_skip(backend)
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    B, T, H = 32, 64, 128
    xp, U, h0, c0, gh, _ = _case(B, T, H, seed=3)
    tx = torch.tensor(xp, dtype=torch.float64, requires_grad=True)
    # torch.nn.LSTM takes x, not xp: x = xp with 4H input features and weight_ih = I
    lstm = torch.nn.LSTM(4 * H, H, batch_first=True, bias=False).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.eye(4 * H, dtype=torch.float64))
        lstm.weight_hh_l0.copy_(torch.from_numpy(U.T.astype(np.float64)))
    y, _ = lstm(tx, (torch.tensor(h0[None], dtype=torch.float64), torch.tensor(c0[None], dtype=torch.float64)))
    (y * torch.tensor(gh, dtype=torch.float64)).sum().backward()
    (hs, _, _, _), (gx, gU, _, _) = _run(xp, U, h0, c0, None, gh, None)
    _close(hs, y.detach().numpy(), TOL32, "hs")
    _close(gx, tx.grad.numpy(), 1e-4, "grad xp")
    _close(gU, lstm.weight_hh_l0.grad.numpy().T, 1e-4, "grad recurrent_kernel")


# ---------------------------------------------------------------- backends against each other
@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_backends_equal_the_reference_in_float32(backend, monkeypatch):
    _backend_or_skip(backend)
    B, T, H = 4, 11, 20
    xp, U, h0, c0, gh, gc = _case(B, T, H, seed=5, scale=3.0)  # saturating gates too
    mask = _mask(B, T, seed=5)
    monkeypatch.setenv("PYAIML_BACKEND", "numpy")
    ref = _run(xp, U, h0, c0, mask, gh, gc)
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    got = _run(xp, U, h0, c0, mask, gh, gc)
    for a, b in zip(got[0] + got[1], ref[0] + ref[1]):
        _close(a, b.astype(np.float64), TOL32, "result")


@pytest.mark.parametrize("backend", BACKENDS)
def test_projection_gradients_from_the_same_pass(backend, monkeypatch):
    """x= adds grad_kernel = x^T grad_xp and grad_bias = the column sums of grad_xp; kernel=
    adds grad_x = grad_xp kernel^T."""
    _backend_or_skip(backend)
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    B, T, H, D = 3, 5, 17, 6
    xp, U, h0, c0, gh, gc = _case(B, T, H, seed=11)
    x = np.random.default_rng(11).normal(size=(B, T, D)).astype(np.float32)
    mask = _mask(B, T, seed=11)
    saved = ops.lstm_sequence(xp, U, h0, c0, mask)
    plain = ops.lstm_sequence_backward(gh, gc, U, saved, h0, c0, mask)
    res = ops.lstm_sequence_backward(gh, gc, U, saved, h0, c0, mask, x=x)
    assert len(plain) == 4 and len(res) == 6
    for a, b in zip(res[:4], plain):
        np.testing.assert_array_equal(a, b)
    g64 = res[0].reshape(B * T, 4 * H).astype(np.float64)
    _close(res[4], x.reshape(B * T, D).astype(np.float64).T @ g64, 1e-6, "grad kernel")
    _close(res[5], g64.sum(axis=0), 1e-6, "grad bias")
    with pytest.raises(ValueError, match=r"x must have shape \(batch, steps, features\) = \(3, 5, D >= 1\)"):
        ops.lstm_sequence_backward(gh, gc, U, saved, h0, c0, mask, x=x[:, :4])
    # kernel= adds grad_x = grad_xp kernel^T (D = 6, 64 and 70: one partial panel, whole panels, both)
    for d in (D, 64, 70):
        kern = np.random.default_rng(d).normal(size=(d, 4 * H)).astype(np.float32)
        xs = np.random.default_rng(d).normal(size=(B, T, d)).astype(np.float32)
        both = ops.lstm_sequence_backward(gh, gc, U, saved, h0, c0, mask, x=xs, kernel=kern)
        only = ops.lstm_sequence_backward(gh, gc, U, saved, h0, c0, mask, kernel=kern)
        assert len(both) == 7 and len(only) == 5 and both[6].shape == (B, T, d)
        np.testing.assert_array_equal(both[6], only[4])
        _close(both[6], (g64 @ kern.astype(np.float64).T).reshape(B, T, d), 1e-6, f"grad x (D={d})")
    with pytest.raises(ValueError, match=r"kernel must have shape \(features, 4 \* units\) = \(6, 68\)"):
        ops.lstm_sequence_backward(gh, gc, U, saved, h0, c0, mask, x=x, kernel=np.zeros((5, 68), np.float32))


def test_need_recurrent_kernel_false_and_missing_gradients():
    xp, U, h0, c0, gh, gc = _case(2, 4, 6)
    saved = ops.lstm_sequence(xp, U, h0, c0)
    gx, gU, _gh0, _gc0 = ops.lstm_sequence_backward(gh, None, U, saved, h0, c0, need_recurrent_kernel=False)
    assert gU is None
    full = ops.lstm_sequence_backward(gh, None, U, saved, h0, c0)
    np.testing.assert_array_equal(gx, full[0])
    # only the last cell's gradient: grad_h None
    gx2, _, _, gc02 = ops.lstm_sequence_backward(None, gc, U, saved, h0, c0)
    _th, _tcT, (tx, _, _, tc0) = _torch_lstm(xp, U, h0, c0, None, np.zeros_like(gh), gc)
    _close(gx2, tx, TOL32, "grad xp from c_T only")
    _close(gc02, tc0, TOL32, "grad c0 from c_T only")


def test_default_states_are_zeros():
    xp, U, _, _, _gh, _gc = _case(3, 4, 9)
    z = np.zeros((3, 9), np.float32)
    a = ops.lstm_sequence(xp, U)
    b = ops.lstm_sequence(xp, U, z, z)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_results_do_not_depend_on_the_thread_count():
    if not _backend.cpp_available():
        pytest.skip("pyaiml._C is not built")
    xp, U, h0, c0, gh, gc = _case(9, 6, 40, seed=7)
    mask = _mask(9, 6, seed=7)
    xg, Ug, bg, _, _ = _gru_case(9, 6, 40, seed=7)

    def run():
        s, g = _run(xp, U, h0, c0, mask, gh, gc)
        sg = ops.gru_sequence(xg, Ug, bg, h0, mask)
        return s + g + sg + ops.gru_sequence_backward(gh, Ug, sg, bg, h0, mask)

    same_at_thread_counts(run)


@pytest.mark.parametrize("B,T,H,D", [(5, 130, 24, 70), (40, 20, 16, 64), (300, 3, 8, 5)])
def test_backward_with_projection_at_every_thread_count(B, T, H, D):
    """Long sequences, wide batches and a partial panel of x's features, masked steps
    included: every output of the fused backward (with the projection's gradients) is the
    same bit for bit at 1, 2 and 3 threads, and the weight and input gradients equal the
    float64 products of grad_xp."""
    if not _backend.cpp_available():
        pytest.skip("pyaiml._C is not built")
    xp, U, h0, c0, gh, gc = _case(B, T, H, seed=3)
    mask = _mask(B, T, seed=3)
    rs = np.random.default_rng(3)
    x = rs.normal(size=(B, T, D)).astype(np.float32)
    kern = rs.normal(size=(D, 4 * H)).astype(np.float32)

    def run():
        saved = ops.lstm_sequence(xp, U, h0, c0, mask)
        return saved + ops.lstm_sequence_backward(gh, gc, U, saved, h0, c0, mask, x=x, kernel=kern)

    res = same_at_thread_counts(run)
    saved, (gxp, gU, _, _, gW, gb, gx) = res[:4], res[4:]
    g64 = gxp.reshape(B * T, 4 * H).astype(np.float64)
    hs = saved[0].astype(np.float64)
    hprev = np.concatenate([h0.astype(np.float64)[:, None], hs[:, :-1]], axis=1).reshape(B * T, H)
    _close(gU, hprev.T @ g64, 1e-6, "grad recurrent kernel")
    _close(gW, x.reshape(B * T, D).astype(np.float64).T @ g64, 1e-6, "grad kernel")
    _close(gb, g64.sum(axis=0), 1e-6, "grad bias")
    _close(gx, (g64 @ kern.astype(np.float64).T).reshape(B, T, D), 1e-6, "grad x")


def test_vector_sigmoid_and_tanh_against_float64():
    """One step from zero states with U = 0: the gates are the activations of xp itself, so
    this reads the kernel's sigmoid and tanh over [-30, 30] (and the cell's tanh)."""
    if not _backend.cpp_available():
        pytest.skip("pyaiml._C is not built")
    z = np.concatenate([np.linspace(-30, 30, 4001), np.linspace(-1, 1, 3999), [0.0, 1e-30, -1e-8, 0.4999, 0.5001]])
    H = z.size
    xp = np.tile(z, 4)[None, None].astype(np.float32)
    zf = xp[0, 0, :H].astype(np.float64)
    U = np.zeros((H, 4 * H), np.float32)
    _, cs, gates, tc = ops.lstm_sequence(xp, U)
    sig = 1 / (1 + np.exp(-zf))
    tanh = np.tanh(zf)
    rel = lambda a, b: np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30))
    assert rel(gates[0, 0, :H], sig) < 1e-6
    assert rel(gates[0, 0, 2 * H:3 * H], tanh) < 1e-6
    c = cs[0, 1].astype(np.float64)
    assert rel(tc[0, 0], np.tanh(c)) < 1e-6


def test_every_isa_matches_the_reference():
    C = _backend.native()
    if C is None:
        pytest.skip("pyaiml._C is not built")
    code = """
import numpy as np
from pyaiml import ops
from pyaiml.reference import rnn as R
rs = np.random.default_rng(1)
for B, T, H in ((3, 5, 7), (2, 4, 33), (1, 2, 64)):
    xp = rs.normal(size=(B, T, 4 * H)).astype(np.float32)
    U = (rs.normal(size=(H, 4 * H)) / np.sqrt(H)).astype(np.float32)
    h0 = rs.normal(size=(B, H)).astype(np.float32); c0 = rs.normal(size=(B, H)).astype(np.float32)
    gh = rs.normal(size=(B, T, H)).astype(np.float32); gc = rs.normal(size=(B, H)).astype(np.float32)
    m = rs.random((B, T)) > 0.3
    x = rs.normal(size=(B, T, 21)).astype(np.float32)
    k = rs.normal(size=(21, 4 * H)).astype(np.float32)
    s = ops.lstm_sequence(xp, U, h0, c0, m)
    g = ops.lstm_sequence_backward(gh, gc, U, s, h0, c0, m, x=x, kernel=k)
    rs_ = R.lstm_forward(xp, U, h0, c0, m)
    rg = R.lstm_backward(gh, gc, U, h0, c0, m, *rs_, x=x, kernel=k)
    for a, b in zip(s + g, rs_ + rg):
        err = np.abs(a.astype(np.float64) - b).max() / (1 + np.abs(b).max())
        assert err < 2e-5, err
    xg = rs.normal(size=(B, T, 3 * H)).astype(np.float32)
    Ug = (rs.normal(size=(H, 3 * H)) / np.sqrt(H)).astype(np.float32)
    bg = rs.normal(size=3 * H).astype(np.float32)
    s = ops.gru_sequence(xg, Ug, bg, h0, m)
    g = ops.gru_sequence_backward(gh, Ug, s, bg, h0, m)
    rs_ = R.gru_forward(xg, Ug, bg, h0, m)
    rg = R.gru_backward(gh, Ug, bg, h0, m, *rs_)
    for a, b in zip(s + g, rs_ + rg):
        err = np.abs(a.astype(np.float64) - b).max() / (1 + np.abs(b).max())
        assert err < 2e-5, err
print("ok")
"""
    for isa in C.supported_isas():
        r = run_py(code, PYAIML_ISA=isa, PYAIML_BACKEND="cpp")
        assert r.returncode == 0 and "ok" in r.stdout, (isa, r.stderr[-2000:])


# ---------------------------------------------------------------- errors
def test_errors_name_the_argument_and_what_was_received():
    xp, U, h0, c0, gh, gc = _case(2, 3, 4)
    with pytest.raises(ValueError, match=r"recurrent_kernel must have shape \(units, 4 \* units\). Received \(4, 12\)"):
        ops.lstm_sequence(xp, U[:, :12])
    with pytest.raises(ValueError, match=r"xp must have shape \(batch, steps, 4 \* units\).*Received \(2, 3, 15\)"):
        ops.lstm_sequence(xp[:, :, :15], U)
    with pytest.raises(ValueError, match=r"xp must have shape .*Received \(2, 0, 16\)"):
        ops.lstm_sequence(xp[:, :0], U)
    with pytest.raises(ValueError, match=r"xp must have shape .*Received \(6, 16\)"):
        ops.lstm_sequence(xp.reshape(6, 16), U)
    with pytest.raises(TypeError, match="xp must have dtype float32 or float64. Received int64"):
        ops.lstm_sequence(xp.astype(np.int64), U)
    with pytest.raises(TypeError, match="recurrent_kernel must have the dtype of xp"):
        ops.lstm_sequence(xp, U.astype(np.float64))
    with pytest.raises(ValueError, match=r"h0 must have shape \(batch, units\) = \(2, 4\). Received \(3, 4\)"):
        ops.lstm_sequence(xp, U, np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match="c0 must have the dtype of xp"):
        ops.lstm_sequence(xp, U, h0, c0.astype(np.float64))
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, steps\) = \(2, 3\). Received \(3, 2\)"):
        ops.lstm_sequence(xp, U, mask=np.ones((3, 2), bool))
    with pytest.raises(TypeError, match="mask must be a bool"):
        ops.lstm_sequence(xp, U, mask=np.ones((2, 3), np.float32))
    bad = xp.copy()
    bad[1, 2, 5] = np.nan
    with pytest.raises(ValueError, match=r"xp must be finite .*index \(1, 2, 5\)"):
        ops.lstm_sequence(bad, U)
    saved = ops.lstm_sequence(xp, U, h0, c0)
    with pytest.raises(TypeError, match="saved must be the 4-tuple"):
        ops.lstm_sequence_backward(gh, gc, U, saved[:3], h0, c0)
    with pytest.raises(ValueError, match=r"grad_h must have shape \(2, 3, 4\)"):
        ops.lstm_sequence_backward(gh[:, :2], gc, U, saved, h0, c0)
    with pytest.raises(ValueError, match=r"grad_c must have shape \(2, 4\)"):
        ops.lstm_sequence_backward(gh, gc[:1], U, saved, h0, c0)
    with pytest.raises(ValueError, match=r"gates must have shape \(2, 3, 16\)"):
        ops.lstm_sequence_backward(gh, gc, U, (saved[0], saved[1], saved[2][:, :, :8], saved[3]), h0, c0)
    badg = gh.copy()
    badg[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="grad_h must be finite"):
        ops.lstm_sequence_backward(badg, gc, U, saved, h0, c0)


def test_native_binding_checks_its_arrays():
    C = _backend.native()
    if C is None:
        pytest.skip("pyaiml._C is not built")
    xp, U, h0, c0, gh, gc = _case(2, 3, 4)
    with pytest.raises(ValueError, match=r"lstm_forward: h0 must have shape \(2, 4\). Received \(2, 5\)"):
        C.lstm_forward(xp, U, np.zeros((2, 5), np.float32), c0, None)
    with pytest.raises(ValueError, match="lstm_forward: xp must have dtype float32"):
        C.lstm_forward(xp.astype(np.float64), U, h0, c0, None)
    with pytest.raises(ValueError, match="lstm_forward: xp must be C-contiguous"):
        C.lstm_forward(np.asfortranarray(xp), U, h0, c0, None)
    with pytest.raises(ValueError, match="lstm_forward: mask must have dtype bool or uint8. Received float32"):
        C.lstm_forward(xp, U, h0, c0, np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"lstm_forward: mask must have shape \(batch, steps\) = \(2, 3\)"):
        C.lstm_forward(xp, U, h0, c0, np.ones((2, 4), bool))
    s = C.lstm_forward(xp, U, h0, c0, None)
    with pytest.raises(ValueError, match=r"lstm_backward: cs must have shape \(2, 4, 4\). Received \(2, 3, 4\)"):
        C.lstm_backward(gh, gc, U, h0, c0, None, s[0], s[1][:, :3].copy(), s[2], s[3], True)
    with pytest.raises(ValueError, match=r"lstm_backward: grad_c must have shape \(2, 4\)"):
        C.lstm_backward(gh, gc[:, :2].copy(), U, h0, c0, None, *s, True)


# ---------------------------------------------------------------- the Keras layer on the op
def _layer_grads(fused, kw, x, mask=None, init=None, training=False, bidir=None, seed=0, kind="lstm"):
    from pyaiml import keras
    from pyaiml.autograd import GradientTape
    from pyaiml.autograd import functional as F
    from pyaiml.keras import layers, recurrent

    keras.utils.set_random_seed(seed)
    layer = (layers.LSTM if kind == "lstm" else layers.GRU)(7, **kw)
    if bidir is not None:
        layer = layers.Bidirectional(layer, merge_mode=bidir)
    layer.build(x.shape[1:])
    rs = np.random.default_rng(seed + 1)
    layer.set_weights([rs.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    old = recurrent._FUSED_LSTM
    recurrent._FUSED_LSTM = fused
    try:
        with GradientTape() as tape:
            xx = tape.watch(x)
            st = None if init is None else [tape.watch(s) for s in init]
            call = {}
            if st is not None:
                call["initial_state"] = st
            if mask is not None:
                call["mask"] = mask
            out = layer(xx, training=training, **call)
            outs = out if isinstance(out, list) else [out]
            loss = None
            for i, o in enumerate(outs):
                w = np.random.default_rng(i).normal(size=o.shape).astype(np.float32)
                term = F.sum(F.multiply(o, w))
                loss = term if loss is None else F.add(loss, term)
        grads = tape.gradient(loss, [xx] + (st or []) + layer.trainable_variables)
    finally:
        recurrent._FUSED_LSTM = old
    return [np.asarray(o.value) for o in outs], grads


LAYER_CASES = [
    {"kw": {}},
    {"kw": {"return_sequences": True}},
    {"kw": {"return_sequences": True, "return_state": True}, "init": True},
    {"kw": {"return_state": True}, "mask": True},
    {"kw": {"return_sequences": True, "go_backwards": True}, "mask": True},
    {"kw": {"go_backwards": True, "return_state": True}, "init": True, "mask": True},
    {"kw": {"return_sequences": True, "dropout": 0.3, "seed": 4}, "training": True},
    {"kw": {"return_sequences": True}, "mask": True, "bidir": "concat"},
    {"kw": {}, "bidir": "sum", "mask": True},
    {"kw": {"return_sequences": True, "return_state": True}, "bidir": None, "init": True, "mask": True},
    {"kw": {"use_bias": False, "unit_forget_bias": False, "return_sequences": True}},
]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("case", range(len(LAYER_CASES)))
def test_layer_on_the_fused_op_equals_the_numpy_scan(case, kind):
    c = dict(LAYER_CASES[case])
    if kind == "gru":
        c["kw"] = {k: v for k, v in c["kw"].items() if k != "unit_forget_bias"}
    B, T, D = 4, 6, 3
    rs = np.random.default_rng(case)
    x = rs.normal(size=(B, T, D)).astype(np.float32)
    mask = _mask(B, T, seed=case) if c.get("mask") else None
    n_init = 2 if kind == "lstm" else 1
    init = [rs.normal(size=(B, 7)).astype(np.float32) for _ in range(n_init)] if c.get("init") else None
    args = {"mask": mask, "init": init, "training": c.get("training", False), "bidir": c.get("bidir"), "kind": kind}
    outs_f, grads_f = _layer_grads(True, c["kw"], x, **args)
    outs_n, grads_n = _layer_grads(False, c["kw"], x, **args)
    assert len(outs_f) == len(outs_n) and len(grads_f) == len(grads_n)
    for a, b in zip(outs_f, outs_n):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6)
    for a, b in zip(grads_f, grads_n):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)


def test_layer_on_the_fused_op_refuses_non_finite_inputs_by_name():
    from pyaiml.keras import layers

    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    lay = layers.LSTM(5)
    lay(x)
    bad = x.copy()
    bad[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match=r"x must be finite .*index \(0, 1, 2\)"):
        lay(bad)
    with pytest.raises(ValueError, match="lstm_sequence: h0 must be finite"):
        lay(x, initial_state=[np.full((2, 5), np.nan, np.float32), np.zeros((2, 5), np.float32)])
    w = lay.get_weights()
    w[1][0, 0] = np.inf
    lay.set_weights(w)
    with pytest.raises(ValueError, match="lstm_sequence: recurrent_kernel must be finite"):
        lay(x)


def test_layer_uses_the_fused_op_only_where_it_applies(monkeypatch):
    from pyaiml.keras import layers, recurrent

    calls = []
    for name in ("_lstm_fused", "_gru_fused"):
        real = getattr(recurrent, name)
        monkeypatch.setattr(recurrent, name, lambda *a, _n=name, _f=real: calls.append(_n) or _f(*a))
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    layers.LSTM(5)(x)
    layers.GRU(5)(x)
    assert calls == ["_lstm_fused", "_gru_fused"]
    layers.LSTM(5, activation="relu")(x)
    layers.GRU(5, recurrent_activation="tanh")(x)
    layers.GRU(5, reset_after=False)(x)
    layers.SimpleRNN(5)(x)
    for cls in (layers.LSTM, layers.GRU):
        lay = cls(5)
        lay.build((3, 4))
        lay._cast(np.float64)
        lay(x.astype(np.float64))
    assert calls == ["_lstm_fused", "_gru_fused"]


# ---------------------------------------------------------------- GRU (reset_after=True)
def _gru_case(B, T, H, seed=0, dtype=np.float32):
    rs = np.random.default_rng(seed + 7000 + 1000 * B + 100 * T + H)
    xp = rs.normal(size=(B, T, 3 * H)).astype(dtype)
    U = (rs.normal(size=(H, 3 * H)) / np.sqrt(H)).astype(dtype)
    b = rs.normal(0, 0.5, size=3 * H).astype(dtype)
    h0 = rs.normal(0, 0.5, size=(B, H)).astype(dtype)
    gh = rs.normal(size=(B, T, H)).astype(dtype)
    return xp, U, b, h0, gh


def _torch_gru(xp, U, b, h0, mask, gh):
    """Keras's GRU (reset_after) step by step in torch float64: hs and the gradients of
    sum(hs * gh) for xp, U, b, h0."""
    t = [torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in (xp, U, b, h0)]
    x, u, bb, h = t
    H = U.shape[0]
    hs = []
    for s in range(xp.shape[1]):
        a = h @ u + bb
        z = torch.sigmoid(x[:, s, :H] + a[:, :H])
        r = torch.sigmoid(x[:, s, H:2 * H] + a[:, H:2 * H])
        n = torch.tanh(x[:, s, 2 * H:] + r * a[:, 2 * H:])
        hn = z * h + (1 - z) * n
        if mask is not None:
            hn = torch.where(torch.tensor(mask[:, s:s + 1]), hn, h)
        h = hn
        hs.append(h)
    hs = torch.stack(hs, 1)
    (hs * torch.tensor(gh, dtype=torch.float64)).sum().backward()
    return hs.detach().numpy(), [a.grad.numpy() for a in t]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("masked", [False, True])
def test_gru_forward_backward_match_torch_float64(backend, shape, masked, monkeypatch):
    _backend_or_skip(backend)
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    B, T, H = shape
    xp, U, b, h0, gh = _gru_case(B, T, H)
    mask = _mask(B, T) if masked else None
    saved = ops.gru_sequence(xp, U, b, h0, mask)
    gx, gU, gb, gh0 = ops.gru_sequence_backward(gh, U, saved, b, h0, mask)
    hs, gates, hn = saved
    assert hs.dtype == gx.dtype == gU.dtype == gb.dtype == np.float32
    assert hs.shape == (B, T, H) and gates.shape == (B, T, 3 * H) and hn.shape == (B, T, H)
    th, (tx, tU, tb, th0) = _torch_gru(xp, U, b, h0, mask, gh)
    _close(hs, th, TOL32, "hs")
    for name, a, ref in (("xp", gx, tx), ("recurrent_kernel", gU, tU), ("recurrent_bias", gb, tb), ("h0", gh0, th0)):
        _close(a, ref, TOL32, f"grad {name}")
    if masked:
        np.testing.assert_array_equal(hs[0], np.broadcast_to(h0[0], (T, H)))
        np.testing.assert_array_equal(gx[0], 0)


@pytest.mark.parametrize("backend", ["cpp", "numba"])
def test_gru_matches_torch_nn_gru(backend, monkeypatch):
    """torch.nn.GRU (gates r, z, n) in float64 at batch 16, 20 steps, 48 units, given xp
    through a permutation matrix as weight_ih (Keras z, r, h -> torch r, z, n)."""
    _backend_or_skip(backend)
    monkeypatch.setenv("PYAIML_BACKEND", backend)
    B, T, H = 16, 20, 48
    xp, U, b, h0, gh = _gru_case(B, T, H, seed=9)
    order = np.concatenate([np.arange(H, 2 * H), np.arange(H), np.arange(2 * H, 3 * H)])  # torch row -> Keras col
    gru = torch.nn.GRU(3 * H, H, batch_first=True).double()
    with torch.no_grad():
        gru.weight_ih_l0.copy_(torch.from_numpy(np.eye(3 * H)[order]))
        gru.bias_ih_l0.zero_()
        gru.weight_hh_l0.copy_(torch.from_numpy(U.T[order].astype(np.float64)))
        gru.bias_hh_l0.copy_(torch.from_numpy(b[order].astype(np.float64)))
    tx = torch.tensor(xp, dtype=torch.float64, requires_grad=True)
    y, _ = gru(tx, torch.tensor(h0[None], dtype=torch.float64))
    (y * torch.tensor(gh, dtype=torch.float64)).sum().backward()
    saved = ops.gru_sequence(xp, U, b, h0)
    gx, gU, gb, _ = ops.gru_sequence_backward(gh, U, saved, b, h0)
    _close(saved[0], y.detach().numpy(), TOL32, "hs")
    _close(gx, tx.grad.numpy(), 1e-4, "grad xp")
    inv = np.argsort(order)
    _close(gU, gru.weight_hh_l0.grad.numpy()[inv].T, 1e-4, "grad recurrent_kernel")
    _close(gb, gru.bias_hh_l0.grad.numpy()[inv], 1e-4, "grad recurrent_bias")


def test_gru_without_recurrent_bias_and_float64():
    xp, U, b, h0, gh = _gru_case(3, 4, 6, dtype=np.float64)
    saved = ops.gru_sequence(xp, U, None, h0)
    gx, gU, gb, gh0 = ops.gru_sequence_backward(gh, U, saved, None, h0)
    assert gb is None and saved[0].dtype == np.float64
    th, (tx, tU, _, th0) = _torch_gru(xp, U, np.zeros_like(b), h0, None, gh)
    for a, ref in ((saved[0], th), (gx, tx), (gU, tU), (gh0, th0)):
        np.testing.assert_allclose(a, ref, rtol=1e-10, atol=1e-12)
    x32 = [a.astype(np.float32) for a in (xp, U, h0, gh)]
    s32 = ops.gru_sequence(x32[0], x32[1], None, x32[2])
    g32 = ops.gru_sequence_backward(x32[3], x32[1], s32, None, x32[2], need_recurrent_kernel=False)
    assert g32[1] is None and g32[2] is None
    _close(g32[0], tx, TOL32, "grad xp (float32, no bias)")


def test_gru_errors():
    xp, U, b, h0, gh = _gru_case(2, 3, 4)
    with pytest.raises(ValueError, match=r"gru_sequence: recurrent_kernel must have shape \(units, 3 \* units\)"):
        ops.gru_sequence(xp, np.zeros((4, 16), np.float32))
    with pytest.raises(ValueError, match=r"xp must have shape \(batch, steps, 3 \* units\).*Received \(2, 3, 16\)"):
        ops.gru_sequence(np.zeros((2, 3, 16), np.float32), U)
    with pytest.raises(ValueError, match=r"recurrent_bias must have shape \(3 \* units,\) = \(12,\). Received \(2, 12\)"):
        ops.gru_sequence(xp, U, np.zeros((2, 12), np.float32))
    with pytest.raises(TypeError, match="recurrent_bias must have the dtype of xp"):
        ops.gru_sequence(xp, U, b.astype(np.float64))
    with pytest.raises(ValueError, match=r"h0 must have shape \(batch, units\) = \(2, 4\)"):
        ops.gru_sequence(xp, U, b, h0[:1])
    saved = ops.gru_sequence(xp, U, b, h0)
    with pytest.raises(TypeError, match="saved must be the 3-tuple"):
        ops.gru_sequence_backward(gh, U, saved[:2], b, h0)
    with pytest.raises(ValueError, match=r"hn must have shape \(2, 3, 4\)"):
        ops.gru_sequence_backward(gh, U, (saved[0], saved[1], saved[2][:, :2]), b, h0)
    with pytest.raises(ValueError, match=r"grad_h must have shape \(2, 3, 4\)"):
        ops.gru_sequence_backward(gh[:1], U, saved, b, h0)
    if _backend.cpp_available():
        C = _backend.native()
        with pytest.raises(ValueError, match=r"gru_forward: recurrent_bias must have shape \(12,\)"):
            C.gru_forward(xp, U, b[:5].copy(), h0, None)
        with pytest.raises(ValueError, match=r"gru_backward: gates must have shape \(2, 3, 12\)"):
            C.gru_backward(gh, U, b, h0, None, saved[0], saved[1][:, :, :6].copy(), saved[2], True, True)
