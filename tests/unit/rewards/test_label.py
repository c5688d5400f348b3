"""The RL4GLUE label reward (METHODS.md §4) on crafted completions: pure Python, no model."""
import pytest

from posttrain.data.labels import format_judgement, judgement_prediction, judgement_text
from posttrain.errors import DataError
from posttrain.rewards.label import LabelReward, judgement_reward

SST = ["Positive", "Negative"]
YN = ["Yes", "No"]
CB = ["Entailment", "Contradiction", "Neutral"]
COPA = ["Option one", "Option two"]


# ---------------------------------------------------------------- the rule, binary


@pytest.mark.parametrize("completion,expected", [
    ("Positive</Judgement>", 1.0),                      # the usual form after the pre-filled prefix
    ("<Judgement>Positive</Judgement>", 1.0),           # the prefix repeated / not pre-filled
    ("Negative</Judgement>", -1.0),                     # wrong
    ("<Judgement>Negative</Judgement>", -1.0),
    ("Positive", -3.0),                                 # no closing tag
    ("<Judgement>Positive", -3.0),
    # the closing tag is matched exactly, as in the paper's code
    ("Positive</judgement>", -3.0),
    ("Positive Negative</Judgement>", -3.0),            # both labels
    ("Positive or Negative?</Judgement>", -3.0),
    ("I am not sure</Judgement>", -3.0),                # neither
    ("</Judgement>", -3.0),                             # empty
    ("   positive  </Judgement>", 1.0),                 # whitespace and case
    ("\n POSITIVE.\n</Judgement>", 1.0),
    # only text before the tag counts
    (" Positive </Judgement> <Analysis>not Negative at all</Analysis>", 1.0),
    ("Positive</Judgement>Negative</Judgement>", 1.0),  # first closing tag only
    ("Positive, definitely positive!</Judgement>", 1.0),  # a repeated label counts once
    ("Positively</Judgement>", -3.0),                   # whole words only
])
def test_binary_rule(completion, expected):
    assert judgement_reward(completion, "Positive", SST) == expected


@pytest.mark.parametrize("completion,pred", [
    ("Yes</Judgement>", "Yes"),
    ("No</Judgement>", "No"),
    ("Not sure</Judgement>", None),          # "No" is not inside "Not" (the official substring test says No)
    ("Nothing to say, yes</Judgement>", "Yes"),
    ("Yesterday</Judgement>", None),
    ("Yes/No</Judgement>", None),
    ("yes, no</Judgement>", None),
    ("no.</Judgement>", "No"),
    ("Yes_no</Judgement>", None),            # joined by a word character: neither is a whole word
])
def test_word_boundaries(completion, pred):
    assert judgement_prediction(completion, YN) == pred


def test_prefilled_and_not_give_the_same_reward():
    for label in YN:
        for gold in YN:
            bare = judgement_reward(f"{label}</Judgement>", gold, YN)
            full = judgement_reward(format_judgement(label), gold, YN)
            assert bare == full == (1.0 if label == gold else -1.0)


def test_judgement_text():
    assert judgement_text("Yes</Judgement> tail") == "Yes"
    assert judgement_text("<Judgement> Yes </Judgement>").strip() == "Yes"
    assert judgement_text("Yes") is None
    assert format_judgement("Option one") == "<Judgement>Option one</Judgement>"


def test_custom_values():
    assert judgement_reward("Yes</Judgement>", "Yes", YN, correct=2, wrong=0, invalid=-5) == 2.0
    assert judgement_reward("No</Judgement>", "Yes", YN, correct=2, wrong=0, invalid=-5) == 0.0
    assert judgement_reward("Yes", "Yes", YN, correct=2, wrong=0, invalid=-5) == -5.0


# ---------------------------------------------------------------- 3-way and multi-word labels


@pytest.mark.parametrize("completion,gold,expected", [
    ("Entailment</Judgement>", "Entailment", 1.0),
    ("neutral</Judgement>", "Entailment", -1.0),
    ("Contradiction</Judgement>", "Contradiction", 1.0),
    ("Contradiction</Judgement>", "Neutral", -1.0),
    ("Entailment or Neutral</Judgement>", "Neutral", -3.0),
    ("Entailment, Contradiction, Neutral</Judgement>", "Neutral", -3.0),
    ("It is unclear</Judgement>", "Neutral", -3.0),
    ("Neutral", "Neutral", -3.0),
])
def test_three_way(completion, gold, expected):
    assert judgement_reward(completion, gold, CB) == expected


