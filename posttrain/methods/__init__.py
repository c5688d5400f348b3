"""Method registry: a method = data prep + objective (+ rollout stage) on the shared engine."""
from __future__ import annotations

from posttrain.contracts import Built, MethodSpec
from posttrain.errors import RecipeError
from posttrain.methods import dapo_step, ift, inpo, ppo, preference, reward_model, rso, sft, tool_sft

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (sft.SPEC, ift.SPEC, *preference.SPECS,
                                                               reward_model.SPEC, rso.SPEC, *inpo.SPECS,
                                                               ppo.SPEC, dapo_step.SPEC, tool_sft.SPEC)}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise RecipeError(f"method.name: unknown method {name!r}; allowed: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "get_method", "Built", "MethodSpec"]
