"""NumPy oracles: slow, obvious, float64 inside. They are the ``numpy`` backend and the
reference the tests compare every other backend with."""
