"""Inference plans: a chain of layers run on plain arrays with the per-call work done once.

``planned_forward(owner, layers, x, fallback)`` runs ``layers`` one after another on x (their
inference path, ``forward``) through a plan kept on ``owner`` per input shape, dtype and
PYAIML_BACKEND. On C++, a chain of conv, max pool, flatten, dropout and dense layers runs as
one native call (``Layer._native_step``, csrc/bindings/sequential.cpp: the same kernels, a
native softmax a few ulps from NumPy's); otherwise one callable per layer
(``Layer._inference_fn``: geometry, argument checks and backend choice of every call done
once; the same kernels and bits). The weights are read at every call. A layer that makes a
mask (Embedding(mask_zero=True)) means no plan: ``fallback(x)`` runs instead, as it does
while the finite checks are on (the plans run with them off; the caller checks x first).

Users: Sequential (models.py) over its layers, and a functional model (functional.py) whose
graph is a single chain from one input to one output. Copies of the owner leave the plans
behind (their callables hold the owner's layers). Tests: tests/test_keras_predict_plan.py.
"""
from __future__ import annotations

import numpy as np

from pyaiml import _backend
from pyaiml.ops._validate import get_check_finite

_MAX_PLANS = 16  # input shapes kept per owner; more clear the cache


def _native_plan(x, steps, y):
    """One callable running the layers' steps in C++ (_C.SequentialPlan), or None where the C++
    backend does not run every op they use or no step computes anything."""
    kinds = {st[0][0] for _, st in steps if st[0] is not None}
    ops = {0: "conv2d", 1: "max_pool2d", 2: "gemm"}
    if not kinds or any(_backend.chosen(ops[k])[0] != "cpp" for k in kinds) or y.dtype != np.float32:
        return None
    plan = _backend.native().SequentialPlan(list(x.shape), [st[0] for _, st in steps if st[0] is not None],
                                            list(y.shape))
    wl = tuple((l, a) for l, st in steps for a in st[1])
    run = plan.run
    return lambda h: run(h, [getattr(l, a) for l, a in wl])


def planned_forward(owner, layers, x, fallback):
    """``layers``' inference forward of x through ``owner``'s plan for x (made on first use)."""
    if get_check_finite():
        return fallback(x)
    plans = owner.__dict__.setdefault("_iplans", {})
    key = (x.shape, x.dtype, _backend._getenv("PYAIML_BACKEND"))
    plan = plans.get(key, False)
    if plan is False:
        return _make_plan(layers, x, key, plans)
    if plan is None:  # a layer passes a mask on: no plan
        return fallback(x)
    for f in plan:
        x = f(x)
    return x


def _make_plan(layers, x, key, plans):
    """Runs the layers once on x, making the plan on the way; none (None kept) when a layer
    makes a mask: the plan passes none."""
    if len(plans) >= _MAX_PLANS:
        plans.clear()
    plan, mask, steps, x0 = [], None, [], x
    for l in layers:
        if mask is None:
            if steps is not None:
                st = l._native_step(x)
                steps = None if st is NotImplemented else steps + [(l, st)]
            f = l._inference_fn(x)
            plan.append(f if f is not None else (lambda h, fwd=l.forward: fwd(h, False, None)))
            x = plan[-1](x)
        else:
            x = l.forward(x, False, mask)
        mask = l.compute_mask(mask)
    if mask is not None or len(plan) < len(layers):
        plans[key] = None
    else:
        native = _native_plan(x0, steps, x) if steps else None
        plans[key] = (native,) if native is not None else tuple(plan)
        if native is not None:  # the plan's own result, so the first call agrees with the later ones
            return native(x0)
    return x
