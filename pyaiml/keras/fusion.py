"""The fusion pass of ``Sequential``'s training step: which neighbouring layers share work.

What it is: :func:`plan_sequential` looks at a model's layers and loss once (at
``compile()``, again when the layers change) and returns a :class:`FusionPlan`, a plain
record per layer; the model then passes each layer its :class:`LayerFusion` as the
``fusion=`` argument of ``forward``/``backward``. Nothing is written into the layers: a
layer called without ``fusion`` (on its own, or by another model) computes its own
activation and its own activation gradient. ``model.fusion_plan`` shows the plan;
``FusionPlan.describe()`` lists its decisions in words.

The fusions (each measured on the mission CNN's training step when it was introduced):
- activation in the loss: the last layer's softmax (or sigmoid) is left to the loss, which
  takes the logits (softmax + cross-entropy in one stable step, gradient ``p - y``);
- ReLU into the max-pool: a max-pool right after a layer with a ReLU activation takes the
  ReLU's gradient through its window indices (a window whose maximum is 0 passes none), so the
  layer before skips its ReLU mask;
- conv + bias + ReLU in one kernel call (the conv layer decides that itself, fused or not);
- no input gradient for the first layer (``need_dx`` False: the conv op skips that work);
- owned output gradients: in the model's backward pass each ``dy`` is a fresh array, so a
  layer may apply its ReLU mask in place.

What it is not: a graph compiler; models built with the functional API or by subclassing
train through the tape (pyaiml/autograd), unfused. Tests: tests/test_keras_fused.py (the
plans of typical models, and each fusion's gradients against torch autograd in float64).
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class LayerFusion:
    """What one layer's ``forward``/``backward`` does differently inside the fused step."""

    activation_in_loss: bool = False  # return the logits; the loss applies the activation
    relu_input: bool = False  # (training forward, max-pools) the input is a ReLU's output
    relu_grad_done: bool = False  # (backward) dy already is the gradient at the ReLU's input
    dy_owned: bool = False  # (backward) dy is a fresh array this layer may overwrite


UNFUSED = LayerFusion()


@dataclass(frozen=True)
class FusionPlan:
    """Per layer (in model order): ``train`` and ``evaluate`` hold the :class:`LayerFusion`
    passed in those steps (None: the layer takes no ``fusion`` argument), ``need_dx`` whether
    backward computes the input gradient. ``loss_fused``: the loss takes the logits."""

    loss_fused: bool
    train: tuple
    evaluate: tuple
    need_dx: tuple
    names: tuple

    def records(self, training: bool, fused: bool):
        """The per-layer records for a forward pass (None: no fusion argument at all): the
        training step's, or evaluation's when the loss takes the logits; with ``fused`` False
        (a training-mode call of the model) the last layer applies its own activation."""
        if training:
            if fused or not self.loss_fused:
                return self.train
            return self.train[:-1] + (replace(self.train[-1], activation_in_loss=False),)
        return self.evaluate if fused else None

    def describe(self) -> list[str]:
        """The plan's decisions in words, one line each."""
        out = []
        for name, f, nd in zip(self.names, self.train, self.need_dx):
            if f is not None and f.activation_in_loss:
                out.append(f"{name}: activation left to the loss (it takes the logits)")
            if f is not None and f.relu_input:
                out.append(f"{name}: takes the previous layer's ReLU gradient through its window indices")
            if f is not None and f.relu_grad_done:
                out.append(f"{name}: skips its ReLU mask (the max-pool after it applied it)")
            if not nd:
                out.append(f"{name}: no input gradient (first layer)")
        return out


def _fusable(layer) -> bool:
    from pyaiml.keras import layers as L

    return isinstance(layer, (L._ActMixin, L._MaxPool))


def _pool_gates(layer) -> bool:
    """A max-pool whose training forward keeps window indices (small windows) can take a ReLU's
    gradient."""
    import numpy as np

    from pyaiml.keras import layers as L
    from pyaiml.ops.pool import MAX_WINDOW

    return isinstance(layer, L._MaxPool) and int(np.prod(layer.pool_size)) <= MAX_WINDOW


def plan_sequential(layers, loss) -> FusionPlan:
    """The fusion plan of a Sequential model's ``layers`` trained with ``loss``."""
    from pyaiml.keras import activations as A
    from pyaiml.keras import layers as L

    n = len(layers)
    loss_fused = False
    if n and loss is not None and loss.fusable_activation and not loss.from_logits:
        last = layers[-1]
        act = getattr(last, "activation", None)
        loss_fused = isinstance(last, L._ActMixin) and act is not None and act.name == loss.fusable_activation
    in_loss = [loss_fused and i == n - 1 for i in range(n)]
    relu_out = [getattr(l, "activation", None) is A.relu and isinstance(l, L._ActMixin) and not in_loss[i]
                for i, l in enumerate(layers)]
    relu_input = [i > 0 and relu_out[i - 1] and _pool_gates(l) for i, l in enumerate(layers)]
    train, evaluate = [], []
    for i, l in enumerate(layers):
        if not _fusable(l):
            train.append(None)
            evaluate.append(None)
            continue
        train.append(LayerFusion(activation_in_loss=in_loss[i], relu_input=relu_input[i],
                                 relu_grad_done=relu_out[i] and i + 1 < n and relu_input[i + 1], dy_owned=True))
        evaluate.append(LayerFusion(activation_in_loss=in_loss[i]))
    first = next((i for i, l in enumerate(layers) if not isinstance(l, L.InputLayer)), 0)
    need_dx = tuple(i != first for i in range(n))
    return FusionPlan(loss_fused, tuple(train), tuple(evaluate), need_dx, tuple(l.name for l in layers))
