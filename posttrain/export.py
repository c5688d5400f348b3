"""`posttrain export RUN OUT`: a run's checkpoint as a standalone model folder for tools without posttrain.

The policy is rebuilt exactly as training built it (recipe.yaml + `load_iteration`) and the checkpoint's
weights are loaded into it, so the export never depends on how a checkpoint happens to be laid out.
Merged (and every full fine-tune): a plain HF model folder for `AutoModelForCausalLM`. Unmerged LoRA:
the peft adapter folder for `PeftModel.from_pretrained` on the base, whose `base_model_name_or_path` names
the base so that it means the same elsewhere (`registry.base_model_id`: the embedded model's Hub id, a tiny
model's posttrain name, a folder's path as the recipe gave it). Both hold the tokenizer with its chat
template, `generation_config.json` (pad and eos ids set), a model card `README.md` (YAML front matter for the
Hub; base model and how to rebuild it, method, data, steps, final metrics, the recipe; `model_card`, pure)
and `export.json`, which says where the folder came from.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from posttrain.errors import PosttrainError
from posttrain.models.registry import base_model_source

EXPORT_INFO = "export.json"
CARD = "README.md"
GENERATION_CONFIG = "generation_config.json"
# per-step metrics that describe the machine, not the model: left out of the card
_MACHINE_METRICS = ("tokens_per_s", "step_time", "elapsed", "wall_time_s")


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
    from posttrain.models.io import name_adapter_base

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
    base = base_model_source(recipe.model.name)
    state = ckpt / "state.json"
    # names, not this machine's absolute paths: the folder is made to be published
    info = {"run": run.resolve().name, "checkpoint": ckpt.resolve().relative_to(run.resolve()).as_posix()
            if ckpt.resolve().is_relative_to(run.resolve()) else ckpt.name,
            "step": json.loads(state.read_text()).get("step") if state.is_file() else None,
            "base_model": recipe.model.name, "base_model_id": base["id"], "dtype": recipe.model.dtype,
            "format": "peft-adapter" if lora and not merge else "model",
            "lora": recipe.model.lora.model_dump() if recipe.model.lora is not None else None}
    card = model_card(card_facts(run, recipe, ckpt, t, info))
    with atomic_folder(out) as tmp:
        if lora and not merge:
            model.save_pretrained(tmp)
            name_adapter_base(tmp, base["id"])
            tokenizer.save_pretrained(tmp)
        else:
            merge_and_save(model, tokenizer, tmp)  # replaces the (empty) tmp folder whole
        generation_config(model, tokenizer).save_pretrained(tmp)
        (tmp / CARD).write_text(card)  # replaces the card peft writes
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=1) + "\n")
    return out


def generation_config(model, tokenizer):
    """The model's generation config (or one from its config) with pad / eos / bos ids filled in from the
    tokenizer where it has none, so `generate` on the export stops and pads as posttrain's sampling does."""
    import copy

    from transformers import GenerationConfig

    cfg = getattr(model, "generation_config", None)
    cfg = copy.deepcopy(cfg) if cfg is not None else GenerationConfig.from_model_config(model.config)
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        if getattr(cfg, key, None) is None and getattr(tokenizer, key, None) is not None:
            setattr(cfg, key, getattr(tokenizer, key))
    return cfg


def posttrain_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("posttrain")
    except PackageNotFoundError:  # run from a checkout that is not installed
        from posttrain import __version__
        return __version__


def _metrics_at(folder: Path, step: int | None) -> dict:
    """The metrics.jsonl line of `step` in the run (or iteration) folder `folder`; else its last line."""
    from posttrain.files import read_jsonl

    try:
        rows = read_jsonl(folder / "metrics.jsonl", missing="empty")
    except (OSError, ValueError):
        return {}
    row = next((r for r in reversed(rows) if r.get("step") == step), rows[-1] if rows else {})
    return {k: v for k, v in row.items() if k not in _MACHINE_METRICS and k != "step"}


