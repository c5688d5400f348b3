"""Model weights inside training checkpoints: save, and load back in place for an exact resume.

A LoRA checkpoint holds only the adapter (a few MB); the frozen base is rebuilt from the model name, which
its adapter_config.json gives as `base_model_name_or_path` (`registry.base_model_id`: a name that means the
same on another machine, never null or a path in this machine's cache).
Loading goes into the existing model object so the optimizer, which holds references to its parameters,
stays valid.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from posttrain.distributed import place_like
from posttrain.errors import ModelError
from posttrain.files import atomic_folder
from posttrain.models.lora import is_lora, unwrap

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FULL_WEIGHTS = "model.safetensors"
FULL_INDEX = "model.safetensors.index.json"
# LoRA settings that change what the weights mean; a mismatch would load "fine" and silently train wrong.
_LORA_FIELDS = ("r", "lora_alpha", "use_rslora", "target_modules")
# The attribute `load_model` sets on the models it loads: the base's name for adapter_config.json. Not peft's
# own `name_or_path`, which peft's save_pretrained would look up on the Hub at every checkpoint.
BASE_MODEL_ATTR = "posttrain_base_model"


def base_model_of(model) -> str | None:
    """The base model's name that `load_model` recorded on `model` (or the model inside its wrappers)."""
    for module in unwrap(model).modules():
        name = module.__dict__.get(BASE_MODEL_ATTR)
        if name:
            return name
    return None


def name_adapter_base(directory: str | os.PathLike, base: str) -> None:
    """Write `base` as the `base_model_name_or_path` of the adapter_config.json in `directory`."""
    path = Path(directory) / ADAPTER_CONFIG
    cfg = json.loads(path.read_text())
    cfg["base_model_name_or_path"] = base
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights are counted once."""
    params = list(unwrap(model).parameters())  # parameters() yields a shared tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def save_weights(model, directory: str | os.PathLike, *, tokenizer=None,
                 state_dict: dict | None = None) -> None:
    """Adapter only for a LoRA model, full weights otherwise; safetensors, written atomically.

    A full model is saved with save_pretrained, so the folder is also a loadable HF model (config included;
    tied embeddings are stored once); with `tokenizer` (and its chat template) it is a complete one, for
    AutoTokenizer too. `load_weights_` reads only the safetensors, so the tokenizer files never interfere.
    `state_dict`: the model's whole state (a sharded model's, gathered), saved instead of its own tensors.
    An adapter's config names its base as `load_model` recorded it (`base_model_of`).
    """
    model = unwrap(model)
    with atomic_folder(directory) as tmp:
        if state_dict is None:
            model.save_pretrained(tmp)
        else:  # a tied tensor once, under its first name, as save_pretrained stores it from the model
            seen: set[int] = set()
            dropped = set()
            for name, p in model.named_parameters(remove_duplicate=False):
                if id(p) in seen:
                    dropped.add(name)
                seen.add(id(p))
            model.save_pretrained(tmp, state_dict={k: v for k, v in state_dict.items() if k not in dropped})
        base = base_model_of(model)
        if base is not None and (tmp / ADAPTER_CONFIG).is_file():
            name_adapter_base(tmp, base)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)


def load_weights_(model, directory: str | os.PathLike) -> None:
    """Load weights saved by `save_weights` into `model` in place; ModelError if they do not fit it.

    Every name and shape is checked before anything is copied, so a mismatch never leaves the model
    half-overwritten.
    """
    directory = Path(directory)
    model = unwrap(model)
    if not directory.is_dir():
        raise ModelError(f"cannot load weights: {directory} is not a folder")
    own = getattr(type(model), "load_weights_", None)  # wrappers with extra weights (scalar heads)
    if callable(own):
        return own(model, directory)
    if (directory / ADAPTER_CONFIG).is_file():
        _load_adapter(model, directory)
    elif (directory / FULL_WEIGHTS).is_file() or (directory / FULL_INDEX).is_file():
        if is_lora(model):
            raise ModelError(f"{directory} holds full model weights but the model has a LoRA adapter; "
                             f"was the checkpoint written by a run without LoRA?")
        _load_full(model, directory)
    else:
        raise ModelError(f"{directory} holds no weights ({ADAPTER_WEIGHTS} or {FULL_WEIGHTS} expected)")


def _read_safetensors(files: list[Path]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    return state


def _check(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], directory: Path,
           optional: set[str] = frozenset()) -> None:
    missing = sorted(set(expected) - set(found) - optional)
    unexpected = sorted(set(found) - set(expected))
    wrong = [f"{k}: saved {tuple(found[k].shape)}, model {tuple(expected[k].shape)}"
             for k in sorted(set(found) & set(expected)) if found[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"{len(wrong)} with other shapes (e.g. {'; '.join(wrong[:3])})")
    if problems:
        raise ModelError(f"the weights in {directory} do not match this model: " + "; ".join(problems)
                         + ". Was the checkpoint written for another model or LoRA setting?")


def _load_adapter(model, directory: Path) -> None:
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    if not is_lora(model):
        raise ModelError(f"{directory} holds a LoRA adapter but the model has none; apply_lora with the "
                         f"run's settings first")
    saved_cfg = json.loads((directory / ADAPTER_CONFIG).read_text())
    live_cfg = model.peft_config[model.active_adapter].to_dict()
    for field in _LORA_FIELDS:
        saved, live = saved_cfg.get(field), live_cfg.get(field)
        if field == "target_modules" and not isinstance(saved, str) and not isinstance(live, str):
            saved, live = sorted(saved or []), sorted(live or [])
        if saved != live:
            raise ModelError(f"the LoRA adapter in {directory} has {field}={saved!r} but the model has "
                             f"{field}={live!r}")
    if not (directory / ADAPTER_WEIGHTS).is_file():
        raise ModelError(f"{directory} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}")
    state = _read_safetensors([directory / ADAPTER_WEIGHTS])
    _check(state, get_peft_model_state_dict(model), directory)
    set_peft_model_state_dict(model, state)


def _tied_aliases(model) -> dict[str, set[str]]:
    """name -> all names of the same parameter (e.g. lm_head.weight <-> model.embed_tokens.weight)."""
    by_tensor: dict[int, set[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_tensor.setdefault(id(p), set()).add(name)
    return {n: names for names in by_tensor.values() for n in names}


def _load_full(model, directory: Path) -> None:
    if (directory / FULL_INDEX).is_file():
        weight_map = json.loads((directory / FULL_INDEX).read_text())["weight_map"]
        files = [directory / f for f in sorted(set(weight_map.values()))]
    else:
        files = [directory / FULL_WEIGHTS]
    state = _read_safetensors(files)
    expected = model.state_dict()
    aliases = _tied_aliases(model)
    # save_pretrained stores a tied tensor under one of its names; the others are filled by the tie
    optional = {k for k in expected if any(a in state for a in aliases.get(k, ()) if a != k)}
    _check(state, expected, directory, optional)
    with torch.no_grad():  # under FSDP the model's tensors are shards
        model.load_state_dict(place_like(state, expected), strict=False)


def apply_saved_adapter(model, directory: str | os.PathLike):
    """`model` wrapped with the LoRA adapter saved in `directory` (its settings read from the folder)."""
    from posttrain.models.lora import apply_lora

    directory = Path(directory)
    try:
        cfg = json.loads((directory / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"no readable LoRA adapter in {directory}: {e}") from None
    model = apply_lora(model, r=cfg["r"], alpha=cfg["lora_alpha"], targets=cfg["target_modules"],
                       rslora=cfg.get("use_rslora", False))
    load_weights_(model, directory)
    return model
