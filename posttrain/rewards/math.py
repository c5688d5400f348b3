"""Verifiable math reward: ``correct`` when :func:`posttrain.data.answers.grade` accepts the completion.

The answer rule (which answers a completion commits to, hedges, equality by math-verify, thread safety)
lives in :mod:`posttrain.data.answers`, shared with evaluation so that the reward and the reported accuracy
agree.
"""
from __future__ import annotations

import math

from posttrain.data.answers import canonical_number, final_answers, gold_answer, grade
from posttrain.errors import DataError, RecipeError
from posttrain.rewards.base import check_batch, meta_value

__all__ = ["MathReward"]


class MathReward:
    """``correct`` when :func:`grade` accepts the completion against ``meta[i][answer_key]``, else ``wrong``.

    ``no_answer`` (default: ``wrong``) scores completions with no extractable answer, e.g. for a format
    penalty. ``timeout`` is math-verify's limit in seconds per step (main thread only; None disables).
    ``closeness`` > 0 gives a wrong numeric answer partial credit, ``wrong + closeness / (1 + |pred - gold|
    / (1 + |gold|))`` with the farthest committed ``pred``: a dense shaping for small models whose
    candidates are mostly wrong (a 0/1 reward ties most pairs); correctness is still what ``correct`` pays
    for.
    """

    name = "math"

    def __init__(self, correct: float = 1.0, wrong: float = 0.0, no_answer: float | None = None,
                 timeout: float | None = 5, answer_key: str = "answer", closeness: float = 0.0):
        for label, v in (("correct", correct), ("wrong", wrong), ("no_answer", no_answer)):
            try:
                ok = (label == "no_answer" and v is None) or math.isfinite(float(v))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise RecipeError(f"reward 'math': {label} must be a finite number, got {v!r}")
        self.correct, self.wrong = float(correct), float(wrong)
        self.no_answer = self.wrong if no_answer is None else float(no_answer)
        self.timeout, self.answer_key = timeout, answer_key
        if not (math.isfinite(float(closeness)) and closeness >= 0):
            raise RecipeError(f"reward 'math': closeness must be >= 0, got {closeness!r}")
        self.closeness = float(closeness)

    def _partial(self, answers: list[str], gold: str) -> float:
        """Credit for the farthest committed answer: a hedge earns no more than its worst guess."""
        try:
            g = float(canonical_number(gold) or "x")
            far = max(abs(float(canonical_number(a) or "x") - g) for a in answers)
        except ValueError:
            return self.wrong
        return self.wrong + self.closeness / (1.0 + far / (1.0 + abs(g)))

    def score(self, prompts: list[str], completions: list[str],
              meta: list[dict] | None = None) -> list[float]:
        check_batch(prompts, completions, meta, self.name, need_meta=True)
        scores = []
        for i, completion in enumerate(completions):
            gold = gold_answer(meta_value(meta, i, self.answer_key, self.name))
            if not gold:
                raise DataError(f"reward 'math': meta[{i}]['{self.answer_key}'] has no answer "
                                f"(empty, or nothing after '####')", field=self.answer_key)
            answers = final_answers(completion)
            if not answers:
                scores.append(self.no_answer)
            elif grade(completion, gold, timeout=self.timeout):
                scores.append(self.correct)
            else:
                scores.append(self._partial(answers, gold) if self.closeness else self.wrong)
        return scores
