"""Run a recipe: load the model, let the method build its data and objective, train, evaluate, report."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import yaml

from posttrain.config import Recipe, validate_section
from posttrain.data.sources import load_source, prompt_text
from posttrain.engine import Engine, TrainResult, seed_everything
from posttrain.eval.generation import answer_accuracy
from posttrain.eval.report import atomic_write_text
from posttrain.methods import get_method
from posttrain.errors import RecipeError
from posttrain.models import apply_lora, cache_dir, load_model
from posttrain.models.fingerprint import weights_hash
from posttrain.models.io import apply_saved_adapter


def adapter_folder(path: str) -> Path:
    """A LoRA folder: the path itself, its model/, or a run's latest checkpoint's model/."""
    p = Path(path)
    for cand in (p, p / "model"):
        if (cand / "adapter_config.json").is_file():
            return cand
    ckpts = sorted((p / "checkpoints").glob("step-*")) if (p / "checkpoints").is_dir() else []
    if ckpts and (ckpts[-1] / "model" / "adapter_config.json").is_file():
        return ckpts[-1] / "model"
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
    atomic_write_text(path, json.dumps(result))
    return result


def run_recipe(recipe: Recipe, *, resume: bool = True, show_progress: bool = True) -> dict:
    """Train as the recipe says and return a summary (also written to <run_dir>/summary.json)."""
    t_start = time.time()
    seed_everything(recipe.seed)
    spec = get_method(recipe.method_name)
    params = validate_section(spec.params, recipe.method, f"recipe {recipe.name}: method")
    run_dir = recipe.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))

    t0 = time.time()
    model, tokenizer = load_policy(recipe)
    load_time = time.time() - t0
    built = spec.build(recipe, params, model, tokenizer)
    summary: dict = {"name": recipe.name, "method": spec.name, "model": recipe.model.name,
                     "lora": recipe.model.lora is not None, "seed": recipe.seed,
                     "load_time_s": round(load_time, 2), "data": built.stats}

    prompts = None
    if recipe.generation_eval is not None:
        train_q = {prompt_text(r) for r in load_source(recipe.data.train, "prompt")} \
            if recipe.data.train.synthetic is not None else set()
        prompts = eval_prompts(recipe, train_q)
    if prompts and recipe.generation_eval.at_start:
        summary["before"] = starting_eval(recipe, model, tokenizer, prompts)
        atomic_write_text(run_dir / "eval_before.json", json.dumps(summary["before"], indent=1))

    engine = make_engine(recipe, built, model, tokenizer, show_progress=show_progress)
    result: TrainResult = engine.train(resume=resume)
    summary["train"] = {"steps": result.steps, "wall_time_s": round(result.wall_time, 1),
                        "final": result.final_metrics,
                        "checkpoint": str(result.checkpoint) if result.checkpoint else None}
    tokens = sum(h.get("tokens", 0) for h in result.history)
    step_time = sum(h.get("step_time", 0.0) for h in result.history)
    if step_time > 0:
        summary["train"]["tokens_per_s"] = round(tokens / step_time, 1)
    if prompts and recipe.generation_eval.at_end:
        summary["after"] = generation_eval(recipe, engine.accelerator.unwrap_model(engine.model), tokenizer, prompts)
    summary["wall_time_s"] = round(time.time() - t_start, 1)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    return summary


def make_engine(recipe: Recipe, built, model, tokenizer, *, run_dir: Path | None = None,
                show_progress: bool = True) -> Engine:
    """The engine for what a method built: the one place a method's parts are wired to the loop."""
    return Engine(built.model if built.model is not None else model, built.objective, built.train_data,
                  built.collate, recipe.train, run_dir=run_dir or recipe.run_dir, seed=recipe.seed,
                  eval_data=built.eval_data, stage=built.stage, eval_fn=built.eval_fn, prepare=built.prepare,
                  tokenizer=tokenizer, show_progress=show_progress)


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
