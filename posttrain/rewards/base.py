"""The one interface every reward implements, and the checks shared by all of them.

A reward scores a batch: ``score(prompts, completions, meta) -> list[float]``, one finite float per
completion. ``meta[i]`` carries what example ``i`` needs beyond its text (the gold ``"answer"`` for math,
the ``"label"`` / ``"labels"`` for label match, ...). Rewards that need nothing from meta accept ``None``.
"""
from __future__ import annotations

import math
from typing import Any, Protocol, Sequence, runtime_checkable

from posttrain.errors import DataError

__all__ = ["Reward", "check_batch", "check_scores", "meta_value"]


@runtime_checkable
class Reward(Protocol):
    """A scorer of completions. ``name`` is its registry name (``"math"``, ``"sentiment"``, ...)."""

    name: str

    def score(self, prompts: list[str], completions: list[str],
              meta: list[dict] | None = None) -> list[float]:
        """One finite float per completion, in order."""
        ...


def check_batch(prompts: Sequence[str], completions: Sequence[str], meta: Sequence[dict] | None,
                name: str, *, need_meta: bool = False) -> None:
    """Raise a clear ``ValueError`` / ``DataError`` when the three lists do not line up."""
    if len(prompts) != len(completions):
        raise ValueError(f"reward '{name}': {len(prompts)} prompts but {len(completions)} completions")
    if meta is None:
        if need_meta and completions:
            raise DataError(f"reward '{name}' needs meta (one dict per completion), got None")
        return
    if len(meta) != len(completions):
        raise ValueError(f"reward '{name}': {len(meta)} meta entries but {len(completions)} completions")


def meta_value(meta: Sequence[dict] | None, i: int, key: str, name: str) -> Any:
    """``meta[i][key]``, or a ``DataError`` naming the reward, the index and the missing key."""
    if meta is None:
        raise DataError(f"reward '{name}' needs meta[{i}]['{key}'], but meta is None", field=key)
    entry = meta[i]
    if not isinstance(entry, dict):
        raise DataError(f"reward '{name}': meta[{i}] must be a dict, got {type(entry).__name__}", field=key)
    if key not in entry or entry[key] is None:
        have = ", ".join(sorted(map(str, entry))) or "none"
        raise DataError(f"reward '{name}': meta[{i}] has no '{key}' (keys: {have})", field=key)
    return entry[key]


def check_scores(scores: Any, n: int, name: str) -> list[float]:
    """Validate a reward's output: a list of ``n`` finite floats. Returns it as ``list[float]``.

    Raises ``ValueError`` naming the reward and the first offending index (wrong length, not a number,
    NaN or infinite).
    """
    try:
        values = list(scores)
    except TypeError:
        raise ValueError(f"reward '{name}' returned {type(scores).__name__}, not a list of floats") from None
    if len(values) != n:
        raise ValueError(f"reward '{name}' returned {len(values)} scores for {n} completions")
    out: list[float] = []
    for i, s in enumerate(values):
        if isinstance(s, (bool, str, bytes)) or not hasattr(s, "__float__"):  # bools: map to floats yourself
            raise ValueError(f"reward '{name}': score[{i}] is {type(s).__name__} ({s!r}), not a number")
        try:
            f = float(s)
        except (TypeError, ValueError) as e:
            raise ValueError(f"reward '{name}': score[{i}] ({s!r}) is not a single number: {e}") from None
        if not math.isfinite(f):
            raise ValueError(f"reward '{name}': score[{i}] is {f}, not finite")
        out.append(f)
    return out
