"""DPO training throughput (pairs/s) and peak memory: TRL's DPOTrainer vs posttrain, same model, pairs,
batch and lengths. Usage:

    python benchmarks/dpo_throughput.py [--steps 3] [--batch 4] [--threads 2] [--configs lora-precomputed,...]

On a CPU shared with other jobs, --threads 1 is much steadier: two OpenMP threads on two busy cores wait
on each other at every parallel region (steps measured 3-5x slower than with one thread).

Configurations (fine-tune x reference):
- lora-precomputed  TRL precompute_ref_log_probs=True          vs posttrain reference_mode "precomputed"
- full-precomputed  TRL precompute_ref_log_probs=True          vs posttrain reference_mode "precomputed"
- lora-live         TRL peft_config (adapter-disabled ref)     vs posttrain reference_mode "live" (adapter
  off)
- full-live         TRL ref_model = a frozen copy              vs posttrain reference_mode "live" (frozen
  copy)

Every (configuration, library) pair runs in its own subprocess (this file with --worker), so each peak
RSS (getrusage ru_maxrss of that process) is its own; TRL and posttrain alternate within one run. Both
train the embedded SmolLM2-135M-Instruct in float32 with AdamW, constant lr, grad-norm clip 1.0, no
gradient checkpointing, on the same synthetic word-problem pairs in the same order (posttrain's
engine order; TRL gets the dataset in that order with a sequential sampler), so each step sees the same
pairs. Steady-state throughput times steps 2..N+1 of N+1 (end of step 1 to end of step N+1, data
collation included); the one-time reference pass of the "precomputed" modes is timed separately.
posttrain runs its default pair layout (shared-prefix pairs in one padding-free row a step; `--padded`
for one right-padded row per pair, `--pair-forward concatenated` for 2B rows like TRL's).
One JSON line per run and per configuration, then a markdown table.

Model FLOPs utilisation (`--ceiling`): the driver times a large matmul in the run's precision on the run's
device before and after the workers (benchmarks/common.gemm_flops_per_s); each worker counts its model
FLOPs per timed second as (6 for a full fine-tune, 4 for LoRA: no weight gradients of the frozen base,
plus 2 for a live reference forward) x (non-embedding params x tokens processed + LM-head params x
completion positions); MFU = that / the faster ceiling reading. `--model random-llama-1.2b --device cuda
--precision bf16 --lengths 128,384` is the GPU benchmark's shape (benchmarks/gpu_throughput.sh): random
weights and fixed-length random-word text, since throughput does not depend on either.
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
    rss_now_mb,
    sync,
    train_flops,
)
from benchmarks.common import spawn as spawn_worker

CONFIGS = {  # name: (lora?, posttrain reference_mode, TRL precompute_ref_log_probs)
    "lora-precomputed": (True, "precomputed", True),
    "full-precomputed": (False, "precomputed", True),
    "lora-live": (True, "live", False),
    "full-live": (False, "live", False),
}
MODEL = "smollm2-135m-instruct"
LORA = dict(r=16, alpha=32, targets="all-linear")
BETA, LR = 0.1, 5e-6


def _rows(tok, n: int, a) -> list[dict]:
    if a.lengths:
        import numpy as np

        from benchmarks.common import fixed_length_text
        p, c = a.lengths
        rng = np.random.default_rng(a.seed)
        return [{"prompt": fixed_length_text(tok, p, rng), "chosen": fixed_length_text(tok, c, rng),
                 "rejected": fixed_length_text(tok, c, rng)} for _ in range(n)]
    from posttrain.tasks.synthetic_pairs import generate_pairs
    return generate_pairs("word_problems", n, seed=a.seed)


def _flop_passes(config: str) -> int:
    lora, mode, _ = CONFIGS[config]
    return (4 if lora else 6) + (2 if mode == "live" else 0)


def _order(n: int, batch: int, steps: int, seed: int) -> list[int]:
    """Example indices step by step, as posttrain's engine visits them."""
    from posttrain.contracts import step_indices
    return [i for s in range(steps) for i in step_indices(n, batch, s, seed)]


