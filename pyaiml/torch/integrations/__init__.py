"""Glue between pyaiml.torch and frameworks built on torch.

``pyaiml.torch.integrations.transformers``: pyaiml's attention as a Hugging Face
transformers attention implementation (``attn_implementation="pyaiml"``). Importing this
package imports no framework; each submodule imports its own when it is imported.
Tests: tests/test_torch_transformers.py.
"""
