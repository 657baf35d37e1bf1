"""Small datasets shipped with pyaiml (no download needed), and loaders for external data."""
from pyaiml.datasets.digits import load_digits
from pyaiml.datasets.fsdd import load_fsdd
from pyaiml.datasets.number_words import number_pairs, number_to_words
from pyaiml.datasets.shakespeare import load_tiny_shakespeare, split_text

__all__ = ["load_digits", "load_fsdd", "load_tiny_shakespeare", "split_text", "number_pairs", "number_to_words"]
