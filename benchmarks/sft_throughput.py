"""SFT training throughput (supervised tokens in, tokens/s) and peak memory: TRL's SFTTrainer vs posttrain,
same model, chats, batch, lengths and threads, in one run. Usage:

    python benchmarks/sft_throughput.py [--steps 5] [--batch 8] [--threads 2] [--configs lora,full]

Both train the embedded SmolLM2-135M-Instruct in float32 (no gradient checkpointing, AdamW, constant lr,
clip 1.0) on built-in word-problem chats (user question, assistant solution), loss on the assistant reply
only: TRL gets prompt/completion records (its completion-only loss), posttrain the same chats. Both see
the same rows in the same order (posttrain's engine order; TRL's sampler sequential). Every (config,
library) runs in its own process; they alternate who runs first. Throughput: timed steps 2..N+1 (end of
step 1 to end of step N+1), tokens = real (non-padding) tokens the model processed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import machine, minor_faults, peak_rss_mb, spawn, step_summary  # noqa: E402

MODEL = "smollm2-135m-instruct"
LORA = dict(r=16, alpha=32, targets="all-linear")
LR = 1e-5


def _rows(n: int, seed: int) -> list[dict]:
    from posttrain.data.synthetic import generate, to_sft_rows
    return to_sft_rows(generate("word_problems", n, seed=seed))


def _order(n: int, batch: int, steps: int, seed: int) -> list[int]:
    from posttrain.engine import step_indices
    return [i for s in range(steps) for i in step_indices(n, batch, s, seed)]


def run_posttrain(config: str, a) -> dict:
    from posttrain.config import TrainSettings
    from posttrain.data.collate import pad_collate
    from posttrain.data.template import encode_conversation
    from posttrain.engine import Engine
    from posttrain.methods.sft import SFTObjective
    from posttrain.models import apply_lora, load_model

    model, tok = load_model(MODEL)
    if config == "lora":
        model = apply_lora(model, **LORA)
    n = a.batch * (a.steps + 1)
    feats = [encode_conversation(tok, r["messages"], max_length=a.max_length) for r in _rows(n, a.seed)]
    cfg = TrainSettings(lr=LR, micro_batch_size=a.batch, max_steps=a.steps + 1, warmup_steps=0,
                        schedule="constant", max_grad_norm=1.0)
    eng = Engine(model, SFTObjective(), feats, lambda b: pad_collate(b, tok.pad_token_id), cfg,
                 run_dir=f"{a.tmp}/posttrain-{config}", seed=a.seed, show_progress=False)
    eng.train_step(eng.micro_batches(0))  # warm-up step, not timed
    ends, faults, tokens = [time.perf_counter()], [minor_faults()], 0
    for s in range(1, a.steps + 1):
        tokens += eng.train_step(eng.micro_batches(s))["tokens"]
        ends.append(time.perf_counter())
        faults.append(minor_faults())
    return step_summary(ends, faults, a.batch * a.steps, tokens)


def run_trl(config: str, a) -> dict:
    import datasets
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from posttrain.models import load_model

    datasets.disable_progress_bars()
    model, tok = load_model(MODEL)
    n = a.batch * (a.steps + 1)
    rows = _rows(n, a.seed)
    data = datasets.Dataset.from_list([{"prompt": rows[i]["messages"][:1], "completion": rows[i]["messages"][1:]}
                                       for i in _order(n, a.batch, a.steps + 1, a.seed)])
    peft_config = None
    if config == "lora":
        peft_config = LoraConfig(task_type="CAUSAL_LM", r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0,
                                 target_modules=LORA["targets"])
    args = SFTConfig(
        output_dir=f"{a.tmp}/trl-{config}", per_device_train_batch_size=a.batch, gradient_accumulation_steps=1,
        max_steps=a.steps + 1, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, max_length=a.max_length, packing=False, completion_only_loss=True,
        bf16=False, gradient_checkpointing=False, train_sampling_strategy="sequential", seed=a.seed, use_cpu=True,
        dataloader_num_workers=0, dataloader_pin_memory=False, report_to="none", logging_strategy="no",
        save_strategy="no", eval_strategy="no", disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft_config)
    ends, faults = [], []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter())
            faults.append(minor_faults())

    trainer.add_callback(StepTimes())
    trainer.train()
    assert len(ends) == a.steps + 1, ends
    coll, ds = trainer.data_collator, trainer.train_dataset
    tokens = sum(int(coll([dict(ds[i]) for i in range(s * a.batch, (s + 1) * a.batch)])["attention_mask"].sum())
                 for s in range(1, a.steps + 1))
    return step_summary(ends, faults, a.batch * a.steps, tokens)


def worker(a) -> None:
    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    out = {"impl": a.impl, "config": a.config, **(run_trl if a.impl == "trl" else run_posttrain)(a.config, a)}
    out["peak_rss_mb"] = round(peak_rss_mb())
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps (one more, untimed, runs first)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--configs", default="lora,full")
    ap.add_argument("--impls", default="trl,posttrain")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment of the worker processes; repeatable")
    ap.add_argument("--tmp", default="runs/bench-sft")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=("trl", "posttrain"), help=argparse.SUPPRESS)
    ap.add_argument("--config", choices=("lora", "full"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    start = time.perf_counter()
    print(json.dumps({"meta": {"model": MODEL, "batch": a.batch, "timed_steps": a.steps, "max_length": a.max_length,
                               "threads": a.threads, "env": a.env, "machine": machine(),
                               "date": time.strftime("%Y-%m-%d %H:%M")}}), flush=True)
    rows = []
    for k, config in enumerate(a.configs.split(",")):
        order = ("trl", "posttrain") if k % 2 == 0 else ("posttrain", "trl")
        r = {}
        for impl in [i for i in order if i in a.impls.split(",")]:
            r[impl] = spawn(__file__, ["--impl", impl, "--config", config, "--steps", str(a.steps), "--batch",
                                       str(a.batch), "--max-length", str(a.max_length), "--threads", str(a.threads),
                                       "--seed", str(a.seed), "--tmp", a.tmp], a.threads, a.env)
            print(json.dumps({"impl": impl, "config": config, **r[impl]}), flush=True)
        if all(i in r and "error" not in r[i] for i in ("trl", "posttrain")):
            t, p = r["trl"], r["posttrain"]
            rows.append(f"| {config} | {t['tokens_per_s']} | {p['tokens_per_s']} | "
                        f"{p['tokens_per_s'] / t['tokens_per_s']:.2f} | {t['peak_rss_mb']} | {p['peak_rss_mb']} | "
                        f"{p['peak_rss_mb'] / t['peak_rss_mb']:.2f} |")
    if rows:
        print("\n| config | TRL tokens/s | posttrain tokens/s | ratio (pt/TRL) | TRL peak RSS MB | "
              "posttrain peak RSS MB | RSS ratio |\n|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows))
    print(f"\ntotal wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
