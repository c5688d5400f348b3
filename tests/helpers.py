"""Small shared builders for tests that need no tokenizer: a tiny random Llama and random features."""
from __future__ import annotations

import random

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from posttrain.models.attention import SEGMENT_ATTENTION

VOCAB = 97


def tiny_llama(seed: int = 0, vocab: int = VOCAB) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, vocab_size=vocab, max_position_embeddings=256,
                      tie_word_embeddings=True, pad_token_id=0,
                      attn_implementation=SEGMENT_ATTENTION)  # the attention posttrain's loaders choose
    return LlamaForCausalLM(cfg)


def random_features(n: int, seed: int = 0, min_len: int = 6, max_len: int = 20,
                    vocab: int = VOCAB) -> list[dict]:
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
    from posttrain.methods import get_method
    from posttrain.models.start import load_policy
    from posttrain.runner import make_engine
    from posttrain.seeding import seed_everything
    spec = get_method(recipe.method_name)
    seed_everything(recipe.seed)
    lm, tok = load_policy(recipe)
    built = spec.build(recipe, validate_section(spec.params, recipe.method, "method"), lm, tok)
    return make_engine(recipe, built, lm, tok, show_progress=False)


def assert_same_samples(got, want, atol: float = 1e-5) -> None:
    """Two sets of samples hold the same records: every field equal but the log-probs, which agree to
    `atol`. Each side is a JSONL path, a list of rows or a {prompt_id: rows} dict. Log-probs come from
    batches whose composition differs between a sharded or resumed run and one pass (float32 GEMMs round
    differently for other row counts, ~1e-6)."""
    import json
    from pathlib import Path

    import pytest

    def rows(x):
        if isinstance(x, Path):
            return [json.loads(line) for line in x.read_text().splitlines()]
        if isinstance(x, dict):
            return [r for k in sorted(x) for r in x[k]]
        return list(x)
    if isinstance(got, dict) and isinstance(want, dict):
        assert sorted(got) == sorted(want)
    a_rows, b_rows = rows(got), rows(want)
    assert len(a_rows) == len(b_rows)
    for a, b in zip(a_rows, b_rows):
        assert {**a, "logprobs": None} == {**b, "logprobs": None}
        assert (a["logprobs"] is None) == (b["logprobs"] is None)
        if a["logprobs"] is not None:
            assert a["logprobs"] == pytest.approx(b["logprobs"], abs=atol)
