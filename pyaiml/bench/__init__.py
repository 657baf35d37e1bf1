"""Side-by-side benchmarks of pyaiml against its peers (PyTorch, NumPy, hmmlearn, gensim).

``harness`` times callables interleaved, validates results before timing, and reports
medians, spread, GFLOP/s and ratios; each suite module (``gemm``, ...) lists its cases.
Used by ``pyaiml bench`` and by the pytest-benchmark files in ``benchmarks/``.
"""
SUITES = {
    "gemm": "pyaiml.bench.gemm",
    "word2vec": "pyaiml.bench.word2vec",
    "torch_bridge": "pyaiml.bench.torch_bridge",
    "train": "pyaiml.bench.train",
    "conv": "pyaiml.bench.conv",
    "attention": "pyaiml.bench.attention",
    "hmm": "pyaiml.bench.hmm",
    "audio": "pyaiml.bench.audio",
    "sequence": "pyaiml.bench.sequence",
    "speech": "pyaiml.bench.speech",
}
