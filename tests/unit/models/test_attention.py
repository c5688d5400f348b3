"""Attention per example on packed rows (posttrain/models/attention.py) on bare tensors: GQA segments
against an independent causal attention, the layers it cannot serve handed to sdpa or refused, and
transformers' own sdpa left alone."""
import types

import pytest
import torch
import torch.nn.functional as F

import posttrain.models  # noqa: F401  (installs the attention)
from posttrain.models.attention import SEGMENT_ATTENTION, segment_attention, stats


def test_padding_free_pairs_refuse_layers_they_cannot_serve():
    """No mask fallback exists for pair rows: a sliding-window layer must fail, not attend wrongly."""
    import types
    q = torch.randn(1, 2, 5, 4)
    module = types.SimpleNamespace(training=False, is_causal=True, sliding_window=2)
    with pytest.raises(RuntimeError, match="plain causal"):
        segment_attention(module, q, q, q, None, pair_bounds=torch.tensor([[0, 2, 2, 1]]))
    plain = types.SimpleNamespace(training=False, is_causal=True)
    with pytest.raises(RuntimeError, match="do not tile"):
        segment_attention(plain, q, q, q, None, pair_bounds=torch.tensor([[0, 2, 2, 2]]))


def test_gqa_segments_match_an_independent_causal_attention():
    torch.manual_seed(0)
    lens = [3, 7, 1, 5]
    q, k, v = torch.randn(1, 4, 16, 8), torch.randn(1, 2, 16, 8), torch.randn(1, 2, 16, 8)
    module = types.SimpleNamespace(training=False, is_causal=True, num_key_value_groups=2)
    cu = torch.tensor([0, 3, 10, 11, 16], dtype=torch.int32)
    out, _ = segment_attention(module, q, k, v, None, scaling=0.3, cu_seq_lens_q=cu)
    expected = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        kk, vv = k[0, :, a:b].repeat_interleave(2, 0), v[0, :, a:b].repeat_interleave(2, 0)
        scores = (q[0, :, a:b] @ kk.transpose(-1, -2)) * 0.3
        scores = scores.masked_fill(torch.ones(b - a, b - a, dtype=torch.bool).triu(1), float("-inf"))
        expected.append((scores.softmax(-1) @ vv).transpose(0, 1))
    assert sum(lens) == 16
    torch.testing.assert_close(out[0], torch.cat(expected), atol=1e-6, rtol=1e-5)


def test_layers_it_cannot_serve_are_handed_to_sdpa():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4), torch.randn(1, 2, 6, 4)
    cu = torch.tensor([0, 2, 6], dtype=torch.int32)
    mask = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    mask[..., :2, :2] = mask[..., 2:, 2:] = True
    mask &= torch.ones(6, 6, dtype=torch.bool).tril()
    before = stats["segmented"]
    other_keys = {"cu_seq_lens_k": torch.tensor([0, 3, 6], dtype=torch.int32)}
    for module, kw in [(types.SimpleNamespace(training=False, is_causal=True, sliding_window=2), {}),
                       (types.SimpleNamespace(training=False, is_causal=False), {}),
                       (types.SimpleNamespace(training=False, is_causal=True), other_keys)]:
        out, _ = segment_attention(module, q, k, v, mask, cu_seq_lens_q=cu, **kw)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
        torch.testing.assert_close(out, expected)
    assert stats["segmented"] == before


def test_transformers_sdpa_stays_its_own():
    """posttrain registers its attention under its own name; transformers' "sdpa" is left alone."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward
    assert ALL_MASK_ATTENTION_FUNCTIONS["sdpa"] is sdpa_mask
    assert ALL_ATTENTION_FUNCTIONS[SEGMENT_ATTENTION] is segment_attention
    assert ALL_MASK_ATTENTION_FUNCTIONS[SEGMENT_ATTENTION] is sdpa_mask  # the same masks as "sdpa"
