"""_C.attention_forward reading k/v in place from a key/value cache: views (N, Hk, Tmax, D)
sliced to [:, :, :Lk] (rows contiguous, heads Tmax * D apart) give bit for bit the result of
contiguous copies, with GQA, masks, causal and one query row (the decode case); other views
are refused with an error naming the argument (pyaiml.ops copies them first), never misread."""
import numpy as np
import pytest

from pyaiml import _backend

C = _backend.native()
pytestmark = pytest.mark.skipif(C is None, reason="needs pyaiml._C")


@pytest.mark.parametrize("N,Hq,Hk,Lq,Lk,Tmax,D", [(1, 12, 12, 1, 37, 64, 64), (2, 8, 2, 1, 100, 130, 32),
                                                   (3, 4, 4, 5, 17, 40, 16), (2, 6, 3, 40, 40, 41, 8),
                                                   (1, 2, 1, 1, 1, 3, 4)])
@pytest.mark.parametrize("masked", [False, True])
def test_cache_views_equal_copies(N, Hq, Hk, Lq, Lk, Tmax, D, masked, rng):
    q = rng.standard_normal((N, Hq, Lq, D)).astype(np.float32)
    kc = rng.standard_normal((N, Hk, Tmax, D)).astype(np.float32)
    vc = rng.standard_normal((N, Hk, Tmax, D)).astype(np.float32)
    k, v = kc[:, :, :Lk], vc[:, :, :Lk]
    mask = None
    if masked:
        m = rng.random((N, 1, Lq, Lk)) > 0.3
        m[..., -1] = True
        mask = np.broadcast_to(m, (N, Hq, Lq, Lk))
    causal = Lq == Lk and not masked
    got = C.attention_forward(q, k, v, mask, causal, 0.125, False)
    want = C.attention_forward(q, np.ascontiguousarray(k), np.ascontiguousarray(v), mask, causal, 0.125, False)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    naive = C.attention_forward(q, k, v, mask, causal, 0.125, True)
    np.testing.assert_allclose(naive[0], want[0], rtol=1e-5, atol=1e-5)


def test_other_views_are_refused(rng):
    q = rng.standard_normal((2, 2, 1, 8)).astype(np.float32)
    kc = rng.standard_normal((2, 2, 10, 16)).astype(np.float32)
    v = np.ascontiguousarray(kc[:, :, :, ::2])
    with pytest.raises(ValueError, match="k must be C-contiguous"):
        C.attention_forward(q, kc[:, :, :, ::2], v, None, False, 0.3, False)  # rows not contiguous
    with pytest.raises(ValueError, match="v must be C-contiguous"):  # heads not evenly spaced over (N, Hk)
        C.attention_forward(q, v, np.ascontiguousarray(v.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3), None,
                            False, 0.3, False)
