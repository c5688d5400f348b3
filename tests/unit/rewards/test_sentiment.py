"""Sentiment reward: VADER compound of the completion, checked against VADER itself and its lexicon."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import vaderSentiment.vaderSentiment as vader_module
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from posttrain.errors import RecipeError
from posttrain.rewards import check_scores
from posttrain.rewards.sentiment import SentimentReward, analyzer, compound
from tests.data_helpers import require_data

POSITIVE = "I absolutely love this movie, it is wonderful and amazing!"
NEGATIVE = "This is terrible, awful and I hate it. Worst day ever."
NEUTRAL = "The meeting is at 3 pm in room 12."


def _score(texts: list[str], **options) -> list[float]:
    return SentimentReward(**options).score(["prompt"] * len(texts), texts)


def test_positive_negative_neutral():
    pos, neg, neu = _score([POSITIVE, NEGATIVE, NEUTRAL])
    assert pos > 0.5
    assert neg < -0.5
    assert neu == pytest.approx(0.0, abs=0.05)


def test_equals_a_fresh_analysers_compound():
    texts = [POSITIVE, NEGATIVE, NEUTRAL, "", "The food was not good.", "I love it :)", "not bad at all",
             "GREAT!!!", "It was good, but the ending was horrible.", "meh"]
    fresh = SentimentIntensityAnalyzer()  # an independent instance, not the reward's cached one
    assert _score(texts) == [fresh.polarity_scores(t)["compound"] for t in texts]


@pytest.mark.parametrize("word", ["good", "hate", "wonderful", "awful"])
def test_single_word_compound_follows_the_lexicon_formula(word):
    """Independent of VADER's code: compound = v / sqrt(v^2 + 15) for a one-word text of valence v."""
    lexicon = Path(vader_module.__file__).with_name("vader_lexicon.txt").read_text(encoding="utf-8")
    valence = next(float(line.split("\t")[1]) for line in lexicon.splitlines() if line.split("\t")[0] == word)
    assert compound(word) == pytest.approx(valence / math.sqrt(valence * valence + 15), abs=1e-4)


def test_mixed_batch_in_order_and_in_range():
    texts = [NEUTRAL, POSITIVE, NEGATIVE, POSITIVE, "", NEGATIVE]
    scores = _score(texts)
    assert check_scores(scores, len(texts), "sentiment") == scores
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert scores[1] == scores[3] > 0.5 and scores[2] == scores[5] < -0.5
    assert scores[0] == scores[4] == 0.0
    assert _score([]) == []


def test_only_the_completion_is_scored():
    r = SentimentReward()
    assert r.score([NEGATIVE], [POSITIVE]) == r.score([POSITIVE], [POSITIVE]) == [compound(POSITIVE)]


def test_negative_target_flips_the_sign():
    assert _score([POSITIVE, NEGATIVE], target="negative") == [-s for s in _score([POSITIVE, NEGATIVE])]
    with pytest.raises(RecipeError, match="target must be 'positive' or 'negative'"):
        SentimentReward(target="happy")


def test_one_cached_analyser_and_length_checks():
    assert analyzer() is analyzer()
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        SentimentReward().score(["a", "b"], [POSITIVE])
    with pytest.raises(ValueError, match="2 meta entries but 1 completions"):
        SentimentReward().score(["a"], [POSITIVE], [{}, {}])


def test_sst2_dev_positive_sentences_score_higher():
    """On real SST-2 dev sentences, VADER separates the labels (well, not perfectly: it is a lexicon)."""
    path = require_data("sst2", "dev.tsv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(rows) == 872
    scores = _score([r["sentence"] for r in rows])
    pos = [s for s, r in zip(scores, rows) if r["label"] == "1"]
    neg = [s for s, r in zip(scores, rows) if r["label"] == "0"]
    assert sum(pos) / len(pos) > sum(neg) / len(neg) + 0.2
    decided = [(s > 0) == (r["label"] == "1") for s, r in zip(scores, rows) if s != 0]
    assert sum(decided) / len(decided) > 0.6
