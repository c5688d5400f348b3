"""Sentiment reward: VADER's compound polarity of the completion, in [-1, 1].

VADER (Hutto & Gilbert, ICWSM 2014) is a lexicon and rule-based scorer that ships its lexicon, so it
runs offline with no model. Only the completion is scored, never the prompt. One analyser is built per
process (loading the lexicon takes ~0.1 s) and shared; scoring only reads it, so threads may share it.
"""
from __future__ import annotations

import functools

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from posttrain.errors import RecipeError
from posttrain.rewards.base import check_batch

__all__ = ["SentimentReward", "analyzer", "compound"]


@functools.lru_cache(maxsize=1)
def analyzer() -> SentimentIntensityAnalyzer:
    """The process-wide VADER analyser."""
    return SentimentIntensityAnalyzer()


def compound(text: str) -> float:
    """VADER compound score of ``text``: -1 (most negative) .. 0 (neutral) .. +1 (most positive)."""
    return float(analyzer().polarity_scores(text or "")["compound"])


class SentimentReward:
    """VADER compound score of each completion; ``target="negative"`` flips the sign (reward negativity)."""

    name = "sentiment"

    def __init__(self, target: str = "positive"):
        if target not in ("positive", "negative"):
            raise RecipeError(f"reward 'sentiment': target must be 'positive' or 'negative', got {target!r}")
        self.target = target
        self._sign = 1.0 if target == "positive" else -1.0

    def score(self, prompts: list[str], completions: list[str],
              meta: list[dict] | None = None) -> list[float]:
        check_batch(prompts, completions, meta, self.name)
        return [self._sign * compound(c) for c in completions]
