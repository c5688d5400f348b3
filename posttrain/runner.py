"""Run a recipe: load the model, let the method build its data and objective, train, evaluate, report."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import yaml

from posttrain import distributed, trackers
from posttrain.checkpoints import iteration_dir, latest_checkpoint
from posttrain.config import Recipe, check_inputs, flat, validate_section
from posttrain.contracts import RunInfo, StageDef
from posttrain.engine import Engine, TrainResult
from posttrain.errors import TrainingError
from posttrain.eval.generation import answer_accuracy
from posttrain.files import atomic_write_text
from posttrain.methods import get_method
from posttrain.models import cache_dir
from posttrain.models.fingerprint import weights_hash
from posttrain.models.start import final_model, load_iteration
from posttrain.pipeline import ALL, run_stages, select, stage_key
from posttrain.run_report import write_report
from posttrain.schedule import lr_lambda
from posttrain.seeding import seed_everything
from posttrain.tasks.sources import load_source, prompt_text


def eval_prompts(recipe: Recipe, train_questions: set[str]):
    """Held-out prompts with gold answers for the generation eval; train questions are excluded."""
    data = recipe.data
    if recipe.generation_eval is None or data.eval is None:
        return None
    records = load_source(data.eval, "prompt", instruction=data.instruction, system_prompt=data.system_prompt,
                          key="data.eval")
    records = [r for r in records if r.answer is not None and prompt_text(r) not in train_questions]
    return records[:recipe.generation_eval.n]


def generation_eval(recipe: Recipe, model, tokenizer, prompts) -> dict:
    g = recipe.generation_eval
    return answer_accuracy(model, tokenizer, [r.prompt for r in prompts], [r.answer for r in prompts],
                           max_new_tokens=g.max_new_tokens, batch_size=g.batch_size)


def with_accuracy(eval_fn, recipe: Recipe, tokenizer, prompts, last: dict):
    """The method's eval_fn plus the generation eval's accuracy (generation_eval.during); `last` keeps the
    latest full result."""
    def run(model) -> dict:
        out = dict(eval_fn(model)) if eval_fn is not None else {}
        last["result"] = generation_eval(recipe, model, tokenizer, prompts)
        out["accuracy"] = last["result"]["accuracy"]
        return out
    return run


def starting_eval(recipe: Recipe, model, tokenizer, prompts) -> dict:
    """The generation eval of the starting model, cached: every run of a sweep starts from the same
    model (a fresh LoRA adapter is the identity), so only the first pays for it."""
    g = recipe.generation_eval
    # keyed by the weights (a fresh adapter is the identity, so the base's), not the model's name: an
    # adapter merged in or a folder retrained in place must not hit an old entry
    key = hashlib.sha256(json.dumps([weights_hash(model, adapter=False), g.max_new_tokens,
                                     [r.prompt for r in prompts],
                                     [r.answer for r in prompts]]).encode()).hexdigest()[:32]
    path = cache_dir() / "generation_eval" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    result = generation_eval(recipe, model, tokenizer, prompts)
    if distributed.is_main():
        atomic_write_text(path, json.dumps(result))
    return result


def train_stage(ctx, spec, params, inputs: tuple[str, ...] = ()):
    """The training stage of an iteration: the method's build, the engine, the generation evals."""
    recipe, T, t = ctx.recipe, ctx.iterations, ctx.iteration

    def run() -> dict:
        model, tokenizer = ctx.policy()
        seed_everything(recipe.seed + t)  # whatever the stages before it drew
        built = spec.build(recipe, params, model, tokenizer, RunInfo(ctx.dir, t, T))
        out: dict = {"data": built.stats}
        prompts = None
        if recipe.generation_eval is not None:
            train_q = {prompt_text(r) for r in load_source(recipe.data.train, "prompt", key="data.train")} \
                if recipe.data.train.synthetic is not None else set()
            prompts = eval_prompts(recipe, train_q)
        if prompts and recipe.generation_eval.at_start:
            out["before"] = starting_eval(recipe, model, tokenizer, prompts)
            if distributed.is_main():
                atomic_write_text(ctx.dir / "eval_before.json", json.dumps(out["before"], indent=1))
        last_eval: dict = {}
        if prompts and recipe.generation_eval.during:
            built.eval_fn = with_accuracy(built.eval_fn, recipe, tokenizer, prompts, last_eval)
        kw = {}
        if recipe.pipeline.optimizer == "carry":
            n = recipe.train.max_steps
            kw["schedule"] = (t * n, T * n)
            if t > 0:
                previous = latest_checkpoint(iteration_dir(recipe.run_dir, t - 1))
                kw["optimizer_state"] = previous / "optimizer.pt"
        engine = make_engine(recipe, built, model, tokenizer, run_dir=ctx.dir, show_progress=ctx.progress,
                             **kw)
        continued = continuation(recipe, ctx) if ctx.continued else None
        result: TrainResult = engine.train(resume=True)
        out["train"] = {"steps": result.steps, "wall_time_s": round(result.wall_time, 1),
                        "processes": distributed.world(), "sharding": engine.sharding,
                        "final": result.final_metrics,
                        "checkpoint": str(result.checkpoint) if result.checkpoint else None}
        tokens = sum(h.get("tokens", 0) for h in result.history)
        step_time = sum(h.get("step_time", 0.0) for h in result.history)
        if step_time > 0:
            out["train"]["tokens_per_s"] = round(tokens / step_time, 1)
        if continued is not None:
            out["train"]["continued"] = continued
        if distributed.is_main():
            out["train"]["report"] = str(write_report(ctx.dir))
        if prompts and recipe.generation_eval.at_end and last_eval and result.history \
                and "eval/accuracy" in result.history[-1]:
            # the engine's final evaluation already ran it on these weights
            out["after"] = last_eval["result"]
        elif prompts and recipe.generation_eval.at_end:
            out["after"] = generation_eval(recipe, result.model, tokenizer, prompts)
        return out

    return StageDef("train", select(flat(recipe.model_dump(mode="json"))), run,
                    outputs=["checkpoints", "metrics.jsonl", "tensorboard", "mlruns", "wandb", "report.md",
                             "report", "eval_before.json"],
                    inputs=list(inputs),
                    parallel=True)


