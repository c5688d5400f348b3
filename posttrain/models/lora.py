"""LoRA adapters via peft. With an adapter, the frozen base *is* the reference model of DPO/PPO-style
methods (adapter disabled), so no second copy of the weights is needed."""
from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Iterator, Sequence

import torch

from posttrain.errors import ModelError
from posttrain.files import atomic_folder

_PARALLEL_WRAPPERS = ("DistributedDataParallel", "FullyShardedDataParallel", "DataParallel",
                      "DeepSpeedEngine")


def unwrap(model):
    """The model inside DDP/FSDP/DeepSpeed (`.module`) or torch.compile (`._orig_mod`) wrappers.

    By class name, not `hasattr(model, "module")`: a PeftModel forwards unknown attributes to the model
    it wraps and must itself not be unwrapped.
    """
    while True:
        if type(model).__name__ in _PARALLEL_WRAPPERS:
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model


def is_lora(model) -> bool:
    from peft import PeftModel

    return isinstance(unwrap(model), PeftModel)


def apply_lora(model, *, r: int = 8, alpha: float = 16, dropout: float = 0.0,
               targets: Sequence[str] | str = ("q_proj", "k_proj", "v_proj", "o_proj"),
               rslora: bool = False, seed: int | None = None):
    """Wrap `model` in a peft LoRA adapter; only adapter weights stay trainable.

    `targets` is a list of module-name suffixes or "all-linear" (every linear layer except the output head).
    `seed` makes the random init of the A matrices reproducible without touching the global RNG stream;
    B starts at zero, so the wrapped model initially computes exactly what the base model does.
    `model` itself is modified (peft injects the adapter layers into it) and must not be used separately.
    """
    from peft import LoraConfig, get_peft_model

    if is_lora(model):
        raise ModelError("the model already has a LoRA adapter; apply_lora expects a plain model")
    if isinstance(targets, str):
        target_modules = targets if targets == "all-linear" else [targets]
    else:
        target_modules = list(targets)
    if target_modules != "all-linear":
        check_targets(model, target_modules)
    config = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=dropout,
                        target_modules=target_modules, use_rslora=rslora)
    try:
        with torch.random.fork_rng(devices=[], enabled=seed is not None), warnings.catch_warnings():
            # peft calls a transformers method deprecated in v5; the user can do nothing about it
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            if seed is not None:
                torch.manual_seed(seed)
            return get_peft_model(model, config)
    except ValueError as e:  # e.g. no module matches the targets
        raise ModelError(f"cannot apply LoRA with targets {targets!r}: {e}") from e


def linear_names(model) -> list[str]:
    """The distinct last names of the model's linear layers (q_proj, ..., lm_head): what LoRA targets name."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if name and isinstance(module, torch.nn.Linear)})


def check_targets(model, targets: Sequence[str]) -> None:
    """Every LoRA target names a module (its full name, or a suffix after a dot, as peft matches them);
    refused before peft, with the names that exist, instead of peft's error from deep inside."""
    names = [name for name, _ in unwrap(model).named_modules() if name]
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        raise ModelError(f"model.lora.targets: {', '.join(map(repr, unmatched))} "
                         f"{'matches' if len(unmatched) == 1 else 'match'} no module of the model; its "
                         f"linear layers are {', '.join(linear_names(unwrap(model)))} (or use all-linear)")


@contextlib.contextmanager
def reference_model(model) -> Iterator[torch.nn.Module]:
    """Yield `model` with its LoRA adapter switched off: the frozen base, i.e. the reference policy.

    Raises ModelError for a model without an adapter; the caller then keeps a `frozen_copy` instead.
    """
    if not is_lora(model):
        raise ModelError("reference_model needs a LoRA model (apply_lora); use frozen_copy(model) for a "
                         "full fine-tune")
    with unwrap(model).disable_adapter():
        yield model


def frozen_copy(model) -> torch.nn.Module:
    """An independent copy in eval mode with no gradients: the reference model for a full fine-tune."""
    ref = copy.deepcopy(unwrap(model))
    ref.eval()
    ref.requires_grad_(False)
    return ref


def merged_copy(model) -> torch.nn.Module:
    """A plain HF model with the adapter folded into the weights; the training model is left untouched."""
    model = unwrap(model)
    if not is_lora(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def merge_and_save(model, tokenizer, out_dir: str | os.PathLike) -> None:
    """Save a plain HF folder (safetensors + tokenizer) loadable without peft, written atomically.

    A LoRA model is merged into a copy (twice the weights in memory for a moment) rather than merged and
    unmerged in place, which would leave rounding residue in the weights being trained.
    """
    merged = merged_copy(model)
    with atomic_folder(out_dir) as tmp:
        merged.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
