"""The answer module: extraction, the hedge rule, exact matching and grading, as evaluation uses them."""
from __future__ import annotations

import json
import re

import pytest

from posttrain.data.answers import (
    accuracy,
    answers_match,
    extract_answer,
    final_answers,
    grade,
    normalize_answer,
)
from posttrain.eval import generation
from tests.data_helpers import require_data


@pytest.mark.parametrize("text,expected", [
    # \boxed{...}: last one wins, braces balanced, content normalised
    (r"so \boxed{12} then \boxed{13}", "13"),
    (r"The answer is 7. Final: $\boxed{\frac{3}{4}}$", "3/4"),
    (r"\boxed{-\frac{1}{2}}", "-1/2"),
    (r"\boxed{1,234}", "1234"),
    (r"\boxed{x = 5}", "5"),
    (r"\boxed{50\%}", "50"),
    (r"\boxed{\$3.50}", "3.5"),
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"\boxed{\text{Monday}}", "Monday"),
    (r"\fbox{8}", "8"),
    (r"\boxed{1} then \boxed{2", "1"),
    (r"\boxed{a{b}c}", "a{b}c"),
    (r"broken \boxed{12 and the answer is 4", "4"),  # unbalanced box is ignored
    # GSM8K
    ("Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18", "18"),
    ("#### 1,234", "1234"),
    ("#### -5\nmore text 99", "-5"),
    ("#### $70,000", "70000"),
    # the answer is / answer:
    ("The answer is 42.", "42"),
    ("the answer is: -3", "-3"),
    ("Answer: $1,234.50", "1234.5"),
    ("answer = 007", "7"),
    ("The answer is 3/4.", "3/4"),
    ("The answer is 5. Check: 2 + 3 = 5 and 10 more steps 11", "5"),
    ("The answer is 4. Hmm, no. The answer is 6 apples.", "6"),
    ("The final answer is 12 dollars, I think 13 was wrong", "12"),
    ("The answer is 2.00", "2"),
    ("The answer is 0.500", "0.5"),
    ("The answer is 50%.", "50"),
    ("The answer is \u22127", "-7"),  # unicode minus
    ("The answer is unclear; maybe 9", "9"),  # no number after the phrase: fall back to the last number
    # last number
    ("I computed 3 + 4 = 7", "7"),
    ("It costs $5.", "5"),
    ("Total: 1,000,000 people", "1000000"),
    ("temperature went to -12 degrees", "-12"),
    ("10-5", "5"),  # subtraction, not a negative number
    ("(-4)", "-4"),
    ("so x = .25", "0.25"),
    ("3.50", "3.5"),
    ("It is 12.", "12"),
    # nothing
    ("no number here", None),
    ("", None),
    (None, None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_is_the_last_committed_answer():
    text = "answer: 1\n#### 2\n\\boxed{3}\n4"
    assert final_answers(text) == ["1", "2", "3"]
    assert extract_answer(text) == "3"
    assert extract_answer("answer: 1\n#### 2\n4") == "2"
    assert extract_answer("The answer is 1.\n4") == "1"
    assert extract_answer("1 then 4") == "4"


@pytest.mark.parametrize("raw,expected", [
    ("1,234", "1234"), ("12.0", "12"), ("12.00", "12"), ("3.50", "3.5"), ("$5", "5"), ("7.", "7"),
    ("50%", "50"), ("-0", "0"), ("+8", "8"), ("0012", "12"), (".5", "0.5"), ("-3.10", "-3.1"),
    (r"\frac{1}{2}", "1/2"), (r"\dfrac{6}{8}", "6/8"), ("  Paris. ", "Paris"), ("$x$", "x"),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize("pred,gold", [
    ("42", "42"), ("42.0", "42"), ("1,234", "1234"), ("0.5", "1/2"), ("1/2", "0.50"), (r"\frac{1}{2}", "0.5"),
    ("6/8", "3/4"), ("-3", "-3.00"), ("$5", "5"), ("50%", "50"), (" Paris ", "paris"), ("x = 4", "4"),
    ("1e3", "1000"),
])
def test_answers_match(pred, gold):
    assert answers_match(pred, gold)
    assert answers_match(gold, pred)


@pytest.mark.parametrize("pred,gold", [
    ("42", "43"), ("-3", "3"), ("0.33", "1/3"), ("Paris", "London"), (None, "1"), ("1", None), ("", "0"),
    ("12", "1/2"),
])
def test_answers_do_not_match(pred, gold):
    assert not answers_match(pred, gold)


def test_rel_tol():
    assert not answers_match("0.333", "1/3")
    assert answers_match("0.333", "1/3", rel_tol=1e-2)
    # by hand: |0.333 - 1/3| = 1/3000, over max(|p|, |g|) = 1/3 gives a relative error of exactly 1e-3, so
    # a tolerance of 2e-3 accepts it and 5e-4 does not (without this side, "any tol > 0 matches" passed)
    assert answers_match("0.333", "1/3", rel_tol=2e-3)
    assert not answers_match("0.333", "1/3", rel_tol=5e-4)
    assert not answers_match("0.3", "1/3", rel_tol=1e-2)   # relative error 0.1
    # 1/100
    assert answers_match("99", "100", rel_tol=0.011) and not answers_match("99", "100", rel_tol=0.009)


def test_accuracy():
    completions = ["... The answer is 12.", "I get \\boxed{5}", "#### 7", "no idea", None]
    golds = ["12", "6", "7.0", "3", "1"]
    assert [grade(c, g) for c, g in zip(completions, golds)] == [True, False, True, False, False]
    assert accuracy(completions, golds) == pytest.approx(2 / 5)
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        accuracy(["1"], ["1", "2"])


# ----------------------------------------------------------------------------------------- the hedge rule

@pytest.mark.parametrize("text,expected", [
    ("the answer is 3 or maybe 4", ["3", "4"]),
    ("The answer is either 3 or 4.", ["3", "4"]),
    ("The answer is 3 OR 4", ["3", "4"]),
    (r"\boxed{3 \text{ or } 4}", ["3", "4"]),
    ("The answer is $3$ or $4$.", ["3", "4"]),
    ("The answer is 12 (or 12.0)", ["12", "12"]),
    ("The answer is 3/4?", ["3/4"]),                             # a fraction, not two answers
    (r"\boxed{1, -2}", ["1, -2"]),                               # a list is one answer
    ("The answer is 3 apples for 4 people", ["3"]),
    ("The answer is 3, or so I think", ["3"]),                    # words alone commit to nothing
    ("We check the answer: so our answer is correct. \\boxed{5}", ["5"]),
    (r"\boxed{3} so the answer is 3.", ["3", "3"]),
    ("\\boxed{3}\nHmm, the answer is 4", ["3", "4"]),
    ("The answer is 4. Hmm, no. The answer is 6 apples.", ["6"]),  # a lead-in to the next marker on its line
    (r"The answer is $2 + 3 = \boxed{5}$.", ["5"]),
    (r"Final Answer: The final answer is $\boxed{5}$. I hope it is correct.", ["5"]),
    ("Final Answer: The final answer is 5. I hope it is correct.", ["5"]),
    (r"\boxed{\boxed{3}}", ["3"]),                                # nested boxes count once
    ("I think 3 or 4", ["4"]),                                    # no marker: the last number
    ("The answer is:\n42", ["42"]),                              # a marker with nothing: the last number
])
def test_final_answers(text, expected):
    assert final_answers(text) == expected


HEDGES = [  # (completion, gold, correct)
    ("the answer is 3 or maybe 4", "3", False),
    ("the answer is 3 or maybe 4", "4", False),
    ("The answer is either 3 or 4.", "3", False),
    (r"\boxed{3 \text{ or } 4}", "4", False),
    ("\\boxed{3}\nThe answer is 4", "3", False),
    ("\\boxed{3}\nThe answer is 3.", "3", True),
    ("#### 3\n#### 4", "3", False),
    ("The answer is 3/4?", "0.75", True),
    ("The answer is 12 (or 12.0)", "12", True),
    ("The answer is 3 apples for 4 people.", "3", True),
    (r"The answer is $2 + 3 = \boxed{5}$.", "5", True),
    (r"Final Answer: The final answer is $\boxed{\frac{1}{2}}$.", "0.5", True),
    ("The answer is 0.5, or equivalently $\\frac{1}{2}$.", "1/2", True),
    ("I think 3 or 4", "4", True),                                # no marker: the last number decides
    ("no answer at all", "3", False),
]


@pytest.mark.parametrize("completion,gold,correct", HEDGES)
def test_a_completion_is_right_only_when_every_committed_answer_is(completion, gold, correct):
    assert grade(completion, gold) is correct


def test_eval_accuracy_grades_hedges_as_wrong(monkeypatch):
    completions = [c for c, _, _ in HEDGES]
    monkeypatch.setattr(generation, "generate_chat", lambda model, tok, prompts, **kw: completions)
    prompts = [[{"role": "user", "content": "q"}]] * len(HEDGES)
    out = generation.answer_accuracy(None, None, prompts, [g for _, g, _ in HEDGES])
    assert [s["correct"] for s in out["samples"]] == [ok for _, _, ok in HEDGES]
    assert out["accuracy"] == pytest.approx(sum(ok for _, _, ok in HEDGES) / len(HEDGES))
    assert out["no_answer_rate"] == pytest.approx(1 / len(HEDGES))
    assert accuracy(completions, [g for _, g, _ in HEDGES]) == out["accuracy"]


# ----------------------------------------------------------------------------------------- real data

def test_gsm8k_gold_answers_are_extracted():
    path = require_data("gsm8k", "test.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        gold = row["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert extract_answer(row["answer"]) == gold
        # without the #### line, the last equation's result is usually the answer
    stripped = [re.sub(r"<<[^>]*>>", "", r["answer"].rsplit("####", 1)[0]) for r in rows]
    hits = sum(answers_match(extract_answer(s), r["answer"].rsplit("####", 1)[1]) for s, r in zip(stripped,
                                                                                                  rows))
    assert hits / len(rows) > 0.9


def test_math500_numeric_answers_are_extracted_from_solutions():
    path = require_data("math500", "test.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    numeric = [r for r in rows if re.fullmatch(r"-?\d+(\.\d+)?|\\frac\{\d+\}\{\d+\}", r["answer"].strip())]
    assert len(numeric) > 250
    for r in numeric:
        assert answers_match(extract_answer(r["solution"]), r["answer"]), (r["solution"][-200:], r["answer"])


def test_a_last_number_that_is_no_number_gives_no_answer_not_a_crash():
    # "5/0" matches the number pattern but is not a number; found in a GSM8K generation (IFT experiment)
    from posttrain.data.answers import extract_answer, final_answers, grade
    assert final_answers("so the rate is 5/0") == []
    assert extract_answer("so the rate is 5/0") is None
    assert grade("so the rate is 5/0", "5") is False
