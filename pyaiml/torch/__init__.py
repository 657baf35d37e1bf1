"""PyTorch bridge: pyaiml's CPU kernels as ``torch.library`` custom ops and drop-in modules.

Importing this package registers ``torch.ops.pyaiml.*`` (pure Python, no build against
torch) and exposes functional wrappers with ``torch.nn.functional`` signatures plus
``pyaiml.torch.nn`` modules whose constructors and state_dict keys are torch's::

    import pyaiml.torch as pt
    y = pt.conv2d(x, w, b, padding=1)          # autograd, torch.compile(fullgraph=True) ok
    layer = pt.nn.Conv2d(3, 32, 3)             # loads a torch.nn.Conv2d state_dict

pyaiml itself imports without torch; this package needs it. Inside torch, pyaiml's thread
pool follows ``torch.get_num_threads()`` (see ``_threads.py``). Not here: CUDA kernels.
Tests: tests/test_torch_bridge*.py.
"""
try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a fresh interpreter by the tests
    raise ImportError(
        "pyaiml.torch needs PyTorch, which is not installed (" + str(e) + "). Install it with "
        "`pip install torch` (CPU wheels: --index-url https://download.pytorch.org/whl/cpu); "
        "the rest of pyaiml works without it."
    ) from e

from pyaiml.torch import nn  # noqa: E402
from pyaiml.torch._kernels import kernel_source  # noqa: E402
from pyaiml.torch._threads import get_sync as get_thread_sync  # noqa: E402
from pyaiml.torch._threads import set_sync as set_thread_sync  # noqa: E402
from pyaiml.torch.ops import (  # noqa: E402
    conv1d,
    conv2d,
    hmm_forward_backward,
    max_pool1d,
    max_pool2d,
    scaled_dot_product_attention,
)

__all__ = [
    "conv1d",
    "conv2d",
    "max_pool1d",
    "max_pool2d",
    "scaled_dot_product_attention",
    "hmm_forward_backward",
    "nn",
    "kernel_source",
    "set_thread_sync",
    "get_thread_sync",
]
