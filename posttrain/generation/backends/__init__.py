"""Sampling backends behind `posttrain.generation.sampler.sample`.

A backend is an object with
- `sample(prompts, params, *, prompt_ids, batch_size, progress, on_batch) -> (samples, stats)`, with the
  guarantees listed in posttrain.generation.sampler, and
- `set_policy(model)`: sample from these weights from now on (after a training iteration: new weights, or a
  LoRA adapter). The HF backend also notices by itself when the weights it decodes with are stale.

`backend_for(model, tokenizer, settings)` picks one: `hf` (posttrain.generation.backends.hf) samples with
the model in this process, on CPU or GPU; `vllm` (posttrain.generation.backends.vllm, the `posttrain[vllm]`
extra) hands the policy to a vLLM engine. `auto` takes vLLM when it is installed and the model is on a
GPU, else HF.
"""
from __future__ import annotations

import importlib.util
import weakref

from posttrain.errors import RecipeError

BACKENDS = ("auto", "hf", "vllm")
_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _vllm_usable(model) -> bool:
    try:
        device = next(model.parameters()).device
    except (StopIteration, AttributeError):
        return False
    return device.type == "cuda" and importlib.util.find_spec("vllm") is not None


def resolve(name: str, model) -> str:
    if name not in BACKENDS:
        raise RecipeError(f"generation.backend: unknown backend {name!r}; allowed: {', '.join(BACKENDS)}")
    if name == "auto":
        return "vllm" if _vllm_usable(model) else "hf"
    return name


def backend_for(model, tokenizer, settings):
    """The backend that samples from `model` under `settings`, made once per model and settings and
    pointed at the model's current weights."""
    name = resolve(settings.backend, model)
    per_model = _CACHE.setdefault(model, {})
    key = (name, settings)
    backend = per_model.get(key)
    if backend is None or backend.tokenizer is not tokenizer:
        if name == "hf":
            from posttrain.generation.backends.hf import HFBackend
            backend = HFBackend(model, tokenizer, decode_dtype=settings.decode_dtype)
        else:
            from posttrain.generation.backends.vllm import VLLMBackend
            backend = VLLMBackend(model, tokenizer, gpu_memory_utilization=settings.gpu_memory_utilization)
        per_model[key] = backend
    backend.set_policy(model)
    return backend


__all__ = ["BACKENDS", "backend_for", "resolve"]
