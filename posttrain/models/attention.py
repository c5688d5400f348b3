"""Attention over packed rows, one example at a time.

A packed row (several examples end to end, ``position_ids`` restarting per example; see
posttrain/data/collate.py) is correct under transformers' own sdpa: it builds a block-diagonal mask
from the position ids. But that mask makes the kernel compute every (query, key) pair of the whole row
and throw most away: a row of 8 examples of ~130 tokens costs ~5x the attention of 8 padded rows. With
the example boundaries at hand (``cu_seq_lens_q``, the keyword flash-attention's varlen kernels read) the
causal attention of each example is computed on its own, with no mask and no padding.

:func:`install` registers :func:`segment_attention` in transformers' attention registry under its own
name, :data:`SEGMENT_ATTENTION` (transformers' "sdpa" is left as it is), with sdpa's mask function for
that name, so transformers builds the same masks as for "sdpa". The models posttrain loads choose it
(``attn_implementation=SEGMENT_ATTENTION``, posttrain/models/registry.py); a model loaded elsewhere with
plain "sdpa" runs transformers' own sdpa, which is correct on packed rows through the mask. Without
``cu_seq_lens_q`` :func:`segment_attention` IS transformers' sdpa (the call is handed over unchanged);
with it, each example gets its own causal SDPA call. The mask transformers still builds is not read
then. Layers where the boundaries are not the whole story (a sliding window, softcapping) are handed
over too, and get the mask path, which is correct for them.

Preference pairs in one row (``pair_bounds``, posttrain/data/collate.py::shared_prefix_collate) get two
calls per pair: prompt + chosen causally, and the rejected tokens over the prompt and themselves. There
is no mask path to hand those to (transformers' mask from their position ids would cut the rejected
tokens off the prompt), so layers this cannot serve raise instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# how many attention calls ran per example (tests check the path was taken, not the mask fallback)
stats = {"segmented": 0, "pairs": 0}

_SDPA = None  # transformers' own sdpa_attention_forward, captured by install()

# posttrain's attention in transformers' registry. It contains "sdpa", so transformers checks that a model
# can run SDPA when it is asked for, as it does for "sdpa".
SEGMENT_ATTENTION = "posttrain_segment_sdpa"

# attentions that read the example boundaries; flash-attention kernels take the same keywords natively
VARLEN_IMPLEMENTATIONS = (SEGMENT_ATTENTION, "flash_attention_2", "flash_attention_3")

# attentions that run torch's SDPA and take a custom 4D mask as booleans
SDPA_IMPLEMENTATIONS = ("sdpa", SEGMENT_ATTENTION)


def segment_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      cu_seq_lens_q=None, cu_seq_lens_k=None, pair_bounds=None, **kwargs):
    """query [B, H, T, d], key/value [B, Hkv, T, d]; returns ([B, T, H, d], None) like transformers'
    attention functions. ``cu_seq_lens_q``: example boundaries over the B*T flattened positions;
    ``pair_bounds``: preference pairs laid out prompt + chosen + rejected in one row (below)."""
    if pair_bounds is not None:
        if not _plain_causal(module, query, key, kwargs) or query.shape[0] != 1:
            # transformers' mask for these position ids would let the rejected tokens lose the prompt
            raise RuntimeError("padding-free pair rows need plain causal attention (no sliding window, "
                               "softcap, sinks or KV cache) over a single row")
        return _pair_attention(query, key, value, pair_bounds, dropout, scaling), None
    b, h, t, d = query.shape
    lens = None
    if cu_seq_lens_q is not None and _plain_causal(module, query, key, kwargs):
        # None when the key boundaries differ from the query's (not one packed row)
        lens = _host_list(cu_seq_lens_q, lambda cu: torch.diff(cu).tolist() if cu_seq_lens_k is None
                          or torch.equal(cu_seq_lens_k, cu) else None)
    if lens is None or sum(lens) != b * t:
        return _SDPA(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                     cu_seq_lens_q=cu_seq_lens_q, cu_seq_lens_k=cu_seq_lens_k, **kwargs)
    hkv = key.shape[1]
    # [B, H, T, d] -> [B*T, H, d] is a view: the projections were [B, T, H, d] before the transpose
    qs = query.transpose(1, 2).reshape(b * t, h, d).split(lens)
    ks = key.transpose(1, 2).reshape(b * t, hkv, d).split(lens)
    vs = value.transpose(1, 2).reshape(b * t, hkv, d).split(lens)
    outs = [_block_sdpa(q, k, v, dropout, scaling, is_causal=True) for q, k, v in zip(qs, ks, vs)]
    stats["segmented"] += 1
    return torch.cat(outs).reshape(b, t, h, d), None


_host = [None, None]  # (the bounds tensor of the running forward, its values on the host)


def _host_list(t: torch.Tensor, read):
    """`read(t)` once per forward, not once per layer: every layer gets the same bounds tensor, and on a
    GPU each read is a device-to-host sync. Keyed by identity; the reference held keeps the id unique."""
    if _host[0] is not t:
        _host[0], _host[1] = t, read(t)
    return _host[1]


def _block_sdpa(q, k, v, dropout: float, scaling, **kw):
    """SDPA on one block of positions: q [n, H, d], k/v [m, Hkv, d] -> [n, H, d]."""
    out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k.transpose(0, 1)[None],
                                         v.transpose(0, 1)[None],
                                         dropout_p=dropout, scale=scaling,
                                         enable_gqa=q.shape[1] != k.shape[1], **kw)
    return out[0].transpose(0, 1)


def _pair_blocks(bounds: torch.Tensor) -> tuple[list, list[int]]:
    """(pairs, block lengths P+C, R, P+C, R, ...), checked to follow each other from position 0."""
    pairs = bounds.tolist()
    lens = [n for _, p, c, r in pairs for n in (p + c, r)]
    if any(s != sum(lens[:2 * i]) for i, (s, *_) in enumerate(pairs)):
        raise RuntimeError(f"pair_bounds {pairs} do not follow each other from position 0")
    return pairs, lens


def _pair_attention(query, key, value, bounds: torch.Tensor, dropout: float, scaling):
    """Each pair (start, P, C, R) of ``bounds`` [pairs, 4] is P prompt + C chosen + R rejected tokens of
    the row: prompt and chosen attend causally to prompt + chosen, a rejected token to the prompt and the
    rejected tokens up to itself (never to the chosen ones). Two SDPA calls per pair, no [L, L] mask."""
    _, h, t, d = query.shape
    pairs, lens = _host_list(bounds, _pair_blocks)
    if sum(lens) != t:
        raise RuntimeError(f"pair_bounds {pairs} do not tile the row's {t} positions")
    qs = query[0].transpose(0, 1).split(lens)  # [n, H, d] blocks
    ks, vs = key[0].transpose(0, 1).split(lens), value[0].transpose(0, 1).split(lens)
    outs = []
    for i, (_, p, _, r) in enumerate(pairs):
        q_pc, k_pc, v_pc = qs[2 * i], ks[2 * i], vs[2 * i]
        outs.append(_block_sdpa(q_pc, k_pc, v_pc, dropout, scaling, is_causal=True))
        k_pr, v_pr = torch.cat([k_pc[:p], ks[2 * i + 1]]), torch.cat([v_pc[:p], vs[2 * i + 1]])
        sees = torch.ones(r, p + r, dtype=torch.bool, device=query.device).tril(p)
        outs.append(_block_sdpa(qs[2 * i + 1], k_pr, v_pr, dropout, scaling, attn_mask=sees))
    stats["pairs"] += 1
    return torch.cat(outs).reshape(1, t, h, d)


def _plain_causal(module, query, key, kwargs) -> bool:
    if getattr(module, "sliding_window", None) is not None or kwargs.get("softcap") is not None:
        return False
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        return False
    # encoder attention, or a KV cache: not a packed training row
    return getattr(module, "is_causal", True) and query.shape[2] == key.shape[2]


def install() -> None:
    """Register :func:`segment_attention` in transformers' attention registry as :data:`SEGMENT_ATTENTION`,
    with sdpa's mask function for that name (once per process). Transformers' "sdpa" is not touched."""
    global _SDPA
    if _SDPA is not None:
        return
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    _SDPA = sdpa_attention_forward
    AttentionInterface.register(SEGMENT_ATTENTION, segment_attention)
    # without a mask function for the name transformers builds no mask at all (padding would be attended)
    AttentionMaskInterface.register(SEGMENT_ATTENTION, sdpa_mask)


def _config(model):
    from posttrain.models.lora import unwrap

    return getattr(unwrap(model), "config", None)  # through DDP/FSDP: the wrapper has no config


def supports_pair_rows(model) -> bool:
    """Whether preference pairs can run as one padding-free row (``pair_bounds``): only this module's
    attention (:data:`SEGMENT_ATTENTION`) reads the bounds."""
    return getattr(_config(model), "_attn_implementation",
                   None) == SEGMENT_ATTENTION and supports_segments(model)


def supports_segments(model) -> bool:
    """Whether packed rows with ``cu_seq_lens_q`` run per example on this model (else they take the
    block-diagonal mask: correct, with attention over the whole row)."""
    config = _config(model)
    if getattr(config, "_attn_implementation", None) not in VARLEN_IMPLEMENTATIONS:
        return False
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None)
    if layer_types is not None:
        return all(t == "full_attention" for t in layer_types)
    return getattr(text, "sliding_window", None) is None
