"""Preallocated key/value cache for decoder generation.

One cache holds a batch of sequences that advance together, left-padded: ``k`` and ``v``
are (layers, B, Hk, T_max, D) float32, allocated once for the longest sequence the call
may reach (prompt + max_new_tokens), so decoding never reallocates or copies the cache.
``valid`` (B, T_max) marks the slots that hold real tokens (False for left padding);
``next_pos`` (B,) is each sequence's next position id (the count of its real tokens), so a
padded sequence sees the same positions as it would alone; ``length`` is the number of
filled slots, shared by the batch.

Not here: attention itself (pyaiml.ops.scaled_dot_product_attention reads ``k[:, :, :T]``).
Tests: tests/test_llm_models.py (padded batches against unpadded runs and transformers).
"""
from __future__ import annotations

import numpy as np


class KVCache:
    """Keys and values of ``layers`` attention layers for ``batch`` sequences."""

    def __init__(self, layers: int, batch: int, kv_heads: int, max_len: int, head_dim: int):
        for name, v in (("layers", layers), ("batch", batch), ("kv_heads", kv_heads), ("max_len", max_len),
                        ("head_dim", head_dim)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"KVCache: {name} must be an int >= 1. Received {v!r}")
        shape = (layers, batch, kv_heads, max_len, head_dim)
        # Written here, not left to np.zeros' lazily mapped pages: each decode step writes
        # one new slot in every (layer, sequence, head) row, and on pages never touched
        # every 16th step would page-fault thousands of times (a batch-8 GPT-2 step spent
        # ~20% of its time there). The cost moves to the allocation, before the prefill.
        self.k = np.empty(shape, dtype=np.float32)
        self.v = np.empty(shape, dtype=np.float32)
        self.k.fill(0.0)
        self.v.fill(0.0)
        self.valid = np.zeros((batch, max_len), dtype=bool)
        self.next_pos = np.zeros(batch, dtype=np.int64)
        self.length = 0
        self.max_len = max_len
        self.batch = batch

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def reserve(self, n: int) -> int:
        """Claim n more slots; returns the first one. ValueError when the cache is full."""
        if self.length + n > self.max_len:
            raise ValueError(f"KVCache: {n} more tokens do not fit: {self.length} of {self.max_len} slots are used")
        s = self.length
        self.length += n
        return s