def continuation(recipe: Recipe, ctx) -> dict:
    """What a finished training stage continued with a raised train.max_steps (pipeline.EXTEND_KEYS) starts
    from, and the schedule it follows, for the summary. The engine resumes from the latest checkpoint and
    builds its schedule for the new length: the steps already taken ran under the old, shorter schedule,
    the remaining ones follow the new one from where it stands at that step (no rewarming, no replay)."""
    change = ctx.continued.get("train.max_steps", {})
    ckpt = latest_checkpoint(ctx.dir)
    if ckpt is None:
        raise TrainingError(f"{ctx.dir}: cannot continue training to train.max_steps={change.get('to')}: "
                            f"the run has no checkpoint left; rerun with --restart-from train")
    step = json.loads((ckpt / "state.json").read_text())["step"]
    cfg, old, new = recipe.train, change.get("from"), change.get("to", recipe.train.max_steps)
    offset, total = (ctx.iteration * new, ctx.iterations * new) \
        if recipe.pipeline.optimizer == "carry" else (0, new)
    # the lr of the first step past the old length (an interrupted continuation resumes after it, at `step`)
    lr = cfg.lr * lr_lambda(cfg, total, offset)(old if isinstance(old, int) else step)
    return {"from_step": step, "checkpoint": str(ckpt), "max_steps": change,
            "schedule": f"steps 1-{old} ran under the {old}-step {cfg.schedule} schedule; "
                        f"steps {old + 1}-{new} follow the {new}-step schedule from its step {old + 1} "
                        f"(lr {lr:.4g} there), not the curve of a {new}-step run from the start",
            "lr_at_continuation": lr}


def run_recipe(recipe: Recipe, *, resume: bool = True, show_progress: bool = True,
               restart_from: str | None = None, until: str | None = None) -> dict:
    """Run a recipe's stages (see posttrain/pipeline.py) and return a summary (also <run_dir>/summary.json).

    resume=False redoes every stage; `restart_from` redoes that stage and everything after it; `until`
    stops after the named stage."""
    from posttrain.generation.sampler import use_backend
    t_start = time.time()
    trackers.check_installed(recipe.train.report_to)  # before any stage: a missing tracker names its extra
    check_inputs(recipe)  # a missing file is missing, not a changed input of a recorded stage
    spec = get_method(recipe.method_name)
    params = validate_section(spec.params, recipe.method, f"recipe {recipe.name}", section="method")
    run_dir = recipe.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        atomic_write_text(run_dir / "recipe.yaml",
                          yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))

    def stages_for(ctx):
        before = spec.stages(recipe, params, ctx) if spec.stages is not None else []
        if until is not None and any(until in (s.name, f"iter-{ctx.iteration + 1}/{s.name}") for s in before):
            return before
        # training reads the last data stage's first output (e.g. RSO's pairs.jsonl)
        return [*before, train_stage(ctx, spec, params, inputs=before[-1].outputs[:1] if before else ())]

    skipped: list[str] = []
    with use_backend(recipe.generation):  # every sampling stage and evaluation of the run
        per_iteration = run_stages(recipe, stages_for, lambda t: load_iteration(recipe, t),
                                   restart_from=restart_from if resume else ALL, until=until,
                                   progress=show_progress, final_model=final_model, skipped=skipped)
    last = per_iteration[-1]
    summary: dict = {"name": recipe.name, "method": spec.name, "model": recipe.model.name,
                     "lora": recipe.model.lora is not None, "seed": recipe.seed,
                     **last.get("train", {}), "stages": {k: v for k, v in last.items() if k != "train"}}
    if "train" in last and stage_key("train", len(per_iteration) - 1) in skipped:
        summary["note"] = f"already finished at step {summary['train']['steps']}; nothing to do"
        if distributed.is_main():
            print(summary["note"], flush=True)
    if len(per_iteration) > 1:
        summary["iterations"] = per_iteration
    summary["wall_time_s"] = round(time.time() - t_start, 1)
    if "train" in last and distributed.is_main():
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    return summary


def make_engine(recipe: Recipe, built, model, tokenizer, *, run_dir: Path | None = None,
                show_progress: bool = True, **kw) -> Engine:
    """The engine for what a method built: the one place a method's parts are wired to the loop."""
    return Engine(built.model if built.model is not None else model, built.objective, built.train_data,
                  built.collate, recipe.train, run_dir=run_dir or recipe.run_dir, seed=recipe.seed,
                  eval_data=built.eval_data, rollout=built.rollout, eval_fn=built.eval_fn,
                  prepare=built.prepare,
                  tokenizer=tokenizer, show_progress=show_progress, **kw)


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
