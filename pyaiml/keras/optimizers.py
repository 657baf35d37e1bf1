"""Keras optimizers: SGD (momentum, Nesterov), Adam (amsgrad), AdamW, RMSprop (momentum, centered), Adagrad, Nadam.

Update rules are Keras 3's (written out below); with a constant learning rate they equal
torch.optim's (SGD: v = m*v - lr*g is -lr times torch's buffer; Adam: Keras's epsilon is
added to sqrt(v) after bias correction of the step size, torch's to sqrt(v_hat), which
differ by O(epsilon); RMSprop: Keras divides by sqrt(v + eps), torch by sqrt(v) + eps).
``learning_rate`` may be a float or a schedule (called with ``iterations``, the number of
updates done so far). State is kept per parameter slot, float32, updated in place.
``get_state``/``set_state`` carry it through save/load.
Tests: tests/test_keras_optimizers.py (20 steps against torch.optim).
"""
from __future__ import annotations

import numpy as np

from pyaiml.keras import schedules as _sched
from pyaiml.keras._common import lookup


class Optimizer:
    name = "optimizer"
    _slots: tuple = ()

    def __init__(self, learning_rate=0.001, clipnorm=None, clipvalue=None, global_clipnorm=None, name=None,
                 weight_decay=None, **kw):
        if kw:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) {sorted(kw)}")
        if isinstance(learning_rate, dict):
            learning_rate = _sched.deserialize(learning_rate)
        if not isinstance(learning_rate, _sched.LearningRateSchedule):
            learning_rate = float(learning_rate)
            if not learning_rate > 0:
                raise ValueError(f"{type(self).__name__}: learning_rate must be > 0. Received {learning_rate}")
        self.learning_rate = learning_rate
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        self.weight_decay = weight_decay
        self.iterations = 0
        self._state: list[dict] = []
        if name:
            self.name = name

    def current_lr(self) -> float:
        lr = self.learning_rate
        return float(lr(self.iterations)) if callable(lr) else lr

    def _alloc_state(self, params):
        self._state = [{s: np.zeros_like(p) for s in self._slots} for p, _ in params]

    def _ensure(self, params):
        if len(self._state) != len(params):
            self._alloc_state(params)

    def _clip(self, params):
        grads = [g for _, g in params]
        if self.clipvalue is not None:
            for g in grads:
                np.clip(g, -self.clipvalue, self.clipvalue, out=g)
        if self.clipnorm is not None:
            for g in grads:
                n = float(np.sqrt((g.astype(np.float64) ** 2).sum()))
                if n > self.clipnorm:
                    g *= g.dtype.type(self.clipnorm / n)
        if self.global_clipnorm is not None:
            n = float(np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads)))
            if n > self.global_clipnorm:
                for g in grads:
                    g *= g.dtype.type(self.global_clipnorm / n)

    def apply(self, params):
        """params: list of (weight, grad) arrays; updates weights in place, increments iterations."""
        self._ensure(params)
        self._clip(params)
        lr = self.current_lr()
        t = self.iterations + 1
        for (w, g), st in zip(params, self._state):
            if self.weight_decay:
                w -= w.dtype.type(lr * self.weight_decay) * w
            self._update(w, g, st, lr, t)
        self.iterations += 1

    def apply_gradients(self, grads_and_vars):
        """Keras-style: iterable of (grad, var); a var is an array or a Variable (its array is
        updated in place); a None gradient (a variable the loss does not reach) counts as zeros."""
        pairs = []
        for g, v in grads_and_vars:
            w = getattr(v, "value", v)
            pairs.append((w, np.zeros_like(w) if g is None else np.asarray(g, dtype=w.dtype)))
        self.apply(pairs)

    def _update(self, w, g, st, lr, t):
        raise NotImplementedError

    def get_config(self):
        lr = self.learning_rate
        return {"learning_rate": _sched.serialize(lr) if isinstance(lr, _sched.LearningRateSchedule) else lr,
                "clipnorm": self.clipnorm, "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm,
                "weight_decay": self.weight_decay}

    @classmethod
    def from_config(cls, cfg):
        return cls(**cfg)

    def get_state(self):
        arrays = {}
        for i, st in enumerate(self._state):
            for k, v in st.items():
                arrays[f"{i}/{k}"] = v
        return self.iterations, arrays

    def set_state(self, iterations, arrays, params):
        self._alloc_state(params)
        for key, v in arrays.items():
            i, k = key.split("/", 1)
            i = int(i)
            if i >= len(self._state) or k not in self._state[i] or self._state[i][k].shape != v.shape:
                raise ValueError(f"optimizer state {key!r} with shape {v.shape} does not fit the model")
            self._state[i][k][...] = v
        self.iterations = int(iterations)


