"""pyaiml.keras optimizers against torch.optim over 20 steps (float64), and schedules.

The gradient at each step is a fixed function of the current weights (g = A w + c with a
random A), so both sides see the same trajectory only if their updates agree. SGD matches
to 1e-12; Adam and RMSprop place epsilon differently from torch (see optimizers.py), so
they are compared with epsilon = 1e-12 on both sides, where the difference is < 1e-9.
"""
import numpy as np
import pytest

from pyaiml.keras import optimizers, schedules

torch = pytest.importorskip("torch")


def _run(ours, make_torch, steps=20):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((2, 6, 6)) * 0.3
    c = rng.standard_normal((2, 6))
    w0 = [rng.standard_normal(6), rng.standard_normal(6)]
    ws = [w.copy() for w in w0]
    gs = [np.zeros(6), np.zeros(6)]
    tw = [torch.tensor(w.copy(), requires_grad=True) for w in w0]
    topt = make_torch(tw)
    for _ in range(steps):
        for i in range(2):
            gs[i][...] = A[i] @ ws[i] + c[i]
        ours.apply(list(zip(ws, gs)))
        topt.zero_grad()
        for i in range(2):
            tw[i].grad = torch.tensor(A[i]) @ tw[i].detach() + torch.tensor(c[i])
        topt.step()
    return ws, [t.detach().numpy() for t in tw]


CASES = [
    ("sgd", lambda: optimizers.SGD(0.05), lambda p: torch.optim.SGD(p, lr=0.05), 1e-12),
    ("sgd-momentum", lambda: optimizers.SGD(0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), 1e-11),
    ("sgd-nesterov", lambda: optimizers.SGD(0.05, momentum=0.8, nesterov=True),
     lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True), 1e-11),
    ("adam", lambda: optimizers.Adam(0.01, epsilon=1e-12), lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-12), 1e-9),
    ("adam-amsgrad", lambda: optimizers.Adam(0.01, epsilon=1e-12, amsgrad=True),
     lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-12, amsgrad=True), 1e-9),
    ("rmsprop", lambda: optimizers.RMSprop(0.01, rho=0.9, epsilon=1e-12),
     lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-12), 1e-8),
    ("rmsprop-momentum-centered", lambda: optimizers.RMSprop(0.01, rho=0.9, momentum=0.5, centered=True, epsilon=1e-12),
     lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.5, centered=True, eps=1e-12), 1e-8),
    ("adagrad", lambda: optimizers.Adagrad(0.1, initial_accumulator_value=0.1, epsilon=1e-12),
     lambda p: torch.optim.Adagrad(p, lr=0.1, initial_accumulator_value=0.1, eps=1e-12), 1e-9),
    ("adagrad-zero-start", lambda: optimizers.Adagrad(0.05, initial_accumulator_value=0.0, epsilon=1e-14),
     lambda p: torch.optim.Adagrad(p, lr=0.05, eps=1e-14), 1e-9),
    ("nadam", lambda: optimizers.Nadam(0.01, epsilon=1e-12),
     lambda p: torch.optim.NAdam(p, lr=0.01, eps=1e-12, momentum_decay=1.0), 1e-9),
    ("nadam-betas", lambda: optimizers.Nadam(0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-12),
     lambda p: torch.optim.NAdam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-12, momentum_decay=1.0), 1e-9),
]


@pytest.mark.parametrize("name,ours,theirs,tol", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_20_steps(name, ours, theirs, tol):
    a, b = _run(ours(), theirs)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


def test_adam_default_epsilon_close_to_torch():
    a, b = _run(optimizers.Adam(0.01), lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-7))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_exponential_decay_matches_torch():
    s = schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.9)
    # per-step decay: the schedule against torch's ExponentialLR
    p = [torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD(p, lr=0.1)
    sch = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    for step in range(10):
        assert abs(s(step) - opt.param_groups[0]["lr"]) < 1e-12
        opt.step()
        sch.step()
    st = schedules.ExponentialDecay(1.0, 10, 0.5, staircase=True)
    assert st(9) == 1.0 and st(10) == 0.5 and st(25) == 0.25


def test_piecewise_constant():
    s = schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    assert [s(0), s(10), s(11), s(20), s(21)] == [1.0, 1.0, 0.5, 0.5, 0.1]
    with pytest.raises(ValueError, match="values must have"):
        schedules.PiecewiseConstantDecay([10], [1.0])


def test_schedule_drives_optimizer():
    s = schedules.PiecewiseConstantDecay([1], [1.0, 0.1])
    opt = optimizers.SGD(s)
    w, g = np.zeros(1), np.ones(1)
    for _ in range(4):
        opt.apply([(w, g)])
    np.testing.assert_allclose(w, [-(1 + 1 + 0.1 + 0.1)])
    assert opt.iterations == 4


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="Unknown optimizer identifier 'adamx'. Valid identifiers: adagrad, adam, "
                                         "adamw, nadam, rmsprop, sgd"):
        optimizers.get("adamx")


