"""pyaiml's attention as a Hugging Face transformers attention implementation.

    import pyaiml.torch.integrations.transformers as pyaiml_hf
    pyaiml_hf.register()                    # once per process
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="pyaiml")

:func:`register` adds one name (``"pyaiml"`` by default) to both registries transformers
consults: ``AttentionInterface`` (the attention function every layer calls) and
``AttentionMaskInterface`` (how the model turns its 2-D ``attention_mask`` into what that
function receives). Both are needed: with only the attention function registered,
transformers builds no mask for an unknown name and padding is silently ignored. The mask
function is transformers' own ``sdpa_mask``: a 4-D bool mask (B, 1, Lq, Lk), True = attend,
or None where a plain causal (or full) pattern suffices, which is exactly what
``pyaiml.torch.scaled_dot_product_attention`` takes.

What the attention function does with its arguments (as transformers' "sdpa" does):
query (B, H, Lq, D), key/value (B, Hk, Lk, D) -> output (B, Lq, H, Dv), weights None;
fewer key/value heads (``module.num_key_value_groups > 1``) run as grouped-query attention
without repeating them; ``is_causal`` (from the call, else ``module.is_causal``) is used only
when there is no mask and more than one query; ``scaling`` is the softmax scale;
``dropout`` is passed as ``dropout_p`` (the models pass 0.0 outside training): attention
dropout with seeds drawn from torch's default generator, so ``torch.manual_seed``
reproduces a training run (see pyaiml.torch.ops); a float mask is cast to the query dtype;
``position_bias`` (T5-style relative bias) is folded into a float mask. float16/bfloat16
models run torch's own SDPA through the bridge's dtype fallback (one warning).
Not supported (ValueError): ``softcap``, a paged cache (continuous batching), non-CPU
tensors (the bridge's error). ``output_attentions=True`` gives None weights with a warning.

Not here: a transformers-specific model class; the attention function is the only code
path transformers changes. Tests: tests/test_torch_transformers.py (logits against
transformers' "sdpa" for GPT-2, BERT and Llama with padding; GPT-2 training with attention
dropout).
"""
from __future__ import annotations

import warnings

import torch

from pyaiml.torch.ops import scaled_dot_product_attention

NAME = "pyaiml"

__all__ = ["NAME", "attention_forward", "register", "registered"]


def attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      is_causal=None, **kwargs):
    """A transformers attention function (the ``AttentionInterface`` signature) on pyaiml's
    attention op. Returns (output (B, Lq, H, Dv), None)."""
    if kwargs.get("softcap") is not None:
        raise ValueError(f"attn_implementation={NAME!r}: softcap is not supported (received softcap="
                         f"{kwargs['softcap']!r}); use 'eager' for models with attention logit soft-capping")
    if kwargs.get("cache") is not None:
        raise ValueError(f"attn_implementation={NAME!r}: a paged cache (continuous batching) is not supported. "
                         f"Received cache of type {type(kwargs['cache']).__name__}")
    if kwargs.get("output_attentions", False):
        warnings.warn(f"attn_implementation={NAME!r} does not return attention weights (output_attentions=True "
                      f"gives None); use 'eager' to get them", UserWarning, stacklevel=2)
    q_len = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(q_len > 1 and attention_mask is None and causal)
    if causal and key.shape[2] > q_len:
        # Top-left aligned causal: keys past the last query are never visible (prefill into
        # an empty static cache); dropping them changes nothing but the work.
        key, value = key[:, :, :q_len], value[:, :, :q_len]
    mask = attention_mask
    if mask is not None and mask.dtype != torch.bool and mask.dtype != query.dtype:
        mask = mask.to(query.dtype)
    bias = kwargs.get("position_bias")
    if bias is not None:
        bias = bias.to(query.dtype)
        if mask is None:
            if causal:
                lq, lk = q_len, key.shape[2]
                tri = torch.ones(lq, lk, dtype=torch.bool, device=query.device).tril()
                bias = bias.masked_fill(~tri, float("-inf"))
                causal = False
            mask = bias
        elif mask.dtype == torch.bool:
            mask = bias.masked_fill(~mask, float("-inf"))
        else:
            mask = bias + mask
    gqa = key.shape[1] != query.shape[1]
    out = scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=float(dropout),
                                       is_causal=causal, scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


def register(name: str = NAME) -> str:
    """Register pyaiml's attention and its mask function under ``name`` in transformers'
    ``AttentionInterface`` and ``AttentionMaskInterface`` (process-wide, idempotent).
    Returns the name to pass as ``attn_implementation``."""
    if not isinstance(name, str) or not name or name in ("eager", "sdpa", "flex_attention") \
            or name.startswith(("flash_attention", "paged|")):
        raise ValueError(f"register: name must be a new non-empty string (not one of transformers' own "
                         f"implementations). Received {name!r}")
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError as e:
        raise ImportError(f"pyaiml.torch.integrations.transformers needs transformers >= 5 ({e}); install it "
                          f"with `pip install transformers`") from e
    AttentionInterface.register(name, attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)
    return name


def registered(name: str = NAME) -> bool:
    """True when ``name`` is registered with pyaiml's attention and mask functions."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    return (AttentionInterface._global_mapping.get(name) is attention_forward
            and AttentionMaskInterface._global_mapping.get(name) is sdpa_mask)
