"""pyaiml.llm.checkpoint without transformers: safetensors files written here with the
``safetensors`` package (float32, float16, bfloat16 bit patterns, int8), shards and their
index, headers that lie about sizes, the family of a config, and ``import pyaiml.llm``
without safetensors/tokenizers installed (hidden by an import hook in a child process).
"""
import json
import textwrap

import numpy as np
import pytest
from helpers import run_py

from pyaiml.llm import checkpoint

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _write_bf16(path, name, bits, shape):
    """A one-tensor safetensors file holding raw bfloat16 bit patterns."""
    hdr = json.dumps({name: {"dtype": "BF16", "shape": list(shape), "data_offsets": [0, 2 * len(bits)]}}).encode()
    with open(path, "wb") as f:
        f.write(len(hdr).to_bytes(8, "little") + hdr + np.asarray(bits, "<u2").tobytes())


def test_dtypes_are_widened_to_float32(tmp_path):
    f32 = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    f16 = np.array([0.5, -2.25, 65504.0], np.float16)
    i8 = np.array([-128, 0, 127], np.int8)
    safetensors_numpy.save_file({"a": f32, "h": f16, "q": i8}, tmp_path / "x.safetensors")
    t, meta = checkpoint.load_tensors(tmp_path / "x.safetensors")
    assert t["a"].dtype == np.float32 and np.array_equal(t["a"], f32)
    assert t["h"].dtype == np.float32 and np.array_equal(t["h"], f16.astype(np.float32))
    assert t["q"].dtype == np.int8 and np.array_equal(t["q"], i8)
    assert meta == {}


def test_bfloat16_bits(tmp_path):
    # bf16 is the top half of a float32: 0x3F80 = 1.0, 0xC040 = -3.0, 0x7F80 = inf, 0x0001 = smallest subnormal
    _write_bf16(tmp_path / "b.safetensors", "w", [0x3F80, 0xC040, 0x7F80, 0x0001], (2, 2))
    t, _ = checkpoint.load_tensors(tmp_path / "b.safetensors")
    want = np.array([1.0, -3.0, np.inf, np.float32(2.0) ** -133], np.float32).reshape(2, 2)
    assert t["w"].dtype == np.float32 and np.array_equal(t["w"], want)


def test_shards_through_the_index(tmp_path):
    safetensors_numpy.save_file({"a": np.ones(3, np.float32)}, tmp_path / "model-00001-of-00002.safetensors")
    safetensors_numpy.save_file({"b": np.zeros(2, np.float32)}, tmp_path / "model-00002-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    t, _ = checkpoint.load_tensors(tmp_path)
    assert sorted(t) == ["a", "b"]
    index["weight_map"]["c"] = "model-00003-of-00002.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"lists shard\(s\) \['model-00003-of-00002.safetensors'\]"):
        checkpoint.load_tensors(tmp_path)
    index["weight_map"]["c"] = "../elsewhere.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="plain file names"):
        checkpoint.load_tensors(tmp_path)


def test_lying_headers_are_refused_before_reading(tmp_path):
    p = tmp_path / "x.safetensors"
    safetensors_numpy.save_file({"a": np.ones((4, 4), np.float32)}, p)
    raw = bytearray(p.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    hdr = json.loads(raw[8:8 + n])
    hdr["a"]["shape"] = [1000, 1000]  # declares 4 MB in a 64-byte payload
    body = json.dumps(hdr).encode()
    p.write_bytes(len(body).to_bytes(8, "little") + body + raw[8 + n:])
    with pytest.raises(ValueError, match=r"x.safetensors: tensor 'a' .*do not match its shape"):
        checkpoint.load_tensors(p)
    p.write_bytes(b"\x05\x00")
    with pytest.raises(ValueError, match="not a safetensors file"):
        checkpoint.load_tensors(p)
    body = b"[1, 2]"
    p.write_bytes(len(body).to_bytes(8, "little") + body)
    with pytest.raises(ValueError, match="must be a JSON object"):
        checkpoint.load_tensors(p)


def test_family():
    assert checkpoint.family({"model_type": "gpt2"}) == "gpt2"
    assert checkpoint.family({"model_type": "mistral"}) == "llama"
    assert checkpoint.family({"model_type": "qwen2"}) == "llama"
    assert checkpoint.family({"architectures": ["BertForMaskedLM"]}) == "bert"
    with pytest.raises(ValueError, match=r"model_type='gemma', architectures=\[\]"):
        checkpoint.family({"model_type": "gemma"})


def test_import_without_the_llm_packages():
    code = textwrap.dedent("""
        import importlib.abc, sys
        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("safetensors", "tokenizers", "jinja2"):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Hide())
        import pyaiml, pyaiml.llm, pyaiml.cli
        import tempfile, os, json
        d = tempfile.mkdtemp()
        json.dump({"model_type": "gpt2"}, open(os.path.join(d, "config.json"), "w"))
        open(os.path.join(d, "model.safetensors"), "wb").close()
        try:
            pyaiml.llm.load(d)
        except ImportError as e:
            print("ImportError:", e)
    """)
    r = run_py(code)
    assert r.returncode == 0, r.stderr
    assert "ImportError: pyaiml.llm reads weights with the 'safetensors' package: pip install 'pyaiml[llm]'" in r.stdout
