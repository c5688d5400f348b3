"""Where a training step's time goes: data (collate), forward (the objective: model + log-probs + loss),
backward, gradient clipping, optimizer, and the rest (Python and bookkeeping), for posttrain's DPO
(LoRA or full, precomputed reference) and SFT on the embedded model; then the top operators of the timed
steps by self CPU time (torch.profiler). Usage:

    python benchmarks/step_profile.py [--method dpo|sft] [--config lora|full] [--steps 4] [--threads 2]

Phases are timed by wrapping the engine's own calls with perf_counter (CPU work is synchronous); the
operator table comes from a second pass over the same steps under torch.profiler, whose own overhead
does not enter the phase times.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODEL = "smollm2-135m-instruct"


def build(a):
    from posttrain.config import ModelSettings, TrainSettings
    from posttrain.engine import Engine
    from posttrain.models import apply_lora, load_model

    model, tok = load_model(MODEL)
    if a.config == "lora":
        model = apply_lora(model, r=16, alpha=32, targets="all-linear")
    n = a.batch * (2 * a.steps + 1)
    cfg = TrainSettings(lr=1e-5, micro_batch_size=a.batch, max_steps=2 * a.steps + 1, warmup_steps=0,
                        schedule="constant", max_grad_norm=1.0)
    if a.method == "sft":
        from posttrain.data.template import encode_conversation
        from posttrain.methods.sft import SFTObjective, sft_collate
        from posttrain.tasks.synthetic import generate, to_sft_rows
        feats = [encode_conversation(tok, r["messages"], max_length=512)
                 for r in to_sft_rows(generate("word_problems", n, seed=0))]
        collate = sft_collate(tok.pad_token_id, model, padding_free=not a.padded)
        return Engine(model, SFTObjective(), feats, collate, cfg,
                      run_dir=f"{a.tmp}/{a.method}-{a.config}", show_progress=False)
    from posttrain.data.template import encode_pair
    from posttrain.methods.preference import (
        PreferenceObjective,
        PreferenceParams,
        attach_reference,
        collate_pairs,
        pair_layout,
    )
    from posttrain.references import resolve_reference
    from posttrain.tasks.synthetic_pairs import generate_pairs
    feats = [encode_pair(tok, [{"role": "user", "content": r["prompt"]}], r["chosen"], r["rejected"],
                         max_length=512)
             for r in generate_pairs("word_problems", n, seed=0)]
    reference = resolve_reference("start", model, ModelSettings(name=MODEL), live=False)
    params = PreferenceParams(name="dpo", beta=0.1, reference_mode="precomputed", padding_free=not a.padded)
    layout = pair_layout(params, model)
    info = attach_reference(reference, model, feats, tok.pad_token_id, a.batch, layout)
    os.remove(info["reference_cache_file"])
    objective = PreferenceObjective(params, None)
    return Engine(model, objective, feats, collate_pairs(tok.pad_token_id, layout), cfg,
                  run_dir=f"{a.tmp}/{a.method}-{a.config}", show_progress=False)


class _TimedObjective:
    """The engine's objective, its calls timed as the "forward" phase."""

    def __init__(self, objective, totals: dict[str, float]):
        self.objective, self.totals = objective, totals

    def __call__(self, model, batch):
        t = time.perf_counter()
        try:
            return self.objective(model, batch)
        finally:
            self.totals["forward"] += time.perf_counter() - t

    def __getattr__(self, name):  # units, set_step, ...
        return getattr(self.objective, name)


def timed_phases(eng) -> dict[str, float]:
    """Wrap the engine's calls so that each adds its wall time to a phase; returns the (live) totals."""
    totals: dict[str, float] = defaultdict(float)

    def wrap(obj, name: str, phase: str):
        fn = getattr(obj, name)

        def timed(*args, **kw):
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                totals[phase] += time.perf_counter() - t
        setattr(obj, name, timed)

    eng.objective = _TimedObjective(eng.objective, totals)
    wrap(eng.accelerator, "backward", "backward")
    wrap(eng, "_clip_grad_norm", "clip")
    wrap(eng.optimizer, "step", "optimizer")
    wrap(eng.optimizer, "zero_grad", "optimizer")
    wrap(eng, "micro_batches", "data")
    return totals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", choices=("dpo", "sft"), default="dpo")
    ap.add_argument("--config", choices=("lora", "full"), default="lora")
    ap.add_argument("--batch", type=int, default=4, help="pairs (dpo) or chats (sft) per step")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per pass (one warm-up step runs first)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--padded", action="store_true", help="right-padded rows instead of padding-free ones")
    ap.add_argument("--tmp", default="runs/bench-profile")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    eng = build(a)
    eng.train_step(eng.micro_batches(0))  # warm-up
    totals = timed_phases(eng)
    t0 = time.perf_counter()
    for s in range(1, a.steps + 1):
        eng.train_step(eng.micro_batches(s))
    wall = time.perf_counter() - t0
    phases = dict(totals)
    phases["other (Python, metrics, scheduler)"] = wall - sum(phases.values())
    print(json.dumps({"method": a.method, "config": a.config, "batch": a.batch, "steps": a.steps,
                      "threads": a.threads, "s_per_step": round(wall / a.steps, 3),
                      "phases_s_per_step": {k: round(v / a.steps, 3) for k, v in phases.items()}}))
    print("\n| phase | s per step | share |\n|---|---:|---:|")
    for k, v in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v / a.steps:.3f} | {v / wall:.1%} |")
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for s in range(a.steps + 1, 2 * a.steps + 1):
            eng.train_step(eng.micro_batches(s))
    print("\nTop operators by self CPU time "
          "(a second pass of the same number of steps, under the profiler):\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=50))


if __name__ == "__main__":
    main()
