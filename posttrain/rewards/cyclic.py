"""A deliberately non-transitive pairwise oracle: rock-paper-scissors over the length of a response.

A response falls in one of three classes by its word count, with `bounds` = (a, b): short (< a words),
medium (a to b - 1), long (>= b). The preference is a cycle,

                 short   medium  long
        short     0.5     1.0     0.0
        medium    0.0     0.5     1.0
        long      1.0     0.0     0.5

(row preferred to column): short beats medium, medium beats long, long beats short, and within a class
the oracle is indifferent. No response is best against every other, and no Bradley-Terry reward
reproduces the matrix; its Nash equilibrium puts 1/3 on each class. Length is observable and the
embedded model moves it easily, so a policy's class mix (and its win rate against another policy) can be
read off its samples. `P(y1 > y2) = M[class(y1), class(y2)]`.
"""
from __future__ import annotations

from posttrain.rewards.base import check_batch

CLASSES = ("short", "medium", "long")
MATRIX = ((0.5, 1.0, 0.0), (0.0, 0.5, 1.0), (1.0, 0.0, 0.5))


class CyclicPreference:
    name = "cyclic"

    def __init__(self, bounds: tuple[int, int] | list[int] = (20, 40)):
        a, b = bounds
        if not 0 < a < b:
            raise ValueError(f"cyclic oracle: bounds must be 0 < a < b word counts, got {list(bounds)}")
        self.bounds = (int(a), int(b))

    def category(self, text: str) -> int:
        n = len(text.split())
        return 0 if n < self.bounds[0] else 1 if n < self.bounds[1] else 2

    def compare(self, prompts: list[str], first: list[str], second: list[str],
                meta: list[dict] | None = None) -> list[float]:
        """P(first[i] preferred over second[i])."""
        if not (len(prompts) == len(first) == len(second)):
            raise ValueError("compare: prompts, first and second must have the same length")
        return [MATRIX[self.category(x)][self.category(y)] for x, y in zip(first, second)]

    def score(self, prompts: list[str], completions: list[str],
              meta: list[dict] | None = None) -> list[float]:
        check_batch(prompts, completions, meta, self.name)
        raise ValueError("the cyclic oracle is pairwise only (no pointwise reward reproduces a cycle): "
                         "use it as `oracle: {kind: pairwise, name: cyclic}`")
