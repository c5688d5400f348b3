"""The models a run starts from: the starting model (`model.name` with `model.adapter` merged in), the
policy to train, and iteration t's model rebuilt from the run folder."""
from __future__ import annotations

from pathlib import Path

from posttrain.checkpoints import iteration_dir, latest_checkpoint
from posttrain.config import Recipe
from posttrain.errors import RecipeError, TrainingError
from posttrain.models.io import apply_saved_adapter, load_weights_
from posttrain.models.lora import apply_lora
from posttrain.models.registry import load_model
from posttrain.seeding import seed_everything


def adapter_folder(path: str) -> Path:
    """A LoRA folder: the path itself, its model/, or a run's latest checkpoint's model/."""
    p = Path(path)
    for cand in (p, p / "model"):
        if (cand / "adapter_config.json").is_file():
            return cand
    ckpt = latest_checkpoint(p)
    if ckpt is not None and (ckpt / "model" / "adapter_config.json").is_file():
        return ckpt / "model"
    raise RecipeError(f"model.adapter: no LoRA adapter at {path} "
                      f"(nor in model/ or checkpoints/step-*/model/)")


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


def load_iteration(recipe: Recipe, t: int):
    """(model, tokenizer) that iteration t (0-based) trains: the starting model with every earlier
    iteration's final weights folded in (LoRA: merged one after another; full: the last one), plus a fresh
    LoRA adapter. Rebuilt from the run folder, so a resumed run gets the very same model."""
    seed_everything(recipe.seed + t)  # the LoRA init draws from the global RNG
    if t == 0:
        return load_policy(recipe)
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
