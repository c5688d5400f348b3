"""Attention per example on packed rows (posttrain/models/attention.py) in the tiny model: equal to
padded rows and to transformers' own block-diagonal mask, taken only where it is exact, and the default
of SFT."""
import pytest
import torch

import posttrain.models  # noqa: F401  (installs the attention)
from posttrain.data import PackingCollator, model_inputs, pad_collate
from posttrain.methods.sft import SFTObjective, sft_collate
from posttrain.models import apply_lora, frozen_copy, load_model, reference_model
from posttrain.models.attention import SEGMENT_ATTENTION, stats, supports_pair_rows, supports_segments
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
