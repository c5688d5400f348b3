"""Attention over packed rows, one example at a time.

A packed row (several examples end to end, ``position_ids`` restarting per example; see
posttrain/data/collate.py) is correct under transformers' own sdpa: it builds a block-diagonal mask
from the position ids. But that mask makes the kernel compute every (query, key) pair of the whole row
and throw most away: a row of 8 examples of ~130 tokens costs ~5x the attention of 8 padded rows. With
the example boundaries at hand (``cu_seq_lens_q``, the keyword flash-attention's varlen kernels read) the
causal attention of each example is computed on its own, with no mask and no padding.

:func:`install` puts :func:`segment_attention` in transformers' registry under "sdpa". Without
``cu_seq_lens_q`` it IS transformers' sdpa (the call is handed over unchanged); with it, each example
gets its own causal SDPA call. The mask transformers still builds is not read then. Layers where the
boundaries are not the whole story (a sliding window, softcapping) are handed over too, and get the
mask path, which is correct for them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# how many attention calls ran per example (tests check the path was taken, not the mask fallback)
stats = {"segmented": 0}

_SDPA = None  # transformers' own sdpa_attention_forward, captured by install()

# flash-attention kernels take the same keywords natively
VARLEN_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "flash_attention_3")


def segment_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      cu_seq_lens_q=None, cu_seq_lens_k=None, **kwargs):
    """query [B, H, T, d], key/value [B, Hkv, T, d]; returns ([B, T, H, d], None) like transformers'
    attention functions. ``cu_seq_lens_q``: example boundaries over the B*T flattened positions."""
    if cu_seq_lens_q is None or not _segmentable(module, query, key, cu_seq_lens_q, cu_seq_lens_k, kwargs):
        return _SDPA(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                     cu_seq_lens_q=cu_seq_lens_q, cu_seq_lens_k=cu_seq_lens_k, **kwargs)
    b, h, t, d = query.shape
    hkv = key.shape[1]
    lens = torch.diff(cu_seq_lens_q).tolist()
    # [B, H, T, d] -> [B*T, H, d] is a view: the projections were [B, T, H, d] before the transpose
    qs = query.transpose(1, 2).reshape(b * t, h, d).split(lens)
    ks = key.transpose(1, 2).reshape(b * t, hkv, d).split(lens)
    vs = value.transpose(1, 2).reshape(b * t, hkv, d).split(lens)
    outs = [F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                           dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=h != hkv)
            [0].transpose(0, 1) for q, k, v in zip(qs, ks, vs)]
    stats["segmented"] += 1
    return torch.cat(outs).reshape(b, t, h, d), None


def _segmentable(module, query, key, cu_q, cu_k, kwargs) -> bool:
    if getattr(module, "sliding_window", None) is not None or kwargs.get("softcap") is not None:
        return False
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        return False
    if not getattr(module, "is_causal", True) or query.shape[2] != key.shape[2]:
        return False  # encoder attention, or a KV cache: not a packed training row
    if cu_k is not None and not torch.equal(cu_k, cu_q):
        return False
    return int(cu_q[-1]) == query.shape[0] * query.shape[2]


def install() -> None:
    """Register :func:`segment_attention` as transformers' "sdpa" (once per process)."""
    global _SDPA
    if _SDPA is not None:
        return
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    _SDPA = sdpa_attention_forward
    AttentionInterface.register("sdpa", segment_attention)


def supports_segments(model) -> bool:
    """Whether packed rows with ``cu_seq_lens_q`` run per example on this model (else they take the
    block-diagonal mask: correct, with attention over the whole row)."""
    from posttrain.models.lora import unwrap

    config = getattr(unwrap(model), "config", None)
    if getattr(config, "_attn_implementation", None) not in VARLEN_IMPLEMENTATIONS:
        return False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None)
    if layer_types is not None:
        return all(t == "full_attention" for t in layer_types)
    return getattr(text, "sliding_window", None) is None
