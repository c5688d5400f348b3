"""`posttrain export RUN OUT`: a run's checkpoint as a standalone model folder for tools without posttrain.

The policy is rebuilt exactly as training built it (recipe.yaml + `load_iteration`) and the checkpoint's
weights are loaded into it, so the export never depends on how a checkpoint happens to be laid out.
Merged (and every full fine-tune): a plain HF model folder for `AutoModelForCausalLM`. Unmerged LoRA:
the peft adapter folder for `PeftModel.from_pretrained` on the base. Both hold the tokenizer with its chat
template, and `export.json` says where the folder came from.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from posttrain.errors import PosttrainError

EXPORT_INFO = "export.json"


class ExportError(PosttrainError):
    """The run or checkpoint cannot be exported, or the output folder is in the way."""


def _checkpoint(run: Path, checkpoint: str | os.PathLike | None) -> Path:
    from posttrain.checkpoints import latest_checkpoint

    if checkpoint is None:
        ckpt = latest_checkpoint(run)
        if ckpt is None:
            raise ExportError(f"{run} has no checkpoint in checkpoints/step-*; train it first (a run saves "
                              f"one every train.save_every steps and at the end)")
    else:  # a path, or a checkpoint's name inside the run
        ckpt = next((p for p in (Path(checkpoint), run / "checkpoints" / checkpoint) if p.is_dir()), None)
        if ckpt is None:
            raise ExportError(f"checkpoint {checkpoint} is neither a folder nor in {run / 'checkpoints'}")
    if ckpt.name == "model" and not (ckpt / "model").is_dir():
        ckpt = ckpt.parent
    if not (ckpt / "model").is_dir():
        raise ExportError(f"{ckpt} has no model/ folder: not a checkpoint written by posttrain train")
    return ckpt


def load_run(run: str | os.PathLike, checkpoint: str | os.PathLike | None = None):
    """(model in eval mode, tokenizer, recipe, checkpoint folder, iteration): the run's latest checkpoint
    (or `checkpoint`), its policy rebuilt as training built it. An iterated run's model is its last
    finished iteration's. What `posttrain export` writes and `posttrain eval --run` evaluates."""
    from posttrain.checkpoints import iteration_dir, latest_checkpoint
    from posttrain.config import Recipe, validate_section
    from posttrain.models import load_weights_, unwrap
    from posttrain.models.start import load_iteration
    from posttrain.models.value_head import HEAD_CONFIG, ScalarHeadModel

    run = Path(run)
    recipe_file = run / "recipe.yaml"
    if not recipe_file.is_file():
        raise ExportError(f"{run} is not a run folder: no recipe.yaml (written by posttrain train)")
    try:
        raw = yaml.safe_load(recipe_file.read_text())
    except yaml.YAMLError as e:
        raise ExportError(f"{recipe_file}: not valid YAML: {e}") from None
    recipe = validate_section(Recipe, raw, str(recipe_file))
    done = [t for t in range(recipe.pipeline.iterations)
            if latest_checkpoint(iteration_dir(run, t)) is not None]
    ckpt = _checkpoint(iteration_dir(run, done[-1]) if done and checkpoint is None else run, checkpoint)
    k = re.fullmatch(r"iter-(\d+)", ckpt.parent.parent.name)
    t = int(k.group(1)) - 1 if k else 0

    model, tokenizer = load_iteration(recipe, t)
    folder = ckpt / "model"
    if (folder / HEAD_CONFIG).is_file():  # PPO policy with value head, or reward model: keep the LM
        model = ScalarHeadModel(model, info=json.loads((folder / HEAD_CONFIG).read_text()))
        load_weights_(model, folder)
        model = model.lm
    else:
        load_weights_(model, folder)
    return unwrap(model).eval(), tokenizer, recipe, ckpt, t


def export_run(run: str | os.PathLike, out: str | os.PathLike, merge: bool = False,
               checkpoint: str | os.PathLike | None = None, *, force: bool = False) -> Path:
    """Write the run's latest checkpoint (or `checkpoint`) to `out`, atomically; returns `out`.

    `merge` folds a LoRA adapter into the weights; a full fine-tune is always a plain model. An existing
    non-empty `out` is refused unless `force` (then it is replaced whole).
    """
    from posttrain.files import atomic_folder
    from posttrain.models import is_lora, merge_and_save

    run, out = Path(run), Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} exists and is not empty; choose another folder or pass --force "
                          f"to replace it")
    model, tokenizer, recipe, ckpt, t = load_run(run, checkpoint)

    lora = is_lora(model)
    if lora and not merge and (recipe.model.adapter is not None or t > 0):
        raise ExportError(f"the run trained this LoRA on {recipe.model.name} with earlier weights merged in "
                          f"(model.adapter or earlier iterations), so the adapter alone does not apply "
                          f"to the base model; export with --merge")
    state = ckpt / "state.json"
    info = {"run": str(run.resolve()), "checkpoint": str(ckpt.resolve()),
            "step": json.loads(state.read_text()).get("step") if state.is_file() else None,
            "base_model": recipe.model.name, "dtype": recipe.model.dtype,
            "format": "peft-adapter" if lora and not merge else "model",
            "lora": recipe.model.lora.model_dump() if recipe.model.lora is not None else None}
    with atomic_folder(out) as tmp:
        if lora and not merge:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        else:
            merge_and_save(model, tokenizer, tmp)  # replaces the (empty) tmp folder whole
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=1) + "\n")
    return out
