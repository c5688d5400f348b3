"""SFT training throughput (tokens/s) of the embedded model, LoRA and full fine-tune, on built-in
arithmetic chats. Usage: python benchmarks/sft_throughput.py [--steps 6] [--batch 8]"""
from __future__ import annotations

import argparse
import json
import time

import torch

from posttrain.config import TrainSettings
from posttrain.data.collate import pad_collate
from posttrain.data.synthetic import generate, to_sft_rows
from posttrain.data.template import encode_conversation
from posttrain.engine import Engine
from posttrain.methods.sft import SFTObjective
from posttrain.models import apply_lora, load_model


def measure(mode: str, steps: int, batch: int, tmp: str) -> dict:
    t0 = time.time()
    model, tok = load_model("smollm2-135m-instruct")
    load_s = time.time() - t0
    if mode == "lora":
        model = apply_lora(model, r=16, alpha=32, targets="all-linear")
    rows = to_sft_rows(generate("word_problems", batch * (steps + 1), seed=0))
    feats = [encode_conversation(tok, r["messages"], max_length=512) for r in rows]
    cfg = TrainSettings(lr=1e-4, micro_batch_size=batch, max_steps=steps + 1, warmup_steps=0)
    eng = Engine(model, SFTObjective(), feats, lambda b: pad_collate(b, tok.pad_token_id), cfg,
                 run_dir=f"{tmp}/{mode}", show_progress=False)
    eng.train_step(eng.micro_batches(0))  # warm-up step, not timed
    tokens, t = 0, time.time()
    for s in range(1, steps + 1):
        tokens += eng.train_step(eng.micro_batches(s))["tokens"]
    dt = time.time() - t
    return {"mode": mode, "load_s": round(load_s, 2), "tokens_per_s": round(tokens / dt, 1),
            "s_per_step": round(dt / steps, 2), "tokens_per_step": tokens // steps, "batch": batch}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tmp", default="runs/bench")
    a = ap.parse_args()
    torch.manual_seed(0)
    for mode in ("lora", "full"):
        print(json.dumps(measure(mode, a.steps, a.batch, a.tmp)))
