"""Run a recipe: load the model, let the method build its data and objective, train, evaluate, report."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import yaml

from posttrain import distributed
from posttrain.config import Recipe, validate_section
from posttrain.data.sources import load_source, prompt_text
from posttrain.engine import Engine, TrainResult, latest_checkpoint, seed_everything
from posttrain.eval.generation import answer_accuracy
from posttrain.files import atomic_write_text
from posttrain.methods import get_method
from posttrain.methods.base import RunInfo
from posttrain.errors import RecipeError, TrainingError
from posttrain.models import apply_lora, cache_dir, load_model
from posttrain.models.fingerprint import weights_hash
from posttrain.models.io import apply_saved_adapter, load_weights_


def adapter_folder(path: str) -> Path:
    """A LoRA folder: the path itself, its model/, or a run's latest checkpoint's model/."""
    p = Path(path)
    for cand in (p, p / "model"):
        if (cand / "adapter_config.json").is_file():
            return cand
    ckpt = latest_checkpoint(p)
    if ckpt is not None and (ckpt / "model" / "adapter_config.json").is_file():
        return ckpt / "model"
    raise RecipeError(f"model.adapter: no LoRA adapter at {path} (nor in model/ or checkpoints/step-*/model/)")


def load_start(m, *, with_adapter: bool = True):
    """(plain model, tokenizer) the run starts from: `model.name`, with `model.adapter` merged in.

    Merging (rather than training the adapter on) makes the starting model a plain model again: a fresh
    LoRA on top starts at the identity, and the adapter-off policy is the starting model (RL4GLUE's SFT ->
    PPO does the same)."""
    model, tokenizer = load_model(m.name, dtype=m.dtype, seed=m.seed, trust_remote_code=m.trust_remote_code)
    if with_adapter and m.adapter is not None:
        model = apply_saved_adapter(model, adapter_folder(m.adapter)).merge_and_unload()
    return model, tokenizer


def load_policy(recipe: Recipe):
    """(model to train, tokenizer): the starting model, with a fresh LoRA adapter when `model.lora` is set."""
    m = recipe.model
    model, tokenizer = load_start(m)
    if m.lora is not None:
        model = apply_lora(model, r=m.lora.r, alpha=m.lora.alpha, dropout=m.lora.dropout,
                           targets=m.lora.targets, rslora=m.lora.rslora)
    return model, tokenizer


def eval_prompts(recipe: Recipe, train_questions: set[str]):
    """Held-out prompts with gold answers for the generation eval; train questions are excluded."""
    data = recipe.data
    if recipe.generation_eval is None or data.eval is None:
        return None
    records = load_source(data.eval, "prompt", instruction=data.instruction, system_prompt=data.system_prompt)
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
                                     [r.prompt for r in prompts], [r.answer for r in prompts]]).encode()).hexdigest()[:32]
    path = cache_dir() / "generation_eval" / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    result = generation_eval(recipe, model, tokenizer, prompts)
    if distributed.is_main():
        atomic_write_text(path, json.dumps(result))
    return result


def load_iteration(recipe: Recipe, t: int):
    """(model, tokenizer) that iteration t (0-based) trains: the starting model with every earlier
    iteration's final weights folded in (LoRA: merged one after another; full: the last one), plus a fresh
    LoRA adapter. Rebuilt from the run folder, so a resumed run gets the very same model."""
    seed_everything(recipe.seed + t)  # the LoRA init draws from the global RNG
    if t == 0:
        return load_policy(recipe)
    from posttrain.pipeline import iteration_dir
    m = recipe.model
    model, tokenizer = load_start(m)
    finals = [final_model(iteration_dir(recipe.run_dir, i)) for i in range(t)]
    if any(f is None for f in finals):
        raise TrainingError(f"iteration {t + 1} needs the final model of every earlier iteration; "
                            f"{iteration_dir(recipe.run_dir, finals.index(None))} has no checkpoint")
    if m.lora is not None:
        for f in finals:
            model = apply_saved_adapter(model, f).merge_and_unload()
        model = apply_lora(model, r=m.lora.r, alpha=m.lora.alpha, dropout=m.lora.dropout,
                           targets=m.lora.targets, rslora=m.lora.rslora)
    else:
        load_weights_(model, finals[-1])
    return model, tokenizer


def final_model(folder: Path) -> Path | None:
    ckpt = latest_checkpoint(folder)
    return ckpt / "model" if ckpt is not None else None


def train_stage(ctx, spec, params, inputs: tuple[str, ...] = ()):
    """The training stage of an iteration: the method's build, the engine, the generation evals."""
    from posttrain.pipeline import StageDef, flat, select
    recipe, T, t = ctx.recipe, ctx.iterations, ctx.iteration

    def run() -> dict:
        model, tokenizer = ctx.policy()
        seed_everything(recipe.seed + t)  # whatever the stages before it drew
        built = spec.build(recipe, params, model, tokenizer, RunInfo(ctx.dir, t, T))
        out: dict = {"data": built.stats}
        prompts = None
        if recipe.generation_eval is not None:
            train_q = {prompt_text(r) for r in load_source(recipe.data.train, "prompt")} \
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
                from posttrain.pipeline import iteration_dir
                kw["optimizer_state"] = latest_checkpoint(iteration_dir(recipe.run_dir, t - 1)) / "optimizer.pt"
        engine = make_engine(recipe, built, model, tokenizer, run_dir=ctx.dir, show_progress=ctx.progress, **kw)
        result: TrainResult = engine.train(resume=True)
        out["train"] = {"steps": result.steps, "wall_time_s": round(result.wall_time, 1),
                        "processes": distributed.world(), "sharding": engine.sharding,
                        "final": result.final_metrics,
                        "checkpoint": str(result.checkpoint) if result.checkpoint else None}
        tokens = sum(h.get("tokens", 0) for h in result.history)
        step_time = sum(h.get("step_time", 0.0) for h in result.history)
        if step_time > 0:
            out["train"]["tokens_per_s"] = round(tokens / step_time, 1)
        if prompts and recipe.generation_eval.at_end and last_eval and result.history \
                and "eval/accuracy" in result.history[-1]:
            out["after"] = last_eval["result"]  # the engine's final evaluation already ran it on these weights
        elif prompts and recipe.generation_eval.at_end:
            out["after"] = generation_eval(recipe, engine.accelerator.unwrap_model(engine.model), tokenizer, prompts)
        return out

    return StageDef("train", select(flat(recipe.model_dump(mode="json"))), run,
                    outputs=["checkpoints", "metrics.jsonl", "tensorboard", "eval_before.json"], inputs=list(inputs),
                    parallel=True)


