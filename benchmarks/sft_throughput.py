"""SFT training throughput (supervised tokens in, tokens/s) and peak memory: TRL's SFTTrainer vs posttrain,
same model, chats, batch, lengths and threads, in one run. Usage:

    python benchmarks/sft_throughput.py [--steps 5] [--batch 8] [--threads 2] [--configs lora,full]

Both train the embedded SmolLM2-135M-Instruct in float32 (no gradient checkpointing, AdamW, constant lr,
clip 1.0) on built-in word-problem chats (user question, assistant solution), loss on the assistant reply
only: TRL gets prompt/completion records (its completion-only loss), posttrain the same chats (in its
default SFT rows: each micro-batch one padding-free row, attention per example; `--padded` for
right-padded rows like TRL's). Both see
the same rows in the same order (posttrain's engine order; TRL's sampler sequential). Every (config,
library) runs in its own process; they alternate who runs first. Throughput: timed steps 2..N+1 (end of
step 1 to end of step N+1), tokens = real (non-padding) tokens the model processed.

`--ceiling`, `--model`, `--device`, `--precision` and `--lengths PROMPT,COMPLETION` as in
benchmarks/dpo_throughput.py: model FLOPs = (6 full / 4 LoRA) x (non-embedding params x tokens + LM-head
params x supervised positions), MFU against a matmul timed in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (  # noqa: E402
    add_model_args,
    machine,
    measure_ceiling,
    minor_faults,
    model_args,
    param_counts,
    peak_rss_mb,
    spawn,
    step_summary,
    sync,
    train_flops,
)

MODEL = "smollm2-135m-instruct"
LORA = dict(r=16, alpha=32, targets="all-linear")
LR = 1e-5


def _rows(tok, n: int, a) -> list[dict]:
    if a.lengths:
        import numpy as np

        from benchmarks.common import fixed_length_text
        rng = np.random.default_rng(a.seed)
        return [{"messages": [{"role": "user", "content": fixed_length_text(tok, a.lengths[0], rng)},
                              {"role": "assistant", "content": fixed_length_text(tok, a.lengths[1], rng)}]}
                for _ in range(n)]
    from posttrain.tasks.synthetic import generate, to_sft_rows
    return to_sft_rows(generate("word_problems", n, seed=a.seed))


def _flops(config: str, counts, dt: float, tokens: int, supervised: int) -> dict:
    passes = 4 if config == "lora" else 6
    return {"params_body_head": list(counts), "flop_passes": passes, "supervised_tokens": supervised,
            "model_flops_per_s": train_flops(counts, tokens, supervised, passes) / dt}


def _order(n: int, batch: int, steps: int, seed: int) -> list[int]:
    from posttrain.contracts import step_indices
    return [i for s in range(steps) for i in step_indices(n, batch, s, seed)]


def run_posttrain(config: str, a) -> dict:
    from posttrain.config import TrainSettings
    from posttrain.data.template import encode_conversation
    from posttrain.engine import Engine
    from posttrain.methods.sft import SFTObjective, is_padding_free, sft_collate
    from posttrain.models import apply_lora, load_model

    model, tok = load_model(a.model, seed=a.seed)
    counts = param_counts(model)
    if config == "lora":
        model = apply_lora(model, **LORA)
    n = a.batch * (a.steps + 1)
    feats = [encode_conversation(tok, r["messages"], max_length=a.max_length) for r in _rows(tok, n, a)]
    cfg = TrainSettings(lr=LR, micro_batch_size=a.batch, max_steps=a.steps + 1, warmup_steps=0,
                        schedule="constant", max_grad_norm=1.0, precision=a.precision)
    collate = sft_collate(tok.pad_token_id, model, padding_free=not a.padded)
    eng = Engine(model, SFTObjective(), feats, collate, cfg,
                 run_dir=f"{a.tmp}/posttrain-{config}", seed=a.seed, show_progress=False)
    rss_before = round(peak_rss_mb())
    eng.train_step(eng.micro_batches(0))  # warm-up step, not timed
    sync(a.device)
    ends, faults, tokens, supervised = [time.perf_counter()], [minor_faults()], 0, 0
    for s in range(1, a.steps + 1):
        batches = eng.micro_batches(s)
        supervised += sum(int((b["labels"] != -100).sum()) for b in batches)
        tokens += eng.train_step(batches)["tokens"]
        sync(a.device)
        ends.append(time.perf_counter())
        faults.append(minor_faults())
    out = step_summary(ends, faults, a.batch * a.steps, tokens) | {
        "rss_before_train_mb": rss_before, "padding_free": is_padding_free(collate)}
    return out | _flops(config, counts, ends[-1] - ends[0], tokens, supervised)


def run_trl(config: str, a) -> dict:
    import datasets
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from posttrain.models import load_model

    datasets.disable_progress_bars()
    model, tok = load_model(a.model, seed=a.seed)
    counts = param_counts(model)
    n = a.batch * (a.steps + 1)
    rows = _rows(tok, n, a)
    data = datasets.Dataset.from_list([{"prompt": rows[i]["messages"][:1],
                                        "completion": rows[i]["messages"][1:]}
                                       for i in _order(n, a.batch, a.steps + 1, a.seed)])
    peft_config = None
    if config == "lora":
        peft_config = LoraConfig(task_type="CAUSAL_LM", r=LORA["r"], lora_alpha=LORA["alpha"],
                                 lora_dropout=0.0,
                                 target_modules=LORA["targets"])
    args = SFTConfig(
        output_dir=f"{a.tmp}/trl-{config}", per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=1,
        max_steps=a.steps + 1, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0, max_length=a.max_length, packing=False, completion_only_loss=True,
        bf16=a.precision == "bf16", gradient_checkpointing=False, train_sampling_strategy="sequential",
        seed=a.seed,
        use_cpu=a.device == "cpu",
        dataloader_num_workers=0, dataloader_pin_memory=False, report_to="none", logging_strategy="no",
        save_strategy="no", eval_strategy="no", disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                         peft_config=peft_config)
    ends, faults = [], []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            sync(a.device)
            ends.append(time.perf_counter())
            faults.append(minor_faults())

    trainer.add_callback(StepTimes())
    rss_before = round(peak_rss_mb())
    trainer.train()
    assert len(ends) == a.steps + 1, ends
    coll, ds = trainer.data_collator, trainer.train_dataset
    tokens = supervised = 0
    for s in range(1, a.steps + 1):
        b = coll([dict(ds[i]) for i in range(s * a.batch, (s + 1) * a.batch)])
        tokens += int(b["attention_mask"].sum())
        supervised += int((b["labels"] != -100).sum())
    out = step_summary(ends, faults, a.batch * a.steps, tokens) | {"rss_before_train_mb": rss_before}
    return out | _flops(config, counts, ends[-1] - ends[0], tokens, supervised)


def worker(a) -> None:
    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    out = {"impl": a.impl, "config": a.config, **(run_trl if a.impl == "trl" else run_posttrain)(a.config, a)}
    out["peak_rss_mb"] = round(peak_rss_mb())
    if a.device == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
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
    ap.add_argument("--padded", action="store_true",
                    help="posttrain on right-padded rows instead of its default padding-free rows")
    ap.add_argument("--tmp", default="runs/bench-sft")
    add_model_args(ap, MODEL)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=("trl", "posttrain"), help=argparse.SUPPRESS)
    ap.add_argument("--config", choices=("lora", "full"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    start = time.perf_counter()
    ceilings: list[float] = []
    if a.ceiling:
        measure_ceiling(a, ceilings)
    extra = model_args(a)
    print(json.dumps({"meta": {"model": a.model, "device": a.device, "precision": a.precision,
                               "lengths": a.lengths,
                               "posttrain_rows": "padded" if a.padded else "padding-free",
                               "batch": a.batch, "timed_steps": a.steps, "max_length": a.max_length,
                               "threads": a.threads, "env": a.env, "machine": machine(),
                               "date": time.strftime("%Y-%m-%d %H:%M")}}), flush=True)
    rows, results = [], []
    for k, config in enumerate(a.configs.split(",")):
        order = ("trl", "posttrain") if k % 2 == 0 else ("posttrain", "trl")
        r = {}
        for impl in [i for i in order if i in a.impls.split(",")]:
            r[impl] = spawn(__file__, ["--impl", impl, "--config", config, "--steps", str(a.steps), "--batch",
                                       str(a.batch), "--max-length", str(a.max_length), "--threads",
                                       str(a.threads),
                                       "--seed", str(a.seed), "--tmp", a.tmp, *extra]
                                 + (["--padded"] if a.padded else []), a.threads, a.env)
            print(json.dumps({"impl": impl, "config": config, **r[impl]}), flush=True)
        results.append((config, r))
    if a.ceiling:
        measure_ceiling(a, ceilings)
    ceiling = max(ceilings) if ceilings else None
    for config, r in results:
        mfu = {i: r[i]["model_flops_per_s"] / ceiling for i in r if ceiling and "model_flops_per_s" in r[i]}
        if mfu:
            print(json.dumps({"config": config, "mfu": {i: round(v, 4) for i, v in mfu.items()}}), flush=True)
        if all(i in r and "error" not in r[i] for i in ("trl", "posttrain")):
            t, p = r["trl"], r["posttrain"]
            rows.append(f"| {config} | {t['tokens_per_s']} | {p['tokens_per_s']} | "
                        f"{p['tokens_per_s'] / t['tokens_per_s']:.2f} | "
                        f"{t['peak_rss_mb']} | {p['peak_rss_mb']} | "
                        f"{p['peak_rss_mb'] / t['peak_rss_mb']:.2f} |"
                        + (f" {mfu['trl']:.1%} / {mfu['posttrain']:.1%} |" if ceiling else ""))
    if rows:
        print("\n| config | TRL tokens/s | posttrain tokens/s | ratio (pt/TRL) | TRL peak RSS MB | "
              "posttrain peak RSS MB | RSS ratio |" + (" MFU TRL / posttrain |" if ceiling else "")
              + "\n|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if ceiling
                                                           else "") + "\n" + "\n".join(rows))
    print(f"\ntotal wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
