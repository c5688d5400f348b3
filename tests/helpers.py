"""Small shared builders of the tests: a tiny random Llama and random features (no tokenizer), an engine
on them, what a run logged, sampling prompts, LoRA and model-folder checks, recipe and data files."""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from posttrain.models.attention import SEGMENT_ATTENTION

VOCAB = 97
ROOT = Path(__file__).resolve().parents[1]  # the checkout: `python -m posttrain` and torchrun run from here


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


# ---------------------------------------------------------------- the engine on the tiny random Llama

def settings(**kw):
    """TrainSettings for the engine tests: AdamW at 1e-2, micro-batch 2, 6 steps, cosine with 2 warmup
    steps, no clipping; `kw` overrides."""
    from posttrain.config import TrainSettings
    base = dict(optimizer="adamw", lr=1e-2, micro_batch_size=2, grad_accum=1, max_steps=6, warmup_steps=2,
                schedule="cosine", max_grad_norm=None)
    base.update(kw)
    return TrainSettings(**base)


def engine(tmp_path, cfg, *, seed=0, model=None, data=None, objective=None, name="run"):
    """An Engine training `model` (a fresh tiny_llama()) with `objective` (token-mean SFT) on `data` (24
    random features) into tmp_path/name."""
    from posttrain.engine import Engine
    from posttrain.methods.sft import SFTObjective
    return Engine(model if model is not None else tiny_llama(), objective or SFTObjective("token"),
                  data if data is not None else random_features(24),
                  pad, cfg, run_dir=tmp_path / name, seed=seed, show_progress=False)


# ---------------------------------------------------------------- runs

TIMING = ("tokens_per_s", "step_time", "elapsed")  # what differs between two runs of the same steps


def logged(run) -> list[dict]:
    """What a run logged at each step but the timings; `run` is a run folder or a recipe (its run_dir)."""
    from posttrain.runner import read_history
    run_dir = getattr(run, "run_dir", run)
    return [{k: v for k, v in h.items() if k not in TIMING} for h in read_history(run_dir)]


class Killed(Exception):
    """Raised by a test's stand-in to kill a run at a chosen point."""


# ---------------------------------------------------------------- sampling

QUESTIONS = ["Hello there", "What is 2+2?", "Name a colour.",
             "Tell me a long story about a dragon and a cat.",
             "Hi", "Why is the sky blue?"]


def prompts(tok, qs=QUESTIONS):
    """The questions as one-turn chat prompts, token ids."""
    from posttrain.data.template import encode_prompt
    return [encode_prompt(tok, [{"role": "user", "content": q}]) for q in qs]


# ---------------------------------------------------------------- models

# the embedded model's default system prompt, which the tiny models' tokenizer (the same) also carries
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def perturb_lora_b(model, seed=0):
    """LoRA B starts at zero (adapter == identity); give it weight so the adapter changes outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def no_temp_folders(folder: Path) -> bool:
    """No half-built (temporary) folder or file is left anywhere under `folder`."""
    from posttrain.files import TMP_MARK
    return not [p for p in folder.rglob("*") if TMP_MARK in p.name]


# ---------------------------------------------------------------- recipes and data files

CLI_RECIPE = """
name: cli-run
method: {{name: sft}}
model: {{name: tiny-llama}}
data:
  train: {train}
  max_length: 96
train: {{lr: 1.0e-3, micro_batch_size: 2, max_steps: 2}}
"""


def write_recipe(tmp_path, train="{synthetic: {task: arithmetic, n: 4}}"):
    """tmp_path/r.yaml: two SFT steps of the tiny model on `train` (the CLI tests' recipe)."""
    p = tmp_path / "r.yaml"
    p.write_text(CLI_RECIPE.format(train=train))
    return p


THINGS = ["apples", "rivers", "music", "trains", "winter", "books", "cats", "the sea", "maths", "bread",
          "summer", "gardens", "chess", "rain", "coffee", "mountains", "birds", "films", "snow", "tea"]


def write_pairs(path, things, *, identical=False, empty=False):
    """A preference file, one pair a thing: "I really like {t}." over "I hate {t}, sadly." (or an identical
    or empty rejected response)."""
    rows = []
    for t in things:
        rows.append({"prompt": f"Tell me how you feel about {t}.", "chosen": f"I really like {t}.",
                     "rejected": f"I really like {t}." if identical else ("" if empty
                                                                          else f"I hate {t}, sadly.")})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
