"""The pairwise reward's score: the logit inside the clip, saturating at max_logit."""
import pytest

from posttrain.rewards.pairwise import PairwiseReward


class _TableOracle:
    """A reward model stand-in: a fixed reward per completion text."""

    def __init__(self, table):
        self.table = table

    def score(self, prompts, completions, meta=None):
        return [self.table[c] for c in completions]


def test_pairwise_score_is_the_logit_inside_the_clip_and_saturates_at_max_logit():
    """RSO's pointwise reward logit P(y > y_b) clipped to +-max_logit. The trained-model check above may
    never reach the clip (its margins are whatever 30 steps give), so here both sides are set by hand.
    With a reward-model oracle P = sigma(r - r_b), and logit(sigma(d)) = d, so inside the clip the reward
    is d itself; at |d| = 30 > max_logit = 5 the probability is clipped to eps = 1 / (1 + e^5) (or 1 - eps),
    whose logit is log(eps / (1 - eps)) = log(e^-5) = -5 (or +5)."""
    table = {"base": 0.0, "awful": -30.0, "poor": -2.5, "same": 0.0, "good": 1.5, "great": 30.0}
    pw = PairwiseReward(oracle=_TableOracle(table), max_logit=5.0)
    completions = ["awful", "poor", "same", "good", "great"]
    got = pw.score(["q"] * 5, completions, [{"baseline": "base"}] * 5)
    assert got == pytest.approx([-5.0, -2.5, 0.0, 1.5, 5.0], abs=1e-9)
    # a wider clip lets the same margins through unchanged where they fit: -30 and 30 still saturate at 10
    wide = PairwiseReward(oracle=_TableOracle(table), max_logit=10.0)
    assert wide.score(["q"] * 5, completions, [{"baseline": "base"}] * 5) == pytest.approx(
        [-10.0, -2.5, 0.0, 1.5, 10.0], abs=1e-9)
