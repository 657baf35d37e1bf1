"""Sequence models on pyaiml's attention kernel: Transformer layers (Keras lifecycle), a
character-level language model with key/value-cached generation, an encoder-decoder
translator with greedy and beam-search decoding, and a character tokenizer.

Tests: tests/test_tokenizer.py, tests/test_transformer*.py.
"""
from pyaiml.seq.layers import KVCache, PositionalEmbedding, TransformerDecoderBlock, TransformerEncoderBlock
from pyaiml.seq.lm import TransformerLM, sample_token
from pyaiml.seq.tokenizer import CharTokenizer

__all__ = ["CharTokenizer", "KVCache", "PositionalEmbedding", "TransformerDecoderBlock", "TransformerEncoderBlock",
           "TransformerLM", "sample_token"]
