"""Small datasets shipped with pyaiml (no download needed), and loaders for external data."""
from pyaiml.datasets.digits import load_digits
from pyaiml.datasets.fsdd import load_fsdd

__all__ = ["load_digits", "load_fsdd"]
