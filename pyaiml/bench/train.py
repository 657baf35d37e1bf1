"""Training-step suite: the mission's two Keras models, pyaiml.keras against PyTorch.

Cases (batch 32, Adam, float32, the same thread count on both sides):
  - the image CNN (Conv2D 32 3x3 relu, MaxPool 2, Conv2D 64 3x3 relu, MaxPool 2, Dense 10
    softmax; input 32x32x3): one training step (forward, softmax + cross-entropy, backward,
    Adam update) against the same model in torch, channels_last and NCHW; and inference.
  - the speech Conv1D model (Conv1D 64 k3 relu, MaxPool 2, Conv1D 64 k3 relu, MaxPool 2,
    Dense 10 softmax; input (128, 1)): training step and inference against torch (NCL).
pyaiml's step is exactly what ``fit`` runs per batch (``Sequential._train_step`` with the
per-op input checks off, as inside fit: the layers' call() on a GradientTape, conv + bias +
ReLU in one kernel, and the tape's fusion pass: each max-pool after such a conv takes the
ReLU's gradient through one-byte window indices, the first layer's weight gradient only,
softmax + cross-entropy from the logits); torch's is zero_grad / forward / cross_entropy
on logits / backward / Adam.step. Before timing, both models get the same weights and their
outputs are compared, and pyaiml's first-layer kernel gradient is checked against torch's
in float64.
Throughput is samples per second. Run: ``python -m pyaiml.cli bench train``.
"""
from __future__ import annotations

import numpy as np

from pyaiml.bench.harness import Case, check_close

B = 32


def _mission_cnn():
    from pyaiml.keras import layers as L
    from pyaiml.keras.models import Sequential

    m = Sequential([L.Conv2D(32, (3, 3), activation="relu", input_shape=(32, 32, 3)), L.MaxPooling2D((2, 2)),
                    L.Conv2D(64, (3, 3), activation="relu"), L.MaxPooling2D((2, 2)), L.Flatten(),
                    L.Dense(10, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return m


def _speech_cnn():
    from pyaiml.keras import layers as L
    from pyaiml.keras.models import Sequential

    m = Sequential([L.Conv1D(64, 3, activation="relu", input_shape=(128, 1)), L.MaxPooling1D(2),
                    L.Conv1D(64, 3, activation="relu"), L.MaxPooling1D(2), L.Flatten(),
                    L.Dense(10, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return m


def _torch_twin(model, rank):
    """The same network in torch with the pyaiml model's weights (logits output)."""
    import torch
    from torch import nn

    k1, b1, k2, b2, kd, bd = model.get_weights()
    conv, pool = (nn.Conv2d, nn.MaxPool2d) if rank == 2 else (nn.Conv1d, nn.MaxPool1d)
    c1, c2 = conv(k1.shape[-2], k1.shape[-1], k1.shape[:-2]), conv(k2.shape[-2], k2.shape[-1], k2.shape[:-2])
    lin = nn.Linear(kd.shape[0], kd.shape[1])
    perm = (3, 2, 0, 1) if rank == 2 else (2, 1, 0)
    spatial = model.layers[3].output_shape  # pooled map, channels last
    with torch.no_grad():
        c1.weight.copy_(torch.from_numpy(np.ascontiguousarray(k1.transpose(perm))))
        c1.bias.copy_(torch.from_numpy(b1))
        c2.weight.copy_(torch.from_numpy(np.ascontiguousarray(k2.transpose(perm))))
        c2.bias.copy_(torch.from_numpy(b2))
        # Keras flattens channels last (H, W, C); torch flattens (C, H, W)
        kk = kd.reshape(*spatial, kd.shape[1])
        kk = kk.transpose((3, 2, 0, 1) if rank == 2 else (2, 1, 0)).reshape(kd.shape[1], -1)
        lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(kk)))
        lin.bias.copy_(torch.from_numpy(bd))
    return nn.Sequential(c1, nn.ReLU(), pool(2), c2, nn.ReLU(), pool(2), nn.Flatten(), lin)


def _steps(model):
    from pyaiml.keras.models import _NoFiniteChecks

    def train(x, y):
        with _NoFiniteChecks():
            model._train_step(x, y)

    def infer(x):
        with _NoFiniteChecks():
            model._forward(x)

    return train, infer


def _grads(model, x, y):
    """The first conv kernel's gradient (torch layout) of the training step, without an update."""
    from pyaiml.keras.models import _NoFiniteChecks

    with _NoFiniteChecks():
        tape, loss, _, _ = model._recorded_loss(x, y)
        return tape.gradient(loss, model.layers[0]._var("kernel"))


def cases(quick: bool = False):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
    from pyaiml.keras import utils

    backend = "pyaiml.ops conv"
    rng = np.random.default_rng(0)
    for name, make, shape, rank in (("mission CNN", _mission_cnn, (32, 32, 3), 2),
                                    ("speech Conv1D", _speech_cnn, (128, 1), 1)):
        utils.set_random_seed(0)
        model = make()
        x = rng.random((B,) + shape, dtype=np.float32)
        ids = rng.integers(0, 10, B)
        y = utils.to_categorical(ids, 10)
        train, infer = _steps(model)
        fns_t = {"pyaiml": lambda: train(x, y)}
        fns_i = {"pyaiml": lambda: infer(x)}
        peer = None
        validate = None
        if torch is not None:
            tm = _torch_twin(model, rank)
            tx = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
            ty = torch.from_numpy(ids)
            variants = [("torch_cl", torch.channels_last), ("torch_nchw", torch.contiguous_format)] if rank == 2 \
                else [("torch", torch.contiguous_format)]
            for key, fmt in variants:
                net = _torch_twin(model, rank)
                if rank == 2:
                    net = net.to(memory_format=fmt)
                xin = tx.contiguous(memory_format=fmt) if rank == 2 else tx
                opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)

                def tstep(net=net, xin=xin, opt=opt):
                    opt.zero_grad(set_to_none=True)
                    F.cross_entropy(net(xin), ty).backward()
                    opt.step()

                def tinfer(net=net, xin=xin):
                    with torch.no_grad():
                        net(xin)

                fns_t[key] = tstep
                fns_i[key] = tinfer
            peer = variants[0][0]

            def validate(model=model, tm=tm, tx=tx, ty=ty, x=x, y=y, rank=rank):
                from pyaiml.keras.models import _NoFiniteChecks

                with _NoFiniteChecks():
                    probs = model._forward(x)
                with torch.no_grad():
                    want = torch.softmax(tm(tx), -1).numpy()
                check_close("probabilities", probs, want, rtol=1e-4, atol=1e-5)
                # gradient against torch in float64: torch's own float32 conv gradient is off
                # by ~3e-3 relative here (summing 28,800 terms), pyaiml's float32 by ~1e-6
                g = _grads(model, x, y)
                t64 = _torch_twin(model, rank).double()
                F.cross_entropy(t64(tx.double()), ty).backward()
                check_close("first-layer kernel gradient", g, t64[0].weight.grad.numpy(), rtol=1e-4, atol=1e-6)

        extra = {"conv backend": backend}
        yield Case("train", f"{name} train step", f"b{B} {shape}", None, "pyaiml", fns_t, peer, validate,
                   extra=extra, unit="samples/s", work=B)
        yield Case("train", f"{name} inference", f"b{B} {shape}", None, "pyaiml", fns_i, peer, None,
                   extra=extra, unit="samples/s", work=B)
