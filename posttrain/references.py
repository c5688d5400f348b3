"""References by meaning: which model a KL or a log-ratio is taken against.

- `base`: the model the recipe names, before any adapter it starts from (`model.adapter`).
- `start`: the model the run starts from: the base with `model.adapter` merged in (e.g. the SFT model
  PPO starts from, as in RL4GLUE's code). Without `model.adapter` it is the base.
- `previous`: the model the current iteration starts from (INPO's pi_t, DAPO's next pi_ref). In a run of
  one iteration it is `start`.

How it is computed is separate from what it is. A LoRA policy starts every iteration from a model with the
earlier adapters merged and a fresh adapter on top (identity at init), so whenever the wanted reference is
the model the current iteration starts from, it is the policy with its adapter switched off: no second
copy. Otherwise a frozen model is built (a copy of the policy for a full fine-tune, or a fresh load).
"""
from __future__ import annotations

from posttrain.contracts import REFERENCES, Reference
from posttrain.models import frozen_copy, is_lora, unwrap
from posttrain.models.start import load_start


def resolve_reference(kind: str, policy, model_settings, iteration: int = 0, *,
                      live: bool = True) -> Reference:
    """The `kind` reference for `policy` (the model being trained, as built for `iteration`, 0-based).

    `live=False`: the reference is only used before the first update (precomputed log-probs), so a full
    fine-tune whose reference is its own start is scored with the policy itself, without a copy."""
    if kind not in REFERENCES:
        raise ValueError(f"unknown reference {kind!r}; allowed: {', '.join(REFERENCES)}")
    is_iteration_start = (kind == "previous" or (kind == "start" and iteration == 0)
                          or (kind == "base" and iteration == 0 and model_settings.adapter is None))
    if is_iteration_start:
        if is_lora(policy):
            return Reference(kind, None)
        return Reference(kind, frozen_copy(policy) if live else unwrap(policy))
    model, _ = load_start(model_settings, with_adapter=kind == "start")
    return Reference(kind, frozen_copy(model))