# ---- posttrain ----------------------------------------------------------------------------------
def run_posttrain(config: str, a) -> dict:

    from posttrain.config import ModelSettings, TrainSettings
    from posttrain.data.template import encode_pair
    from posttrain.engine import Engine
    from posttrain.methods.preference import (
        PreferenceObjective,
        PreferenceParams,
        attach_reference,
        collate_pairs,
        pair_layout,
        reference_key,
    )
    from posttrain.models import apply_lora, cache_dir, load_model
    from posttrain.references import resolve_reference

    lora, mode, _ = CONFIGS[config]
    t0 = time.perf_counter()
    model, tok = load_model(a.model, seed=a.seed)
    counts = param_counts(model)
    if lora:
        model = apply_lora(model, **LORA)
    n = a.batch * (a.steps + 1)
    rows = _rows(tok, n, a)
    feats = [encode_pair(tok, [{"role": "user", "content": r["prompt"]}], r["chosen"], r["rejected"],
                         max_length=a.max_length) for r in rows]
    pad = tok.pad_token_id
    params = PreferenceParams(name="dpo", beta=BETA, reference_mode=mode, reference_batch_size=a.batch,
                              pair_forward=a.pair_forward, padding_free=not a.padded)
    layout = pair_layout(params, model)
    out = {"pair_forward": layout}
    reference = resolve_reference("start", model, ModelSettings(name=a.model), live=mode == "live")
    if mode == "precomputed":
        # no cache hit from an earlier run: the pass is really computed (and its file removed after)
        digest = reference_key(reference.weights_hash(model), feats, layout, a.batch)
        stale = cache_dir() / "reference_logps" / f"{digest}.safetensors"
        stale.unlink(missing_ok=True)
        tp = time.perf_counter()
        info = attach_reference(reference, model, feats, pad, a.batch, layout)
        out["precompute_s"] = round(time.perf_counter() - tp, 2)
        os.remove(info["reference_cache_file"])
    objective = PreferenceObjective(params, reference if mode == "live" else None)
    cfg = TrainSettings(lr=LR, micro_batch_size=a.batch, max_steps=a.steps + 1, warmup_steps=0,
                        schedule="constant", max_grad_norm=1.0, precision=a.precision)
    eng = Engine(model, objective, feats, collate_pairs(pad, layout), cfg,
                 run_dir=f"{a.tmp}/posttrain-{config}",
                 seed=a.seed, show_progress=False)
    order = _order(n, a.batch, a.steps + 1, a.seed)
    assert sorted(order) == list(range(n))
    out["setup_s"] = round(time.perf_counter() - t0, 2)
    out["rss_before_train_mb"] = round(peak_rss_mb())
    eng.train_step(eng.micro_batches(0))  # warm-up step, not timed
    sync(a.device)
    ends = [time.perf_counter()]
    tokens, padded = 0, 0
    faults, rss, step_tokens = [minor_faults()], [], []
    for s in range(1, a.steps + 1):
        batches = eng.micro_batches(s)
        padded += sum(b["input_ids"].numel() for b in batches)
        step_tokens.append(eng.train_step(batches)["tokens"])
        tokens += step_tokens[-1]
        sync(a.device)
        ends.append(time.perf_counter())
        faults.append(minor_faults())
        rss.append(round(rss_now_mb()))
    out["step_minor_faults"] = [b - e for e, b in zip(faults, faults[1:])]
    out["step_rss_mb"] = rss
    out["step_tokens"] = step_tokens
    timed = [feats[i] for i in order[a.batch:]]
    out.update(_summary(a, ends, timed, tokens, padded, counts, _flop_passes(config)))
    out["first_step_pairs"] = order[:a.batch]
    return out


