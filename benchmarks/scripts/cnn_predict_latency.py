"""Inference latency of the tutorial's CNN: pyaiml.keras against onnxruntime and torch, side by
side in one process, at batch 1, 32 and 256.

The network is the mission's Keras CNN (Conv2D 32 3x3 relu, MaxPooling2D 2, Conv2D 64 3x3 relu,
MaxPooling2D 2, Flatten, Dense 10 softmax on 32x32x3 images), built once in pyaiml.keras with a
fixed seed. The peers get the same weights:
- onnxruntime: an ONNX graph written here with ``onnx.helper`` (NHWC input transposed to NCHW,
  Conv+Relu, MaxPool, Conv+Relu, MaxPool, back to NHWC, Flatten, Gemm, Softmax: the Keras
  model's exact computation), run by an ``InferenceSession`` with all graph optimisations,
  ``intra_op_num_threads`` = --threads and one inter-op thread;
- torch: the same layers in torch.nn on channels_last tensors, eval mode, inference_mode.
pyaiml is timed through ``model.predict(x, verbose=0)`` (what the tutorial calls) and the model
call ``model(x)``. Outputs are checked against each other first (1e-4).

Timing: pyaiml.bench.harness.time_interleaved (the sides alternate in every round, a pause
before each sample lets the previous side's pool threads go idle, medians of --repeats samples
of >= 20 ms), the same thread count for every side, glibc's allocator told to keep freed
memory. Prints milliseconds per call, images per second and ratios (> 1: pyaiml faster), the CPU
model and the load average.

Run: python benchmarks/scripts/cnn_predict_latency.py [--threads 2] [--repeats 9]
Needs onnx and onnxruntime (the bench extra). Not a test.
"""
from __future__ import annotations

import argparse
import os

if __name__ == "__main__":
    import _thread_env  # --threads into OPENBLAS/OMP_NUM_THREADS before NumPy loads

    _thread_env.apply()

import numpy as np


def mission_cnn(seed=0):
    from pyaiml.keras import layers as L
    from pyaiml.keras import utils
    from pyaiml.keras.models import Sequential

    utils.set_random_seed(seed)
    m = Sequential([L.Conv2D(32, (3, 3), activation="relu", input_shape=(32, 32, 3)), L.MaxPooling2D((2, 2)),
                    L.Conv2D(64, (3, 3), activation="relu"), L.MaxPooling2D((2, 2)), L.Flatten(),
                    L.Dense(10, activation="softmax")])
    m.compile(optimizer="adam", loss="categorical_crossentropy")
    m.predict(np.zeros((1, 32, 32, 3), np.float32), verbose=0)  # builds the weights
    return m


def onnx_model(m):
    """The Keras model as an ONNX graph (opset 17) with its weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c1, _, c2, _, _, d = m.layers

    def conv_w(layer):  # pyaiml keeps conv kernels as (cout, cin, kh, kw), ONNX's layout
        return np.ascontiguousarray(layer.kernel)

    inits = [numpy_helper.from_array(conv_w(c1), "w1"), numpy_helper.from_array(c1.bias, "b1"),
             numpy_helper.from_array(conv_w(c2), "w2"), numpy_helper.from_array(c2.bias, "b2"),
             numpy_helper.from_array(d.kernel, "wd"), numpy_helper.from_array(d.bias, "bd")]
    nodes = [
        helper.make_node("Transpose", ["x"], ["xc"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["xc", "w1", "b1"], ["z1"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["z1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["z2"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["z2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Transpose", ["p2"], ["p2l"], perm=[0, 2, 3, 1]),  # Keras flattens NHWC
        helper.make_node("Flatten", ["p2l"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "wd", "bd"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1),
    ]
    graph = helper.make_graph(nodes, "mission_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 32, 32, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def torch_model(m):
    import torch

    c1, _, c2, _, _, d = m.layers
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    head = torch.nn.Linear(d.kernel.shape[0], 10)
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(c1.kernel))
        net[0].bias.copy_(torch.from_numpy(c1.bias))
        net[3].weight.copy_(torch.from_numpy(c2.kernel))
        net[3].bias.copy_(torch.from_numpy(c2.bias))
        head.weight.copy_(torch.from_numpy(d.kernel.T.copy()))
        head.bias.copy_(torch.from_numpy(d.bias))
    net = net.eval().to(memory_format=torch.channels_last)
    head.eval()

    def run(x):
        with torch.inference_mode():
            t = torch.from_numpy(x).permute(0, 3, 1, 2)  # NHWC memory = channels_last NCHW view
            z = net(t).permute(0, 2, 3, 1).reshape(t.shape[0], -1)
            return torch.softmax(head(z), dim=1).numpy()

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--batches", default="1,32,256")
    a = ap.parse_args()

    import onnxruntime as ort
    import torch

    from pyaiml.bench.harness import (
        configure_allocator,
        cpu_model,
        set_threads,
        time_interleaved,
    )

    configure_allocator()
    set_threads(a.threads)
    m = mission_cnn()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_model(m), so, providers=["CPUExecutionProvider"])
    trun = torch_model(m)
    print(f"{cpu_model()}; {a.threads} threads; onnxruntime {ort.__version__}, torch {torch.__version__}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| batch | pyaiml predict ms | pyaiml model(x) ms | onnxruntime ms | torch CL ms | predict vs onnxruntime | "
          "model(x) vs onnxruntime | predict vs torch |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(1)
    for b in (int(s) for s in a.batches.split(",")):
        x = rng.random((b, 32, 32, 3), dtype=np.float32)
        want = sess.run(None, {"x": x})[0]
        for name, got in (("predict", m.predict(x, verbose=0)), ("model(x)", np.asarray(m(x))), ("torch", trun(x))):
            err = float(np.abs(got - want).max())
            if err > 1e-4:
                raise SystemExit(f"batch {b}: {name} differs from onnxruntime by {err:.2e}")
        t = time_interleaved({"predict": lambda x=x: m.predict(x, verbose=0), "call": lambda x=x: m(x),
                              "ort": lambda x=x: sess.run(None, {"x": x}), "torch": lambda x=x: trun(x)},
                             repeats=a.repeats, min_time=0.02)
        ms = {k: v.median * 1e3 for k, v in t.items()}
        print(f"| {b} | {ms['predict']:.3f} | {ms['call']:.3f} | {ms['ort']:.3f} | {ms['torch']:.3f} | "
              f"{ms['ort'] / ms['predict']:.2f}x | {ms['ort'] / ms['call']:.2f}x | {ms['torch'] / ms['predict']:.2f}x |",
              flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
