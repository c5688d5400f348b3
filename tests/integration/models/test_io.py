"""Checkpoint weights (posttrain/models/io.py) of the tiny model: full and LoRA round trips, mismatched
weights refused."""
from __future__ import annotations

import pytest
import torch

from posttrain.errors import ModelError
from posttrain.models import apply_lora, load_model, load_weights_, save_weights
from tests.helpers import perturb_lora_b

# ---------------------------------------------------------------- checkpoint weights

def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_full_weights_round_trip(tokenizer_folder, tmp_path):
    a, _ = load_model("tiny-llama", seed=0)
    save_weights(a, tmp_path / "w")
    b, _ = load_model("tiny-llama", seed=1)
    embed = b.model.embed_tokens.weight
    load_weights_(b, tmp_path / "w")
    assert b.model.embed_tokens.weight is embed  # in place: optimizer references stay valid
    assert b.lm_head.weight is b.model.embed_tokens.weight  # still tied
    pa, pb = params(a), params(b)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


def test_lora_weights_round_trip(tokenizer_folder, tmp_path):
    a = apply_lora(load_model("tiny-llama", seed=0)[0], seed=0)
    perturb_lora_b(a, seed=3)
    save_weights(a, tmp_path / "w")
    assert (tmp_path / "w" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "w" / "model.safetensors").exists()  # adapter only
    b = apply_lora(load_model("tiny-llama", seed=0)[0], seed=1)
    load_weights_(b, tmp_path / "w")
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def test_mismatched_weights_raise(tokenizer_folder, tmp_path):
    small, _ = load_model("tiny-llama")
    big, _ = load_model("tiny-llama-4l")
    save_weights(small, tmp_path / "full")
    lora8 = apply_lora(load_model("tiny-llama")[0], r=8)
    save_weights(lora8, tmp_path / "lora8")
    before = params(big)
    with pytest.raises(ModelError, match="do not match"):
        load_weights_(big, tmp_path / "full")
    assert all(torch.equal(before[k], v) for k, v in params(big).items())  # nothing half-loaded
    with pytest.raises(ModelError, match="LoRA"):
        load_weights_(small, tmp_path / "lora8")
    with pytest.raises(ModelError, match="LoRA"):
        load_weights_(lora8, tmp_path / "full")
    lora4 = apply_lora(load_model("tiny-llama")[0], r=4)
    with pytest.raises(ModelError, match="r=8"):
        load_weights_(lora4, tmp_path / "lora8")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no weights"):
        load_weights_(small, tmp_path / "empty")