def run_recipe(recipe: Recipe, *, resume: bool = True, show_progress: bool = True,
               restart_from: str | None = None, until: str | None = None) -> dict:
    """Run a recipe's stages (see posttrain/pipeline.py) and return a summary (also <run_dir>/summary.json).

    resume=False redoes every stage; `restart_from` redoes that stage and everything after it; `until`
    stops after the named stage."""
    from posttrain.generation.sampler import use_backend
    from posttrain.pipeline import ALL, run_stages
    t_start = time.time()
    spec = get_method(recipe.method_name)
    params = validate_section(spec.params, recipe.method, f"recipe {recipe.name}: method")
    run_dir = recipe.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():
        atomic_write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))

    def stages_for(ctx):
        before = spec.stages(recipe, params, ctx) if spec.stages is not None else []
        if until is not None and any(until in (s.name, f"iter-{ctx.iteration + 1}/{s.name}") for s in before):
            return before
        # training reads the last data stage's first output (e.g. RSO's pairs.jsonl)
        return [*before, train_stage(ctx, spec, params, inputs=before[-1].outputs[:1] if before else ())]

    with use_backend(recipe.generation):  # every sampling stage and evaluation of the run
        per_iteration = run_stages(recipe, stages_for, lambda t: load_iteration(recipe, t),
                                   restart_from=restart_from if resume else ALL, until=until,
                                   progress=show_progress, final_model=final_model)
    last = per_iteration[-1]
    summary: dict = {"name": recipe.name, "method": spec.name, "model": recipe.model.name,
                     "lora": recipe.model.lora is not None, "seed": recipe.seed,
                     **last.get("train", {}), "stages": {k: v for k, v in last.items() if k != "train"}}
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
                  eval_data=built.eval_data, stage=built.stage, eval_fn=built.eval_fn, prepare=built.prepare,
                  tokenizer=tokenizer, show_progress=show_progress, **kw)


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
