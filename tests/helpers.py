"""Small shared builders for tests that need no tokenizer: a tiny random Llama and random features."""
from __future__ import annotations

import random

import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 97


def tiny_llama(seed: int = 0, vocab: int = VOCAB) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, vocab_size=vocab, max_position_embeddings=256,
                      tie_word_embeddings=True, pad_token_id=0)
    return LlamaForCausalLM(cfg)


def random_features(n: int, seed: int = 0, min_len: int = 6, max_len: int = 20, vocab: int = VOCAB) -> list[dict]:
    """Examples with a prompt part (label -100) and a response part (labels = ids), varied lengths."""
    rng = random.Random(seed)
    feats = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        ids = [rng.randint(1, vocab - 1) for _ in range(length)]
        prompt = rng.randint(1, length - 2)
        feats.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return feats


def pad(feats: list[dict], pad_id: int = 0) -> dict:
    width = max(len(f["input_ids"]) for f in feats)
    ids = torch.full((len(feats), width), pad_id)
    labels = torch.full((len(feats), width), -100)
    attn = torch.zeros((len(feats), width), dtype=torch.long)
    for i, f in enumerate(feats):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        labels[i, :n] = torch.tensor(f["labels"])
        attn[i, :n] = 1
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def engine_for(recipe):
    """The engine `posttrain train` would build for a one-iteration recipe (its method's build), without
    running it: tests drive `train(stop_after=...)` to interrupt and resume."""
    from posttrain.config import validate_section
    from posttrain.engine import seed_everything
    from posttrain.methods import get_method
    from posttrain.runner import load_policy, make_engine
    spec = get_method(recipe.method_name)
    seed_everything(recipe.seed)
    lm, tok = load_policy(recipe)
    built = spec.build(recipe, validate_section(spec.params, recipe.method, "method"), lm, tok)
    return make_engine(recipe, built, lm, tok, show_progress=False)
