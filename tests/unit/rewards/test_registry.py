"""The rewards registry and the shared checks of the Reward interface."""
from __future__ import annotations

import subprocess
import sys

import pytest

import posttrain.rewards as rewards
from posttrain.errors import DataError, RecipeError
from posttrain.rewards import (
    REWARDS,
    Reward,
    check_batch,
    check_scores,
    get_reward,
    meta_value,
    score_checked,
)


def test_known_names():
    assert REWARDS == ("math", "sentiment", "label", "reward_model", "pairwise", "cyclic", "tool_call")


def test_get_reward_math_and_sentiment():
    math = get_reward("math", correct=1.0, wrong=-1.0)
    assert isinstance(math, Reward) and math.name == "math"
    assert math.score(["q", "q"], [r"\boxed{0.5}", r"\boxed{2}"], [{"answer": r"\frac12"}] * 2) == [1.0, -1.0]
    sentiment = get_reward("sentiment")
    assert isinstance(sentiment, Reward) and sentiment.name == "sentiment"
    assert sentiment.score(["p"], ["What a wonderful, lovely day!"])[0] > 0.5


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(RecipeError) as e:
        get_reward("maths")
    message = str(e.value)
    assert "unknown reward 'maths'" in message
    for name in REWARDS:
        assert name in message


def test_bad_option_names_the_allowed_ones():
    with pytest.raises(RecipeError,
                       match="bad options.*allowed: correct, wrong, no_answer, timeout, answer_key"):
        get_reward("math", corect=1.0)


def test_missing_module_is_a_clear_error_and_does_not_break_the_package(monkeypatch):
    monkeypatch.setitem(rewards._REGISTRY, "ghost", "posttrain.rewards.no_such_module:Ghost")
    with pytest.raises(RecipeError, match="reward 'ghost' is not available"):
        get_reward("ghost")
    monkeypatch.setitem(rewards._REGISTRY, "ghost", "posttrain.rewards.base:NoSuchClass")
    with pytest.raises(RecipeError, match="has no NoSuchClass"):
        get_reward("ghost")


def test_import_is_lazy():
    """Importing the package imports no reward module (nor math-verify / VADER); checked in a fresh
    process."""
    code = ("import sys, posttrain.rewards; "
            "print(sorted(k for k in sys.modules "
            "if k.startswith(('posttrain.rewards.', 'math_verify', 'vaderSentiment'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['posttrain.rewards.base']"


def test_check_scores_accepts_finite_numbers():
    assert check_scores([1, 0.5, -2.0], 3, "r") == [1.0, 0.5, -2.0]
    assert check_scores((0.0,), 1, "r") == [0.0]
    assert check_scores([], 0, "r") == []


@pytest.mark.parametrize("scores,n,match", [
    ([1.0, float("nan")], 2, r"score\[1\] is nan, not finite"),
    ([float("inf")], 1, r"score\[0\] is inf, not finite"),
    ([float("-inf")], 1, "not finite"),
    ([1.0, 2.0], 3, "returned 2 scores for 3 completions"),
    ([1.0], 0, "returned 1 scores for 0 completions"),
    (["0.5"], 1, r"score\[0\] is str"),
    ([None], 1, r"score\[0\] is NoneType"),
    ([True], 1, r"score\[0\] is bool"),
    (1.0, 1, "returned float, not a list"),
])
def test_check_scores_rejects(scores, n, match):
    with pytest.raises(ValueError, match=match) as e:
        check_scores(scores, n, "my_reward")
    assert "my_reward" in str(e.value)


def test_score_checked_catches_a_broken_reward():
    class Broken:
        name = "broken"

        def score(self, prompts, completions, meta=None):
            return [float("nan")] * len(completions)

    assert isinstance(Broken(), Reward)
    with pytest.raises(ValueError, match="reward 'broken': score\\[0\\] is nan"):
        score_checked(Broken(), ["p"], ["c"])
    assert score_checked(get_reward("math"), ["p"], ["#### 3"], [{"answer": "3"}]) == [1.0]


def test_meta_helpers():
    assert meta_value([{"answer": "1"}], 0, "answer", "r") == "1"
    with pytest.raises(DataError, match=r"meta\[0\] has no 'label' \(keys: answer\)"):
        meta_value([{"answer": "1"}], 0, "label", "r")
    with pytest.raises(DataError, match=r"meta\[0\] must be a dict"):
        meta_value(["x"], 0, "label", "r")
    with pytest.raises(DataError, match="meta is None"):
        meta_value(None, 3, "label", "r")
    check_batch(["p"], ["c"], None, "r")
    with pytest.raises(DataError, match="needs meta"):
        check_batch(["p"], ["c"], None, "r", need_meta=True)