# ---- TRL ----------------------------------------------------------------------------------------
def run_trl(config: str, a) -> dict:
    import copy

    import datasets
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from posttrain.models import load_model
    from posttrain.models.tiny import TINY_MODELS

    if a.hash_patch:
        # datasets' fingerprinting (pickling map functions / tokenizers) failed with a PicklingError
        # (MonthDayNano) on some setups; a random fingerprint sidesteps it and also disables the cache
        from datasets.fingerprint import Hasher
        Hasher.hash = classmethod(lambda cls, value: os.urandom(8).hex())
    datasets.disable_progress_bars()
    lora, _, precompute = CONFIGS[config]
    t0 = time.perf_counter()
    model, tok = load_model(a.model, seed=a.seed)
    counts = param_counts(model)
    n = a.batch * (a.steps + 1)
    rows = _rows(tok, n, a)
    order = _order(n, a.batch, a.steps + 1, a.seed)
    data = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": rows[i]["prompt"]}],
         "chosen": [{"role": "assistant", "content": rows[i]["chosen"]}],
         "rejected": [{"role": "assistant", "content": rows[i]["rejected"]}]} for i in order])
    ref_model = None
    if not lora and (not precompute or a.model in TINY_MODELS):
        # TRL rebuilds a missing reference from the policy's path, which a random-initialised model lacks
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    peft_config = None
    if lora:
        peft_config = LoraConfig(task_type="CAUSAL_LM", r=LORA["r"], lora_alpha=LORA["alpha"],
                                 lora_dropout=0.0,
                                 target_modules=LORA["targets"])
    args = DPOConfig(
        output_dir=f"{a.tmp}/trl-{config}", per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=1,
        max_steps=a.steps + 1, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0, beta=BETA, loss_type=["sigmoid"], max_length=a.max_length,
        precompute_ref_log_probs=precompute, precompute_ref_batch_size=a.batch,
        # TRL's defaults are bf16=True, gradient_checkpointing=True: set to match posttrain's run
        bf16=a.precision == "bf16", gradient_checkpointing=False,
        train_sampling_strategy="sequential", seed=a.seed, use_cpu=a.device == "cpu",
        dataloader_num_workers=0,
        dataloader_pin_memory=False, report_to="none", logging_strategy="no", save_strategy="no",
        eval_strategy="no", disable_tqdm=True)
    out = {}
    orig = DPOTrainer._precompute_ref_logps

    def timed_precompute(self, *args_, **kw):
        tp = time.perf_counter()
        r = orig(self, *args_, **kw)
        out["precompute_s"] = round(time.perf_counter() - tp, 2)
        return r

    DPOTrainer._precompute_ref_logps = timed_precompute
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=data,
                         processing_class=tok,
                         peft_config=peft_config)
    ends = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            sync(a.device)
            ends.append(time.perf_counter())

    trainer.add_callback(StepTimes())
    out["setup_s"] = round(time.perf_counter() - t0, 2)
    out["rss_before_train_mb"] = round(peak_rss_mb())
    trainer.train()
    assert len(ends) == a.steps + 1, ends
    ds = trainer.train_dataset
    timed = [{"prompt_ids": ds[i]["prompt_ids"], "chosen_ids": ds[i]["chosen_ids"],
              "rejected_ids": ds[i]["rejected_ids"]} for i in range(a.batch, n)]
    # tokens / padded positions of the timed steps, as TRL's collator builds them
    coll = trainer.data_collator
    tokens = padded = 0
    for s in range(1, a.steps + 1):
        b = coll([dict(ds[i]) for i in range(s * a.batch, (s + 1) * a.batch)])
        tokens += int(b["attention_mask"].sum())
        padded += b["input_ids"].numel()
    out.update(_summary(a, ends, timed, tokens, padded, counts, _flop_passes(config)))
    out["first_step_pairs"] = order[:a.batch]
    return out