def card_facts(run: Path, recipe, ckpt: Path, t: int, info: dict) -> dict:
    """Everything `model_card` renders, read from the run folder (recipe, checkpoint, metrics.jsonl,
    summary.json)."""
    summary_file = run / "summary.json"
    try:
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    except ValueError:
        summary = {}
    this = (summary.get("train") or {}).get("checkpoint")
    evaluation = {k: summary[k] for k in ("before", "after") if isinstance(summary.get(k), dict)} \
        if this and Path(this).resolve() == ckpt.resolve() else {}
    return {"base": {**base_model_source(recipe.model.name), "seed": recipe.model.seed},
            "format": info["format"], "lora": info["lora"] is not None, "method": recipe.method_name,
            "recipe": portable(recipe.model_dump(mode="json")), "step": info["step"], "iteration": t + 1,
            "iterations": recipe.pipeline.iterations,
            "metrics": _metrics_at(ckpt.parent.parent, info["step"]),
            "evaluation": evaluation, "version": posttrain_version()}


def portable(value):
    """`value` (a recipe as a dict) with every absolute path shortened to its last part: a model card is
    published, and the training machine's folders are nobody's business (nor of use elsewhere)."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, str) and Path(value).is_absolute():
        return Path(value).name
    return value


def _source(src: dict) -> str:
    if src.get("synthetic"):
        g = src["synthetic"]
        what = f"posttrain's synthetic `{g['task']}` task, n={g['n']}, seed={g.get('seed', 0)}"
        if g.get("options"):
            what += f", options {json.dumps(g['options'], sort_keys=True)}"
    elif src.get("nlu"):
        g = src["nlu"]
        what = f"the NLU task `{g['task']}`, split {g.get('split', 'train')}"
        what += "".join(f", {k}={g[k]}" for k in ("limit", "shots") if g.get(k))
    elif src.get("hub"):
        what = f"the Hub dataset `{src['hub']}`"
    else:
        what = f"the file `{src.get('path')}` (format {src.get('format', 'auto')})"
    return what + "".join(f", {k} {_fmt(src[k])}" for k in ("split", "columns", "skip", "limit", "share",
                                                            "count") if src.get(k))


def data_sources(data: dict) -> list[str]:
    """One line per data source of a recipe's `data` section (as a dict); a mixture's members indented."""
    lines = []
    for role in ("train", "eval"):
        src = data.get(role)
        if isinstance(src, list):  # a mixture as written in YAML
            src = {"mixture": src}
        if not src:
            continue
        if src.get("mixture"):
            lines.append(f"{role}: a mixture of")
            lines += [f"  - {_source(m)}" for m in src["mixture"]]
        else:
            lines.append(f"{role}: {_source(src)}")
    return lines


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def _base_section(base: dict, adapter: bool) -> tuple[str, str]:
    """(what the base model is, the Python that loads this export) for the card."""
    kind, ident = base["kind"], base["id"]
    folder = '"path/to/this/folder"'
    if kind == "embedded":
        text = (f"`{ident}`, as posttrain ships it (`{base['name']}`): the {base['gguf_precision']} GGUF "
                f"`{base['gguf']}`, with the weights dequantised from {base['gguf_precision']} to float32. "
                f"They are close to the Hub model's own weights but not equal to them (the quantisation "
                f"error), so the exact base is posttrain's: `{base['install']}` and "
                f"`load_model(\"{base['name']}\")`.")
        rebuild = (f'from posttrain.models import load_model\n\n'
                   f'base, tokenizer = load_model("{base["name"]}")  # the dequantised '
                   f'{base["gguf_precision"]} weights\n'
                   f'# or the original weights: AutoModelForCausalLM.from_pretrained("{ident}")')
    elif kind == "tiny":
        text = (f"`{ident}`: {base.get('description')}. A random-initialised test model that posttrain "
                f"builds; it is not on the Hub. Rebuild it exactly with posttrain: "
                f"`load_model(\"{ident}\", seed={base.get('seed', 0)})`.")
        rebuild = (f'from posttrain.models import load_model\n\n'
                   f'base, tokenizer = load_model("{ident}", seed={base.get("seed", 0)})')
    else:
        where = "the local folder" if kind == "folder" else "the Hub model"
        text = f"{where} `{ident}`" + (" (the path as the recipe gave it)." if kind == "folder" else ".")
        rebuild = (f'from transformers import AutoModelForCausalLM, AutoTokenizer\n\n'
                   f'base = AutoModelForCausalLM.from_pretrained("{ident}")\n'
                   f'tokenizer = AutoTokenizer.from_pretrained({folder})')
    if adapter:
        code = f"from peft import PeftModel\n{rebuild}\nmodel = PeftModel.from_pretrained(base, {folder})"
    else:
        code = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f"model = AutoModelForCausalLM.from_pretrained({folder})\n"
                f"tokenizer = AutoTokenizer.from_pretrained({folder})")
    return text, code


def model_card(facts: dict) -> str:
    """The export's README.md: YAML front matter (base_model, library_name, tags) and what was trained, on
    what, how, and how far. Pure: `facts` as `card_facts` returns them."""
    base, recipe, method = facts["base"], facts["recipe"], facts["method"]
    adapter = facts["format"] == "peft-adapter"
    front = {"base_model": base["id"], "library_name": "peft" if adapter else "transformers",
             "tags": ["posttrain", method], "pipeline_tag": "text-generation"}
    what = ("A LoRA adapter (peft)" if adapter else
            "A model (LoRA merged into the weights)" if facts.get("lora") else "A full fine-tune")
    base_text, code = _base_section(base, adapter)
    steps = facts.get("step")
    iters = facts.get("iterations", 1)
    trained = f"{steps} optimisation steps" if steps is not None else "an unknown number of steps"
    if iters > 1:
        trained += f" in iteration {facts.get('iteration', 1)} of {iters}"
    train = recipe.get("train", {})
    model = recipe.get("model", {})
    params = {k: v for k, v in recipe.get("method", {}).items() if k != "name"}
    settings = [f"method: `{method}`" + (f" ({_fmt(params)})" if params else ""),
                f"weights: {model.get('dtype', 'float32')}, "
                + (f"LoRA {_fmt(model['lora'])}" if model.get("lora") else "all parameters trained"),
                *(f"{k}: {_fmt(train[k])}" for k in ("optimizer", "lr", "schedule", "warmup_steps",
                                                     "micro_batch_size", "grad_accum", "max_steps", "epochs",
                                                     "precision") if train.get(k) is not None),
                f"seed: {recipe.get('seed', 0)}"]
    if model.get("adapter"):
        settings.append(f"started from the base with the adapter `{model['adapter']}` merged in")
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
             f"# {recipe.get('name', 'posttrain run')}", "",
             f"{what} trained from `{base['id']}` with posttrain {facts.get('version', '?')} "
             f"by `{method}` (recipe `{recipe.get('name')}`), {trained}.", "",
             "## Base model", "", base_text, "",
             "## How to load", "", "```python", code, "```", "",
             "## Training", "", *(f"- {s}" for s in settings), "",
             "Data:", "",
             *(s if s.startswith(" ") else f"- {s}" for s in data_sources(recipe.get("data", {}))), ""]
    if facts.get("metrics"):
        lines += [f"## Final metrics (step {steps})", "", "| metric | value |", "| --- | --- |",
                  *(f"| {k} | {_fmt(v)} |" for k, v in facts["metrics"].items()), ""]
    for when, result in (facts.get("evaluation") or {}).items():
        lines += [f"## Evaluation {'before training' if when == 'before' else 'after training'}", "",
                  "```json", json.dumps(result, indent=1, sort_keys=True, default=str), "```", ""]
    lines += ["## Recipe", "", "```yaml", yaml.safe_dump(recipe, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)
