"""Tiny models from the registry: deterministic from their seed, their shapes, the dtype choice."""
from __future__ import annotations

import pytest
import torch

from posttrain.errors import ModelError
from posttrain.models import load_model


def test_tiny_models_are_deterministic_from_seed(tokenizer_folder):
    before = torch.random.get_rng_state()
    a, _ = load_model("tiny-llama", seed=0)
    assert torch.equal(torch.random.get_rng_state(), before), "building a model must not move the global RNG"
    b, _ = load_model("tiny-llama", seed=0)
    c, _ = load_model("tiny-llama", seed=1)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pc[k]) for k in pa)


def test_tiny_models_shape(tokenizer_folder):
    small, tok = load_model("tiny-llama")
    big, _ = load_model("tiny-llama-4l")
    assert (small.config.hidden_size, small.config.num_hidden_layers) == (64, 2)
    assert (big.config.hidden_size, big.config.num_hidden_layers) == (128, 4)
    assert small.config.vocab_size == len(tok) == 49152
    assert small.lm_head.weight is small.model.embed_tokens.weight  # tied
    assert small.training  # documented: models come back in train mode


def test_dtype_choice(tokenizer_folder):
    model, _ = load_model("tiny-llama", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(ModelError, match="float32"):
        load_model("tiny-llama", dtype="float64")
