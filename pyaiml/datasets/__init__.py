"""Small datasets shipped with pyaiml (no download needed)."""
from pyaiml.datasets.digits import load_digits

__all__ = ["load_digits"]