def _summary(a, ends: list[float], timed: list[dict], tokens: int, padded: int, counts: tuple[int, int],
             passes: int) -> dict:
    """`ends`: the end time of the warm-up step, then of each timed step."""
    import statistics
    n, dt = len(timed), ends[-1] - ends[0]
    heads = sum(len(f["chosen_ids"]) + len(f["rejected_ids"]) for f in timed)
    steps = [b - e for e, b in zip(ends, ends[1:])]
    mean = lambda k: round(sum(len(f[k]) for f in timed) / n, 1)  # noqa: E731
    return {"pairs_per_s": round(n / dt, 3), "s_per_step": round(dt / a.steps, 2),
            "pairs_per_s_median_step": round(a.batch / statistics.median(steps), 3),
            "step_s": [round(x, 2) for x in steps],
            "tokens_per_s": round(tokens / dt, 1), "tokens_per_step": tokens // a.steps,
            "padded_positions_per_step": padded // a.steps,
            "mean_prompt_tokens": mean("prompt_ids"), "mean_chosen_tokens": mean("chosen_ids"),
            "mean_rejected_tokens": mean("rejected_ids"),
            "params_body_head": list(counts), "flop_passes": passes,
            "model_flops_per_s": train_flops(counts, tokens, heads, passes) / dt}