@pytest.mark.parametrize("completion,pred", [
    ("Option one</Judgement>", "Option one"),
    ("Option two</Judgement>", "Option two"),
    ("option  TWO</Judgement>", "Option two"),
    ("Option\none</Judgement>", "Option one"),
    ("Option one, not Option two</Judgement>", None),
    ("Option</Judgement>", None),
    ("one</Judgement>", None),
    ("Option three</Judgement>", None),
    ("Option oneself</Judgement>", None),
])
def test_copa_option_words(completion, pred):
    assert judgement_prediction(completion, COPA) == pred


def test_overlapping_labels_longest_wins():
    labels = ["Entailment", "Not entailment"]
    assert judgement_prediction("Not entailment</Judgement>", labels) == "Not entailment"
    assert judgement_prediction("not  entailment</Judgement>", labels) == "Not entailment"
    assert judgement_prediction("Entailment</Judgement>", labels) == "Entailment"
    assert judgement_prediction("Entailment, not entailment</Judgement>", labels) is None
    assert judgement_reward("Not entailment</Judgement>", "Entailment", labels) == -1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="not one of the label words"):
        judgement_reward("Yes</Judgement>", "Maybe", YN)
    with pytest.raises(ValueError, match="non-empty list"):
        judgement_prediction("Yes</Judgement>", "Yes")
    with pytest.raises(ValueError, match="listed twice"):
        judgement_prediction("Yes</Judgement>", ["Yes", "yes"])
    with pytest.raises(ValueError, match="non-empty strings"):
        judgement_prediction("Yes</Judgement>", ["Yes", " "])


# ---------------------------------------------------------------- LabelReward


def test_label_reward_batch():
    r = LabelReward()
    assert r.name == "label"
    completions = ["Yes</Judgement>", "No</Judgement>", "maybe", "Option two</Judgement>",
                   "Neutral</Judgement>"]
    meta = [{"label": "Yes", "labels": YN}, {"label": "Yes", "labels": YN}, {"label": "No", "labels": YN},
            {"label": "Option two", "labels": COPA}, {"label": "Entailment", "labels": CB}]
    assert r.score(["p"] * 5, completions, meta) == [1.0, -1.0, -3.0, 1.0, -1.0]
    r2 = LabelReward(correct=1, wrong=0, invalid=-1)
    assert r2.score(["p"] * 5, completions, meta) == [1.0, 0.0, -1.0, 1.0, 0.0]
    assert r.score([], [], []) == []


def test_label_reward_meta_errors():
    r = LabelReward()
    with pytest.raises(ValueError, match=r"meta\[1\] has no 'labels'"):
        r.score(["p", "p"], ["Yes</Judgement>"] * 2, [{"label": "Yes", "labels": YN}, {"label": "Yes"}])
    # also a DataError, like the other rewards
    with pytest.raises(DataError, match=r"meta\[0\] has no 'label'"):
        r.score(["p"], ["Yes</Judgement>"], [{"labels": YN}])
    with pytest.raises(ValueError, match="meta is None"):
        r.score(["p"], ["Yes</Judgement>"], None)
    with pytest.raises(ValueError, match=r"meta\[0\] must be a dict"):
        r.score(["p"], ["Yes</Judgement>"], ["Yes"])
    with pytest.raises(ValueError, match=r"meta\[0\]: gold label 'Maybe'"):
        r.score(["p"], ["Yes</Judgement>"], [{"label": "Maybe", "labels": YN}])
    with pytest.raises(ValueError, match="2 meta entries but 1 completions"):
        r.score(["p"], ["Yes</Judgement>"], [{"label": "Yes", "labels": YN}] * 2)
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        r.score(["p", "q"], ["Yes</Judgement>"], [{"label": "Yes", "labels": YN}])


def test_registry_lookup_when_available():
    rewards = pytest.importorskip("posttrain.rewards")
    if not hasattr(rewards, "get_reward"):
        pytest.skip("posttrain.rewards has no get_reward yet")
    r = rewards.get_reward("label", invalid=-2.0)
    assert isinstance(r, LabelReward)
    assert r.score(["p"], ["x"], [{"label": "Yes", "labels": YN}]) == [-2.0]
