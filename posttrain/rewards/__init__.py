"""Rewards behind one interface (see :mod:`posttrain.rewards.base`), looked up by name.

    reward = get_reward("math", correct=1.0, wrong=0.0)
    scores = reward.score(prompts, completions, meta=[{"answer": "72"}, ...])

Each name maps to a ``"module:Class"`` string imported only when asked for, so a reward whose module or
optional dependency is missing breaks only its own lookup, never ``import posttrain.rewards``.
"""
from __future__ import annotations

import importlib
import inspect

from posttrain.errors import RecipeError
from posttrain.rewards.base import Reward, check_batch, check_scores, meta_value

__all__ = ["REWARDS", "Reward", "check_batch", "check_scores", "get_reward", "meta_value", "score_checked"]

_REGISTRY: dict[str, str] = {
    "math": "posttrain.rewards.math:MathReward",
    "sentiment": "posttrain.rewards.sentiment:SentimentReward",
    "label": "posttrain.rewards.label:LabelReward",
    "reward_model": "posttrain.rewards.reward_model:RewardModelReward",
    "pairwise": "posttrain.rewards.pairwise:PairwiseReward",
    "cyclic": "posttrain.rewards.cyclic:CyclicPreference",
    "tool_call": "posttrain.rewards.tool_call:ToolCallReward",
}

#: The names ``get_reward`` knows, in registry order.
REWARDS: tuple[str, ...] = tuple(_REGISTRY)


def _load(name: str) -> type:
    return _load_path(_REGISTRY[name], name)


def _load_path(target: str, name: str | None = None) -> type:
    name = name or target
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RecipeError(f"reward '{name}' is not available: importing {module_name} failed ({e}); "
                          f"install the missing package") from e
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise RecipeError(f"reward '{name}': {module_name} has no {class_name}") from None


def get_reward(name: str, **options) -> Reward:
    """The reward registered as ``name``, built with ``options`` (its constructor's keyword arguments).

    Unknown names and bad options raise :class:`~posttrain.errors.RecipeError` naming the allowed values.
    """
    if ":" in name:  # a user's own reward class, "package.module:Class"
        cls = _load_path(name)
    elif name not in _REGISTRY:
        raise RecipeError(f"unknown reward '{name}'; known rewards: {', '.join(REWARDS)}, "
                          f"or 'package.module:Class' for your own")
    else:
        cls = _load(name)
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as e:
        allowed = [p for p in inspect.signature(cls).parameters if p not in ("args", "kwargs")]
        raise RecipeError(f"reward '{name}': bad options {sorted(options)} ({e}); "
                          f"allowed: {', '.join(allowed) or 'none'}") from None
    return cls(**options)


def score_checked(reward: Reward, prompts: list[str], completions: list[str],
                  meta: list[dict] | None = None) -> list[float]:
    """``reward.score(...)`` validated by :func:`check_scores` (one finite float per completion)."""
    return check_scores(reward.score(prompts, completions, meta), len(completions), reward.name)
