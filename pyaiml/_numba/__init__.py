"""Numba fallbacks with the same signatures as the C++ entry points (pyaiml._C).

Compiled on first use and cached on disk (``cache=True``); NUMBA_CACHE_DIR moves the cache.
"""