@pytest.mark.parametrize("kw", [{}, {"clipnorm": 0.5}, {"global_clipnorm": 1.0}])
def test_adam_flat_update_equals_per_weight_update(kw):
    """Adam keeps m and v of all weights in two flat arrays and updates them in one go; the
    result is bit-for-bit the per-weight rule (_update), in float32 as in training, and the
    state survives get_state/set_state."""
    rng = np.random.default_rng(5)
    shapes = [(3, 3, 2, 4), (4,), (7, 5), (1,)]
    w_a = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    w_b = [w.copy() for w in w_a]
    a = optimizers.Adam(0.01, **kw)
    b = optimizers.Adam(0.01, **kw)
    for step in range(6):
        g = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        a.apply([(w, gg.copy()) for w, gg in zip(w_a, g)])
        # b: the per-weight path (what apply does without the flat state)
        pb = [(w, gg.copy()) for w, gg in zip(w_b, g)]
        b._ensure(pb)
        b._clip(pb)
        for (w, gg), st in zip(pb, b._state):
            b._update(w, gg, st, b.current_lr(), b.iterations + 1)
        b.iterations += 1
        if step == 2:  # round trip of the state through get_state / set_state
            it, arrays = a.get_state()
            a = optimizers.Adam(0.01, **kw)
            a.set_state(it, {k: v.copy() for k, v in arrays.items()}, [(w, None) for w in w_a])
    # the flat path ran: its two arrays hold the per-weight rule's m and v, weight after weight
    M, V = a._flat[:2]
    np.testing.assert_array_equal(M, np.concatenate([st["m"].ravel() for st in b._state]))
    np.testing.assert_array_equal(V, np.concatenate([st["v"].ravel() for st in b._state]))
    for x, y in zip(w_a, w_b):
        np.testing.assert_array_equal(x, y)
    for sa, sb in zip(a._state, b._state):
        np.testing.assert_array_equal(sa["m"], sb["m"])
        np.testing.assert_array_equal(sa["v"], sb["v"])


@pytest.mark.parametrize("cls", [optimizers.Adagrad, optimizers.Nadam])
def test_adagrad_nadam_state_round_trip_and_lookup(cls):
    """Stopping after 7 steps, carrying the state through get_state/set_state into a fresh
    optimizer, then 8 more steps gives the weights of 15 uninterrupted steps (Nadam's
    momentum-schedule product is rebuilt from the step count)."""
    rng = np.random.default_rng(7)
    w0 = rng.standard_normal(5)
    gs = [rng.standard_normal(5) for _ in range(15)]
    a, w_a = cls(0.05), w0.copy()
    for g in gs:
        a.apply([(w_a, g.copy())])
    b, w_b = cls(0.05), w0.copy()
    for g in gs[:7]:
        b.apply([(w_b, g.copy())])
    it, arrays = b.get_state()
    c = cls(0.05)
    c.set_state(it, {k: v.copy() for k, v in arrays.items()}, [(w_b, gs[0])])
    for g in gs[7:]:
        c.apply([(w_b, g.copy())])
    np.testing.assert_allclose(w_b, w_a, rtol=1e-12, atol=1e-14)
    name = cls.__name__.lower()
    assert type(optimizers.get(name)) is cls
    back = optimizers.get(optimizers.serialize(cls(0.2)))
    assert type(back) is cls and back.get_config() == cls(0.2).get_config()


def test_adagrad_nadam_bad_arguments():
    with pytest.raises(ValueError, match="Adagrad: initial_accumulator_value must be >= 0. Received -1"):
        optimizers.Adagrad(initial_accumulator_value=-1)
    with pytest.raises(ValueError, match=r"Nadam: beta_1 must be in \[0, 1\). Received 1.0"):
        optimizers.Nadam(beta_1=1.0)
