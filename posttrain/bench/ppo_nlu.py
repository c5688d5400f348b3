"""RL4GLUE's ladder (METHODS.md §4): zero-shot < few-shot < SFT < PPO, on the embedded model with LoRA.

Per task: zero-shot and k-shot prompting of the base model; SFT on label tokens (recipes/nlu_sft.yaml);
PPO from the SFT adapter and PPO from the base (recipes/nlu_ppo.yaml). Every trained row is `posttrain
train` of those recipes with the overrides in its run's recipe.yaml; dev accuracy comes from
`posttrain.eval.nlu.nlu_eval` (greedy after the pre-filled `<Judgement>`).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from posttrain.bench.sweep import curve, run_variant
from posttrain.config import DataSource, NLUSource
from posttrain.data.sources import load_source
from posttrain.eval.nlu import nlu_eval
from posttrain.eval.report import atomic_write_text, markdown_table, plot_curves
from posttrain.runner import adapter_folder

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TRAIN_LIMIT = {"sst2": 256}  # SuperGLUE tasks: their 32-example FewGLUE train sets, whole


def dev_records(task: str, limit: int | None, shots: int = 0, seed: int = 0):
    return load_source(DataSource(nlu=NLUSource(task=task, split="validation", limit=limit, shots=shots,
                                                shots_seed=seed)), "prompt")


def evaluate(task: str, limit: int | None, *, adapter: str | None = None, shots: int = 0, cache: Path) -> dict:
    """Dev accuracy of the base model (+ an adapter), cached by (task, limit, adapter, shots)."""
    key = f"{task}-{limit}-{shots}-{(adapter or 'base').replace('/', '_')}"
    path = cache / f"eval-{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    from posttrain.models import load_model
    from posttrain.models.io import apply_saved_adapter
    model, tok = load_model("smollm2-135m-instruct")
    if adapter:
        model = apply_saved_adapter(model, adapter_folder(adapter))
    res = nlu_eval(model, tok, dev_records(task, limit, shots), max_prompt_length=1024)
    atomic_write_text(path, json.dumps(res, indent=1))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="posttrain bench ppo-nlu")
    ap.add_argument("--tasks", nargs="+", default=["sst2", "rte", "cb"])
    ap.add_argument("--dev-limit", type=int, default=200, help="first N dev examples per task (all if fewer)")
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--ppo-steps", type=int, default=80, help="optimiser steps (8 per PPO iteration)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-ppo-base", nargs="*", default=[], metavar="TASK",
                    help="tasks whose PPO-from-base run is left out (reported as not run)")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--runs", default="runs/ppo_nlu")
    a = ap.parse_args(argv)
    t0 = time.time()
    runs = Path(a.runs)
    runs.mkdir(parents=True, exist_ok=True)
    table, curves_score, curves_kl, sizes = [], {}, {}, {}
    for task in a.tasks:
        limit = TRAIN_LIMIT.get(task)
        train_src = f"data.train.nlu.task={task}"
        common = [f"seed={a.seed}", f"output_dir={a.runs}", train_src]
        if limit is None:
            common.append("data.train.nlu.limit=null")
        sizes[task] = len(load_source(DataSource(nlu=NLUSource(task=task, split="train", limit=limit)), "prompt"))
        results = {"zero-shot": evaluate(task, a.dev_limit, cache=runs),
                   f"{a.shots}-shot": evaluate(task, a.dev_limit, shots=a.shots, cache=runs)}
        sft_name = f"nlu-sft-{task}-seed{a.seed}"
        sft = run_variant(RECIPES / "nlu_sft.yaml", [f"name={sft_name}", *common])
        results["SFT"] = evaluate(task, a.dev_limit, adapter=str(runs / sft_name), cache=runs)
        timings = {"SFT": sft["train_time_s"]}
        for label, extra in (("PPO from SFT", [f"model.adapter={runs / sft_name}"]), ("PPO from base", [])):
            slug = "sft" if "SFT" in label else "base"
            if slug == "base" and task in a.skip_ppo_base:
                results[label] = {"accuracy": "not run", "invalid_rate": "", "n": ""}
                continue
            name = f"nlu-ppo-{slug}-{task}-seed{a.seed}"
            row = run_variant(RECIPES / "nlu_ppo.yaml", [
                f"name={name}", *common, f"data.eval.nlu.task={task}", f"data.eval.nlu.limit={a.dev_limit}",
                f"train.max_steps={a.ppo_steps}", f"train.eval_every={a.ppo_steps}", *extra])
            results[label] = {"accuracy": row["eval/accuracy"], "invalid_rate": row["eval/invalid_rate"],
                              "n": results["zero-shot"]["n"]}
            timings[label] = row["train_time_s"]
            curves_score[f"{task} {label}"] = curve(row, "rollout/score")
            curves_kl[f"{task} {label}"] = curve(row, "rollout/kl")
        for cond, res in results.items():
            table.append([task, cond, res["accuracy"], res["invalid_rate"], res["n"], timings.get(cond, "")])
        print(task, {k: v["accuracy"] for k, v in results.items()}, flush=True)
    out = Path(a.out)
    png_s = plot_curves(curves_score, out / "ppo_nlu_reward.png", title="PPO rollout reward (label reward)",
                        ylabel="mean score per rollout")
    png_k = plot_curves(curves_kl, out / "ppo_nlu_kl.png", title="PPO KL(policy || reference) per sequence",
                        ylabel="KL (k1, summed)")
    text = "\n".join([
        "# PPO with LoRA for classification as generation (RL4GLUE)", "",
        f"Reproduce: `posttrain bench ppo-nlu --tasks {' '.join(a.tasks)} --dev-limit {a.dev_limit} --shots "
        f"{a.shots} --ppo-steps {a.ppo_steps} --seed {a.seed}"
        + (f" --skip-ppo-base {' '.join(a.skip_ppo_base)}" if a.skip_ppo_base else "") + "`.", "",
        "- model: SmolLM2-135M-Instruct (embedded); LoRA r16 alpha32 rsLoRA on q_proj/v_proj for SFT and PPO",
        "- prompts: task instruction + answer form + example, assistant turn pre-filled with `<Judgement>`; "
        "greedy decoding, 8 new tokens; invalid = no `</Judgement>`, or none / several label words (counted wrong)",
        f"- train sets: {', '.join(f'{t} {n}' for t, n in sizes.items())} examples (SST-2: the first 256 of "
        "its train split; SuperGLUE: FewGLUE's 32); dev: the first "
        f"{a.dev_limit} validation examples (fewer when the set is smaller); {a.shots}-shot demonstrations "
        "drawn from train, balanced over labels",
        "- SFT: NLL of the label tokens (after `<Judgement>`), 32 steps x 8, lr 5e-4 "
        "(recipes/nlu_sft.yaml)",
        f"- PPO: reward +1 / -1 / -3, {a.ppo_steps} optimiser steps = {a.ppo_steps // 8} iterations of 16 rollouts "
        "x 4 epochs x minibatch 8, lr 2e-4, adaptive KL (0.2, target 6, horizon 10000), GAE gamma 1 "
        "lambda 0.95, clip 0.2, value clip 0.2, vf coef 0.1; value head on the policy trunk; reference = LoRA "
        "disabled (the base model, also for PPO from SFT) (recipes/nlu_ppo.yaml)",
        f"- seed {a.seed}; total wall time {(time.time() - t0) / 60:.1f} min on 2 CPU cores (finished runs and "
        "evaluations are reused)", "",
        markdown_table(["task", "condition", "dev accuracy", "invalid rate", "dev n", "train s"], table), "",
        f"![reward]({png_s.name})", "", f"![kl]({png_k.name})", ""])
    atomic_write_text(out / "ppo_nlu.md", text)
    print(out / "ppo_nlu.md")
    return 0
