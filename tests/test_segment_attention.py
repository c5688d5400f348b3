"""Attention per example on packed rows (posttrain/models/attention.py): equal to padded rows and to
transformers' own block-diagonal mask, taken only where it is exact, and the default of SFT."""
import types

import pytest
import torch
import torch.nn.functional as F

import posttrain.models  # noqa: F401  (installs the attention)
from posttrain.data import PackingCollator, model_inputs, pad_collate
from posttrain.methods.sft import SFTObjective, sft_collate
from posttrain.models import apply_lora, frozen_copy, load_model, reference_model
from posttrain.models.attention import (
    SEGMENT_ATTENTION,
    segment_attention,
    stats,
    supports_pair_rows,
    supports_segments,
)
from tests.helpers import random_features, tiny_llama


def _grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss, _ = SFTObjective()(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _assert_close(a, b):
    (la, ga), (lb, gb) = a, b
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)
    assert ga.keys() == gb.keys() and ga
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], atol=2e-6, rtol=1e-4, msg=n)


@pytest.mark.parametrize("variant", ["full", "lora", "checkpointing"])
def test_padding_free_sft_equals_padded(variant):
    model = tiny_llama(seed=1)
    if variant == "lora":
        model = apply_lora(model, r=4, alpha=8)
    if variant == "checkpointing":
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    feats = random_features(6, seed=3, min_len=5, max_len=30)
    padded = _grads(model, pad_collate(feats, 0))
    before = stats["segmented"]
    free_batch = PackingCollator(None, 0)(feats)
    assert free_batch["input_ids"].shape == (1, sum(len(f["input_ids"]) for f in feats))
    free = _grads(model, free_batch)
    layers = model.config.num_hidden_layers
    runs = 2 if variant == "checkpointing" else 1  # the recomputation in backward takes the same path
    assert stats["segmented"] - before == layers * runs
    _assert_close(free, padded)


def test_segments_equal_transformers_mask_path():
    """The same packed rows (with padding segments) through the per-example kernel and through the
    block-diagonal mask transformers builds from position ids when no boundaries are given."""
    model = tiny_llama(seed=2).eval()
    batch = PackingCollator(48, 0)(random_features(7, seed=5, min_len=4, max_len=20))
    assert batch["input_ids"].shape[0] > 1
    keys = ("input_ids", "position_ids")
    with torch.no_grad():
        before = stats["segmented"]
        seg = model(**{k: batch[k] for k in keys}, cu_seq_lens_q=batch["cu_seq_lens_q"],
                    use_cache=False).logits
        assert stats["segmented"] > before
        before = stats["segmented"]
        masked = model(**{k: batch[k] for k in keys}, use_cache=False).logits
        assert stats["segmented"] == before
    torch.testing.assert_close(seg, masked, atol=1e-5, rtol=1e-5)


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


def test_sft_collate_choice():
    model = tiny_llama()
    assert supports_segments(model)
    assert sft_collate(0, model).max_length is None  # the default: padding-free
    assert sft_collate(0, model, packing_length=64).max_length == 64
    assert not isinstance(sft_collate(0, model, padding_free=False), PackingCollator)
    assert not isinstance(sft_collate(0, model, per_sequence=True), PackingCollator)
    # no boundaries there: a packed row would attend to the whole row
    model.config._attn_implementation = "eager"
    assert not supports_segments(model)
    assert not isinstance(sft_collate(0, model), PackingCollator)
    model.config._attn_implementation = "sdpa"
    model.config.layer_types = ["full_attention", "sliding_attention"]
    assert not supports_segments(model)


def test_transformers_sdpa_stays_its_own():
    """posttrain registers its attention under its own name; transformers' "sdpa" is left alone."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward
    assert ALL_MASK_ATTENTION_FUNCTIONS["sdpa"] is sdpa_mask
    assert ALL_ATTENTION_FUNCTIONS[SEGMENT_ATTENTION] is segment_attention
    assert ALL_MASK_ATTENTION_FUNCTIONS[SEGMENT_ATTENTION] is sdpa_mask  # the same masks as "sdpa"


def _segmented_calls(model, batch) -> int:
    before = stats["segmented"]
    with torch.no_grad():
        model(**model_inputs(batch))
    return stats["segmented"] - before


def test_models_posttrain_loads_use_the_segment_attention(tmp_path):
    model, _ = load_model("tiny-llama")
    assert model.config._attn_implementation == SEGMENT_ATTENTION
    assert supports_segments(model) and supports_pair_rows(model)
    batch = PackingCollator(None, 0)(random_features(4, seed=1))
    layers = model.config.num_hidden_layers
    assert _segmented_calls(model.eval(), batch) == layers
    assert _segmented_calls(frozen_copy(model), batch) == layers
    lora = apply_lora(model, r=4, alpha=8)
    assert _segmented_calls(lora, batch) == layers
    with reference_model(lora) as ref:
        assert _segmented_calls(ref, batch) == layers
    # the choice is not saved: the folder loads with plain transformers, without posttrain's registry
    model.save_pretrained(tmp_path)
    assert SEGMENT_ATTENTION not in (tmp_path / "config.json").read_text()


def test_a_plain_sdpa_model_takes_the_mask_path():
    """A model loaded elsewhere with transformers' "sdpa": packed rows are correct through the mask, and
    posttrain does not offer it the per-example paths (padding-free SFT rows, padding-free pairs)."""
    model = tiny_llama(seed=2).eval()
    plain = tiny_llama(seed=2).eval()
    plain.config._attn_implementation = "sdpa"
    assert not supports_segments(plain) and not supports_pair_rows(plain)
    assert not isinstance(sft_collate(0, plain), PackingCollator)
    batch = PackingCollator(48, 0)(random_features(7, seed=5, min_len=4, max_len=20))
    with torch.no_grad():
        before = stats["segmented"]
        masked = plain(**model_inputs(batch)).logits
        assert stats["segmented"] == before
        seg = model(**model_inputs(batch)).logits
        assert stats["segmented"] > before
    torch.testing.assert_close(masked, seg, atol=1e-5, rtol=1e-5)