def worker(a) -> None:
    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    fn = run_trl if a.impl == "trl" else run_posttrain
    out = {"impl": a.impl, "config": a.config, **fn(a.config, a)}
    out["peak_rss_mb"] = round(peak_rss_mb())
    if a.device == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    out["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(out), flush=True)


# ---- driver -------------------------------------------------------------------------------------
def spawn(impl: str, config: str, a) -> dict:
    args = ["--impl", impl, "--config", config, "--steps", str(a.steps), "--batch", str(a.batch),
            "--max-length",
            str(a.max_length), "--threads", str(a.threads), "--seed", str(a.seed), "--tmp", a.tmp,
            "--pair-forward", a.pair_forward, *model_args(a)] + (["--hash-patch"] if a.hash_patch else []) + (
                ["--padded"] if a.padded else [])
    return {"impl": impl, "config": config, **spawn_worker(__file__, args, a.threads, a.env)}


def table(results: list[dict], ceiling: float | None = None) -> str:
    head = ("| config | TRL pairs/s | posttrain pairs/s | speed ratio (pt/TRL) | TRL peak RSS MB | "
            "posttrain peak RSS MB | RSS ratio (pt/TRL) | ref precompute s (TRL / pt) |"
            + (" MFU TRL / posttrain |" if ceiling else "") + "\n|---|---:|---:|---:|---:|---:|---:|---:|"
            + ("---:|" if ceiling else ""))
    lines = [head]
    for r in results:
        t, p = r["trl"], r["posttrain"]
        if "error" in t or "error" in p:
            lines.append(f"| {r['config']} | failed: {t.get('error', 'ok')} | {p.get('error', 'ok')} "
                         f"| | | | | |")
            continue
        pre = (f"{t['precompute_s']} / {p['precompute_s']}" if "precompute_s" in t else "n/a (live)")
        lines.append(
            f"| {r['config']} | {t['pairs_per_s']:.3f} ({t['pairs_per_s_median_step']:.3f}) | "
            f"{p['pairs_per_s']:.3f} ({p['pairs_per_s_median_step']:.3f}) | "
            f"{r['speed_ratio']:.2f} ({r['speed_ratio_median']:.2f}) | "
            f"{t['peak_rss_mb']} | {p['peak_rss_mb']} | "
            f"{r['rss_ratio']:.2f} | {pre} |"
            + (f" {t['model_flops_per_s'] / ceiling:.1%} / {p['model_flops_per_s'] / ceiling:.1%} |"
               if ceiling else ""))
    lines.append("\npairs/s = timed pairs / wall time of the timed steps; "
                 "in parentheses: batch / median step time.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps (one more, untimed, runs first)")
    ap.add_argument("--batch", type=int, default=4, help="pairs per optimisation step")
    ap.add_argument("--max-length", type=int, default=512,
                    help="max tokens of prompt + completion (both sides)")
    ap.add_argument("--configs", default="lora-precomputed,full-precomputed,lora-live,full-live")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pair-forward", choices=("shared_prefix", "concatenated"), default="shared_prefix",
                    help="posttrain's pair layout (default: the library default, shared_prefix)")
    ap.add_argument("--padded", action="store_true",
                    help="posttrain's shared-prefix rows right-padded instead of one padding-free row a step")
    ap.add_argument("--tmp", default="runs/bench-dpo")
    ap.add_argument("--hash-patch", action="store_true",
                    help="TRL run: replace datasets' fingerprint hashing by random ids (a workaround for a "
                         "PicklingError seen on another machine; not needed here)")
    ap.add_argument("--impls", default="trl,posttrain", help="which sides to run (e.g. posttrain alone)")
    add_model_args(ap, MODEL)
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment of the worker processes (e.g. glibc malloc settings); repeatable")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=("trl", "posttrain"), help=argparse.SUPPRESS)
    ap.add_argument("--config", choices=tuple(CONFIGS), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            raise SystemExit(f"unknown config {c!r}; choose from {', '.join(CONFIGS)}")
    start = time.perf_counter()
    ceilings: list[float] = []
    if a.ceiling:
        measure_ceiling(a, ceilings)
    meta = {"model": a.model, "device": a.device, "precision": a.precision, "lengths": a.lengths,
            "pair_forward": a.pair_forward, "padded": a.padded, "env": a.env, "batch_pairs": a.batch,
            "timed_steps": a.steps, "max_length": a.max_length, "threads": a.threads, "machine": machine(),
            "date": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps({"meta": meta}), flush=True)
    results = []
    for k, config in enumerate(configs):
        order = ("trl", "posttrain") if k % 2 == 0 else ("posttrain", "trl")  # alternate who runs first
        r = {"config": config}
        for impl in [i for i in order if i in a.impls.split(",")]:
            r[impl] = spawn(impl, config, a)
            print(json.dumps(r[impl]), flush=True)
        t, p = r.get("trl", {"error": "not run"}), r.get("posttrain", {"error": "not run"})
        if "error" not in t and "error" not in p:
            r["speed_ratio"] = p["pairs_per_s"] / t["pairs_per_s"]
            r["speed_ratio_median"] = p["pairs_per_s_median_step"] / t["pairs_per_s_median_step"]
            r["rss_ratio"] = p["peak_rss_mb"] / t["peak_rss_mb"]
            print(json.dumps({"config": config, "trl_pairs_per_s": t["pairs_per_s"],
                              "posttrain_pairs_per_s": p["pairs_per_s"],
                              "speed_ratio": round(r["speed_ratio"], 3),
                              "speed_ratio_median_step": round(r["speed_ratio_median"], 3),
                              "trl_peak_rss_mb": t["peak_rss_mb"], "posttrain_peak_rss_mb": p["peak_rss_mb"],
                              "rss_ratio": round(r["rss_ratio"], 3)}), flush=True)
        results.append(r)
    if a.ceiling:
        measure_ceiling(a, ceilings)
    ceiling = max(ceilings) if ceilings else None
    for r in results:
        for impl in ("trl", "posttrain"):
            if ceiling and "model_flops_per_s" in r.get(impl, {}):
                print(json.dumps({"config": r["config"], "impl": impl,
                                  "mfu": round(r[impl]["model_flops_per_s"] / ceiling, 4)}), flush=True)
    print()
    if results and all("trl" in r and "posttrain" in r for r in results):
        print(table(results, ceiling))
    print(f"\ntotal wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