class SGD(Optimizer):
    """v = momentum*v - lr*g; w += v (Nesterov: w += momentum*v - lr*g); no momentum: w -= lr*g."""
    name = "SGD"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kw):
        super().__init__(learning_rate, **kw)
        if not 0 <= momentum <= 1:
            raise ValueError(f"SGD: momentum must be in [0, 1]. Received {momentum}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self._slots = ("momentum",) if self.momentum else ()

    def _update(self, w, g, st, lr, t):
        f = w.dtype.type
        if not self.momentum:
            w -= f(lr) * g
            return
        v = st["momentum"]
        v *= f(self.momentum)
        v -= f(lr) * g
        if self.nesterov:
            w += f(self.momentum) * v - f(lr) * g
        else:
            w += v

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v) + eps)."""
    name = "Adam"
    _slots = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kw):
        super().__init__(learning_rate, **kw)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = float(beta_1), float(beta_2), float(epsilon), bool(amsgrad)
        if amsgrad:
            self._slots = ("m", "v", "vhat")
        self._scratch: dict = {}  # per-weight work arrays of the in-place update (not state)

    def _alloc_state(self, params):
        """m and v of every weight are views into two flat arrays, so that one update runs
        as a dozen NumPy calls over all weights instead of a dozen per weight (the mission
        CNN's six weights, 42k floats, 1 thread: 98 -> 74 us per update; the rest is the
        arithmetic itself, sqrt and divide mostly)."""
        self._flat = None
        self._scratch = {}
        dts = {p.dtype for p, _ in params}
        if self.amsgrad or len(dts) != 1:
            return super()._alloc_state(params)
        dt = dts.pop()
        sizes = [p.size for p, _ in params]
        offs = np.cumsum([0] + sizes)
        total = int(offs[-1])
        M, V = np.zeros(total, dt), np.zeros(total, dt)
        self._state = [{"m": M[a:b].reshape(p.shape), "v": V[a:b].reshape(p.shape)}
                       for (p, _), a, b in zip(params, offs[:-1], offs[1:])]
        self._flat = (M, V, np.empty(total, dt), np.empty(total, dt), np.empty(total, dt), sizes, dt)

    def apply(self, params):
        self._ensure(params)
        fl = getattr(self, "_flat", None)
        if fl is None or self.weight_decay or [p.size for p, _ in params] != fl[5] or any(
                p.dtype != fl[6] or g.dtype != fl[6] for p, g in params):
            return super().apply(params)
        self._clip(params)
        M, V, G, T1, T2, sizes, dt = fl
        f = dt.type
        t = self.iterations + 1
        # the arithmetic of _update, in the same order, over all weights at once
        np.concatenate([g.reshape(-1) for _, g in params], out=G)
        self._moments(G, M, V, T1, f)
        self._step(M, V, T1, T2, self._alpha(self.current_lr(), t), f)
        a = 0
        for (w, _), n in zip(params, sizes):
            w -= T2[a:a + n].reshape(w.shape)
            a += n
        self.iterations += 1

    def _moments(self, g, m, v, t1, f):
        """m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2), in place, t1 as scratch."""
        np.subtract(g, m, out=t1)
        t1 *= f(1 - self.beta_1)
        m += t1
        np.multiply(g, g, out=t1)
        t1 -= v
        t1 *= f(1 - self.beta_2)
        v += t1

    def _alpha(self, lr, t):
        return lr * np.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)

    def _step(self, m, v, t1, t2, alpha, f):
        """t2 = (alpha m) / (sqrt(v) + eps), in place, t1 as scratch."""
        np.sqrt(v, out=t1)
        t1 += f(self.epsilon)
        np.multiply(m, f(alpha), out=t2)
        t2 /= t1

    def _update(self, w, g, st, lr, t):
        # In place with two scratch arrays kept per weight: the same arithmetic, in the same
        # order, as m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= (alpha m)/(sqrt(v) + eps),
        # without the five temporaries per weight (mission CNN, 1 thread: ~0.25 -> ~0.1 ms per update).
        f = w.dtype.type
        m, v = st["m"], st["v"]
        sc = self._scratch.get(id(m))
        if sc is None or sc[0] is not m:
            sc = self._scratch[id(m)] = (m, np.empty_like(w), np.empty_like(w))
        _, t1, t2 = sc
        self._moments(g, m, v, t1, f)
        if self.amsgrad:
            np.maximum(st["vhat"], v, out=st["vhat"])
            v = st["vhat"]
        self._step(m, v, t1, t2, self._alpha(lr, t), f)
        w -= t2

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras 3's): each step first w -= lr * weight_decay * w
    (every weight), then the Adam update; ``clipnorm``/``clipvalue``/``global_clipnorm`` clip
    the gradients before both."""
    name = "AdamW"

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, **kw):
        if weight_decay is None or not float(weight_decay) >= 0:
            raise ValueError(f"AdamW: weight_decay must be a number >= 0. Received {weight_decay!r}")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay=float(weight_decay), **kw)


