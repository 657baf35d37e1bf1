"""pyaiml.serve: an inference server for pyaiml's models (OpenAI-compatible + Open Inference Protocol v2).

    from pyaiml.serve import create_app
    app = create_app(models={"cnn": "cnn.keras", "shakespeare": "lm.npz", "w2v": "w2v.npz"})
    # any ASGI server runs it; or from the shell:
    #   pyaiml serve --model cnn=cnn.keras --model shakespeare=lm.npz --model qwen=path/to/hf-folder

Language models (``TransformerLM`` files, Hugging Face checkpoint folders that pyaiml.llm
reads: GPT-2, Llama, Mistral, Qwen2, int8-quantized ones too, or any :class:`LMAdapter`)
are served on ``/v1/completions`` and ``/v1/chat/completions`` (streaming included) with
continuous batching; Keras, HMM, HMMClassifier and Word2Vec models on
``/v2/models/{name}/infer`` (Keras with dynamic batching); Word2Vec and BERT checkpoint
folders on ``/v1/embeddings``. Prometheus metrics on
``/metrics``, Bearer API keys, structured access logs, graceful shutdown.

Needs the ``serve`` extra (``pip install 'pyaiml[serve]'``: starlette, uvicorn,
prometheus-client); ``import pyaiml`` and ``import pyaiml.serve`` work without it, and
:func:`create_app` then raises ImportError saying what to install.

Modules: app (create_app, middleware, v2 routes), openai_api (/v1 routes), engine
(LMAdapter, TransformerLMAdapter, Scheduler), llm_adapter (DecoderAdapter,
EncoderEmbeddings for pyaiml.llm checkpoints), batching (DynamicBatcher), models (file
detection, v2 wrappers), tensors (v2 tensor codec), metrics, server (``pyaiml serve``,
ServerThread, MemoryTrimmer), loadgen (a bounded loopback load generator), bench
(``pyaiml bench serve``). Tests: tests/test_serve_*.py.
"""
from __future__ import annotations

from pyaiml.serve.engine import LMAdapter, TransformerLMAdapter

__all__ = ["LMAdapter", "ServerThread", "TransformerLMAdapter", "create_app", "require"]

_NEEDED = (("starlette", "starlette"), ("uvicorn", "uvicorn"), ("prometheus_client", "prometheus-client"))


def require():
    """ImportError naming what to install when the serve extra is missing."""
    import importlib.util

    missing = [pip for mod, pip in _NEEDED if importlib.util.find_spec(mod) is None]
    if missing:
        raise ImportError(f"pyaiml.serve needs {', '.join(missing)}: pip install 'pyaiml[serve]'")


def create_app(models, **kw):
    """The ASGI app serving ``models`` (see :func:`pyaiml.serve.app.create_app`)."""
    require()
    from pyaiml.serve.app import create_app as _create

    return _create(models, **kw)


def __getattr__(name):
    if name == "ServerThread":
        require()
        from pyaiml.serve.server import ServerThread

        return ServerThread
    raise AttributeError(f"module 'pyaiml.serve' has no attribute {name!r}")
