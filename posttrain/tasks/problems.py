"""The :class:`Problem` record and small helpers shared by the synthetic task generators.

Used by :mod:`posttrain.tasks.synthetic` (arithmetic, registry, splits) and
:mod:`posttrain.tasks.word_problems`; kept apart so neither imports the other's internals in a cycle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class Problem:
    """One generated problem.

    ``answer`` is exact and canonical (``"42"``, ``"-7"``); ``solution`` is the gold step-by-step solution
    ending with the line ``"The answer is {answer}."``; ``meta`` holds JSON-serialisable details
    (``equations`` as ``[a, op, b, result]`` lists, the template name, ...).
    """

    question: str
    answer: str
    solution: str
    task: str
    meta: dict = field(default_factory=dict, hash=False)  # hashable: the hash skips meta

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "solution": self.solution,
                "task": self.task, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Problem":
        return cls(question=d["question"], answer=str(d["answer"]), solution=d["solution"],
                   task=d.get("task", ""), meta=dict(d.get("meta") or {}))


# --------------------------------------------------------------------------------------------------
# helpers

def int_range(value: int | Sequence[int], name: str, lo_min: int,
              hi_max: int | None = None) -> tuple[int, int]:
    """Accept ``k`` or ``(lo, hi)``; return a validated inclusive ``(lo, hi)``."""
    if isinstance(value, int):
        lo = hi = value
    else:
        try:
            lo, hi = (int(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an int or a (low, high) pair, got {value!r}") from None
    if lo > hi or lo < lo_min or (hi_max is not None and hi > hi_max):
        bound = f"{lo_min} <= low <= high" + (f" <= {hi_max}" if hi_max is not None else "")
        raise ValueError(f"{name} must satisfy {bound}, got {value!r}")
    return lo, hi


def apply_op(a: int, op: str, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0 or a % b:
            raise ArithmeticError(f"inexact division {a} / {b}")
        return a // b
    raise ValueError(f"unknown operator {op!r}")


def check_seed(seed: Any) -> None:
    if seed is None or isinstance(seed, float):
        raise ValueError(f"seed must be an int (or str), got {seed!r}: generators are always seeded")


def example_count(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    return n