class RMSprop(Optimizer):
    """v = rho*v + (1-rho)g^2 (centered: minus mg^2); step = lr*g/sqrt(v + eps);
    momentum: b = momentum*b + step, w -= b; else w -= step."""
    name = "RMSprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kw):
        super().__init__(learning_rate, **kw)
        self.rho, self.momentum, self.epsilon, self.centered = float(rho), float(momentum), float(epsilon), bool(centered)
        self._slots = ("v",) + (("b",) if self.momentum else ()) + (("mg",) if self.centered else ())

    def _update(self, w, g, st, lr, t):
        f = w.dtype.type
        v = st["v"]
        v *= f(self.rho)
        v += f(1 - self.rho) * g * g
        den = v
        if self.centered:
            mg = st["mg"]
            mg *= f(self.rho)
            mg += f(1 - self.rho) * g
            den = v - mg * mg
        step = f(lr) * g / np.sqrt(den + f(self.epsilon))
        if self.momentum:
            b = st["b"]
            b *= f(self.momentum)
            b += step
            w -= b
        else:
            w -= step

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}


class Adagrad(Optimizer):
    """acc += g^2; w -= lr*g/sqrt(acc + eps); the accumulator starts at
    ``initial_accumulator_value`` (Keras's 0.1; torch.optim.Adagrad's 0 and its epsilon added
    to sqrt(acc) instead, so they agree where both start alike and epsilon is tiny)."""
    name = "Adagrad"
    _slots = ("accumulator",)

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **kw):
        super().__init__(learning_rate, **kw)
        if not initial_accumulator_value >= 0:
            raise ValueError(f"Adagrad: initial_accumulator_value must be >= 0. Received {initial_accumulator_value}")
        self.initial_accumulator_value, self.epsilon = float(initial_accumulator_value), float(epsilon)

    def _alloc_state(self, params):
        self._state = [{"accumulator": np.full_like(p, self.initial_accumulator_value)} for p, _ in params]

    def _update(self, w, g, st, lr, t):
        f = w.dtype.type
        acc = st["accumulator"]
        acc += g * g
        w -= f(lr) * g / np.sqrt(acc + f(self.epsilon))

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


class Nadam(Optimizer):
    """Adam with Nesterov momentum (Dozat 2016), Keras 3's schedule u_t = b1(1 - 0.5*0.96^t):
    m, v as Adam; m_hat = u_{t+1} m/(1 - prod_{i<=t+1} u_i) + (1 - u_t) g/(1 - prod_{i<=t} u_i);
    w -= lr*m_hat/(sqrt(v/(1 - b2^t)) + eps). Equals torch.optim.NAdam with
    momentum_decay=1 (torch's default 0.004 is the schedule 0.96^(0.004 t))."""
    name = "Nadam"
    _slots = ("m", "v")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kw):
        super().__init__(learning_rate, **kw)
        for n, b in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0 <= b < 1:
                raise ValueError(f"Nadam: {n} must be in [0, 1). Received {b}")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self._prod = (0, 1.0)  # (t, prod_{i<=t} u_i), recomputed when iterations jump (set_state)

    def _u(self, t):
        return self.beta_1 * (1.0 - 0.5 * 0.96 ** t)

    def _u_product(self, t):
        k, p = self._prod
        if k != t - 1:
            k, p = 0, 1.0
        for i in range(k + 1, t + 1):
            p *= self._u(i)
        self._prod = (t, p)
        return p

    def apply(self, params):
        self._prod_t = self._u_product(self.iterations + 1)
        super().apply(params)

    def _update(self, w, g, st, lr, t):
        f = w.dtype.type
        m, v = st["m"], st["v"]
        m += (g - m) * f(1 - self.beta_1)
        v += (g * g - v) * f(1 - self.beta_2)
        u_t, u_next = self._u(t), self._u(t + 1)
        m_hat = m * f(u_next / (1 - self._prod_t * u_next)) + g * f((1 - u_t) / (1 - self._prod_t))
        w -= f(lr) * m_hat / (np.sqrt(v / f(1 - self.beta_2 ** t)) + f(self.epsilon))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


_TABLE = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad, "nadam": Nadam}


def get(identifier) -> Optimizer:
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        return lookup("optimizer", identifier, _TABLE)()
    if isinstance(identifier, dict):
        return lookup("optimizer", identifier["class_name"], _TABLE).from_config(identifier["config"])
    raise ValueError(f"Unknown optimizer {identifier!r}. Valid identifiers: {', '.join(sorted(_TABLE))}")


def serialize(opt: Optimizer) -> dict:
    return {"class_name": type(opt).__name__, "config": opt.get_config()}
