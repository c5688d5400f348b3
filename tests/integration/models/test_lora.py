"""LoRA on the tiny model (posttrain/models/lora.py): only the adapter trains, its targets, the reference
is the base, frozen copies, and merge-and-save."""
from __future__ import annotations

import pytest
import torch

from posttrain.errors import ModelError
from posttrain.models import (
    apply_lora,
    frozen_copy,
    is_lora,
    load_model,
    merge_and_save,
    reference_model,
    trainable_parameters,
)
from tests.helpers import no_temp_folders, perturb_lora_b


def batch(tok, texts=("Hello there, how are you?", "2 + 2 = 4")):
    tok.padding_side = "left"
    return tok(list(texts), return_tensors="pt", padding=True)


def logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


# ---------------------------------------------------------------- LoRA

def test_lora_only_adapter_trainable(tiny):
    model, _ = tiny
    total_before = trainable_parameters(model)[1]
    model = apply_lora(model, r=4, seed=0)
    assert is_lora(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    n_train, n_total = trainable_parameters(model)
    # q,k,v,o in 2 layers, r=4: A is r x in, B is out x r
    cfg = model.config
    kv = cfg.num_key_value_heads * cfg.head_dim
    per_layer = sum(4 * (cfg.hidden_size + out) for out in (cfg.hidden_size, kv, kv, cfg.hidden_size))
    assert n_train == cfg.num_hidden_layers * per_layer
    assert n_total == total_before + n_train


def test_lora_targets(tiny):
    model, _ = tiny
    wrapped = apply_lora(model, targets="all-linear")
    names = {n for n, _ in wrapped.named_parameters() if "lora_A" in n}
    assert any("mlp.down_proj" in n for n in names) and not any("lm_head" in n for n in names)
    with pytest.raises(ModelError):
        apply_lora(wrapped)  # already adapted
    fresh, _ = load_model("tiny-llama")
    with pytest.raises(ModelError, match="targets"):
        apply_lora(fresh, targets=("no_such_proj",))


def test_unmatched_lora_targets_list_the_linear_layers(tiny):
    model, _ = tiny
    with pytest.raises(ModelError) as e:
        apply_lora(model, targets=("q_proj", "qkv_proj"))  # one real, one not: refused before peft
    msg = str(e.value)
    assert "model.lora.targets: 'qkv_proj' matches no module" in msg and "'q_proj'" not in msg
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert name in msg
    assert not is_lora(model) and not any("lora_" in n for n, _ in model.named_modules())
    assert is_lora(apply_lora(model, targets=("model.layers.0.self_attn.q_proj", "v_proj")))


def test_reference_model_is_the_base(tiny):
    model, tok = tiny
    inputs = batch(tok)
    base = logits(model, inputs)
    model = apply_lora(model, seed=0)
    assert torch.equal(logits(model, inputs), base)  # B = 0: adapter starts as identity
    perturb_lora_b(model)
    adapted = logits(model, inputs)
    assert not torch.allclose(adapted, base, atol=1e-4)
    with reference_model(model) as ref:
        torch.testing.assert_close(logits(ref, inputs), base, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits(model, inputs), adapted, rtol=0, atol=0)  # adapter back on


def test_reference_model_needs_lora(tiny):
    model, _ = tiny
    with pytest.raises(ModelError, match="frozen_copy"):
        with reference_model(model):
            pass


def test_training_lora_leaves_base_unchanged(tiny):
    model, tok = tiny
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    model = apply_lora(model, seed=0)
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    inputs = batch(tok)
    for _ in range(3):
        loss = model(**inputs, labels=inputs["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    base_now = model.get_base_model().state_dict()
    base_now = {k.replace(".base_layer", ""): v for k, v in base_now.items() if "lora_" not in k}
    assert base_now.keys() == base_state.keys()
    assert all(torch.equal(base_now[k], base_state[k]) for k in base_state)
    assert any(not torch.equal(p, lora_before[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_frozen_copy(tiny):
    model, tok = tiny
    ref = frozen_copy(model)
    assert not ref.training and not any(p.requires_grad for p in ref.parameters())
    inputs = batch(tok)
    before = logits(ref, inputs)
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1.0)
    assert torch.equal(logits(ref, inputs), before)  # independent of the trained model


def test_merge_and_save_loads_as_plain_model(tiny, tmp_path):
    model, tok = tiny
    model = apply_lora(model, seed=0)
    perturb_lora_b(model)
    inputs = batch(tok)
    adapted = logits(model, inputs)
    out = tmp_path / "merged"
    merge_and_save(model, tok, out)
    assert is_lora(model)  # the training model is not merged
    assert torch.equal(logits(model, inputs), adapted)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists() and no_temp_folders(tmp_path)
    merged, merged_tok = load_model(str(out))
    assert not is_lora(merged) and merged_tok.pad_token_id == tok.pad_token_id
    torch.testing.assert_close(logits(merged, inputs), adapted, rtol=0, atol=1e-5)
    merge_and_save(model, tok, out)  # overwriting an existing folder works too
    assert no_temp_folders(tmp_path)
