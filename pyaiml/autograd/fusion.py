"""The tape's fusion pass: decisions over a recorded graph, made before its reverse walk.

What it is. ``run(nodes, targets)`` looks at the recorded ops of one tape (pyaiml/autograd/
tape.py) and decides where neighbouring ops share work in the backward pass;
``GradientTape.gradient`` and ``clipped_gradient`` run it before walking the records. Ops
mark what they offer with their record's ``tag``; the pass alone decides, from the whole
graph, whether the offer is taken. ``trace(step)`` runs a recorded step and returns the
pass's decisions as a :class:`FusionReport` (``model.fusion_plan`` shows a Keras model's).

The rules:
- ``relu_into_pool``: a conv recorded with its ReLU in the kernel's epilogue (tag ``relu``)
  whose every reader is a max pool that took the ReLU's gradient through its window indices
  (tag ``relu_gate``: a window whose maximum is 0 passes none) skips its own ReLU mask in
  backward. One other reader (a residual branch, the gradient seeded at the conv's output)
  keeps the mask.
- ``softmax_into_loss``: a cross-entropy recorded on a softmax output takes the logits
  (tag ``softmax_logits``; its value and gradient ``p - y`` in one stable step). Decided
  when the loss is recorded, since the value depends on it; the pass lists it.
- ``no_input_gradient``: an op whose input needs no gradient does not compute it (a model's
  first conv or dense layer skips its input-gradient GEMM); listed for conv, dense and
  matmul.

What it is not: a graph compiler; nothing is reordered or merged across more than one edge.
Tests: tests/test_autograd_fusion.py (each rule's decision on small graphs, and gradients
with the pass equal to those without it, against torch autograd in float64).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

_HEAVY_INPUT = ("conv", "dense", "matmul")
_switch = threading.local()


class disabled:
    """``with fusion.disabled():`` the pass takes no offer in this thread (every op runs its
    own backward in full): the reference the fused gradients are tested against."""

    def __enter__(self):
        self._saved = getattr(_switch, "off", False)
        _switch.off = True
        return self

    def __exit__(self, *exc):
        _switch.off = self._saved
        return False


@dataclass(frozen=True)
class Decision:
    """One decision of the pass: its rule, the op it applies to and, in words, why."""

    rule: str
    op: str
    detail: str


@dataclass
class FusionReport:
    """The decisions of one run of the pass, in recording order."""

    decisions: list = field(default_factory=list)

    def rules(self):
        """The rule of each decision, in order."""
        return [d.rule for d in self.decisions]

    def describe(self):
        """One line per decision."""
        return [f"{d.rule}: {d.op} ({d.detail})" for d in self.decisions]

    def __repr__(self):
        return "FusionReport(" + "; ".join(self.describe()) + ")"


def run(nodes, targets=(), report=False):
    """Decide the fusions of ``nodes`` (a tape's records) whose reverse walk starts at
    ``targets``; applies them (on the values the ops' backward functions read) and returns a
    FusionReport when ``report`` (else None)."""
    # readers are counted only for the values that offer a fusion (a conv's ReLU output)
    readers = {id(n.out): 0 for n in nodes if n.tag == "relu"}
    if not readers and not report:
        return None  # nothing to decide (every step of a model without conv + ReLU)
    gates: dict[int, int] = {}
    for n in nodes:
        for p, need in zip(n.parents, n.needs):
            if need and id(p) in readers:
                readers[id(p)] += 1
        if n.tag == "relu_gate":
            k = id(n.parents[0])
            gates[k] = gates.get(k, 0) + 1
    for t in targets:  # a gradient seeded at a value reaches it through no op
        if id(t) in readers:
            readers[id(t)] += 1
    out = FusionReport() if report else None
    on = not getattr(_switch, "off", False)
    for i, n in enumerate(nodes):
        if n.tag == "relu":
            k = id(n.out)
            g, r = gates.get(k, 0), readers.get(k, 0)
            n.out._relu_done = on and bool(g) and g == r
            if report and n.out._relu_done:
                out.decisions.append(Decision("relu_into_pool", f"#{i} conv",
                                              f"its {g} max pool(s) apply the ReLU's gradient"))
        if not report:
            continue
        if n.tag == "softmax_logits":
            out.decisions.append(Decision("softmax_into_loss", f"#{i} loss",
                                          "cross-entropy from the logits; gradient p - y"))
        if n.op in _HEAVY_INPUT and n.needs and not n.needs[0]:
            out.decisions.append(Decision("no_input_gradient", f"#{i} {n.op}", "its input needs no gradient"))
    return out


def trace(step, layers=()):
    """Run ``step() -> (tape, loss)`` (a recorded training step, not applied) with the
    layers' state restored after it (their non-trainable variables, a stateful recurrent
    layer's kept states and the shared random generator), run the pass over its records and
    return the FusionReport."""
    from pyaiml.keras._common import rng

    saved = [(v, v.value.copy()) for l in layers for v in getattr(l, "non_trainable_variables", ())]
    # a stateful recurrent layer keeps its last states as a plain attribute
    every = [x for l in layers for x in (l._all_layers() if hasattr(l, "_all_layers") else [l])]
    kept = [(x, x.__dict__["states"]) for x in every if "states" in getattr(x, "__dict__", {})]
    gen = rng()
    state = gen.bit_generator.state
    try:
        tape, loss = step()
    finally:
        for v, a in saved:
            v.value[...] = a
        for x, st in kept:
            x.states = st
        gen.bit_generator.state = state
    targets = (loss,) if getattr(loss, "requires_grad", False) else ()
    return run(tape._nodes, targets, report=True)
