"""Math reward: committed answers, equivalence (math-verify), the reward (and its agreement with eval
accuracy), real GSM8K / MATH-500, threads."""
from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import posttrain.data.answers as answers
from posttrain.data.answers import final_answers, gold_answer, math_equal
from posttrain.errors import DataError, RecipeError
from posttrain.eval import generation
from posttrain.rewards import check_scores
from posttrain.rewards.math import MathReward
from tests.data_helpers import require_data


def _jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------------------- extraction

@pytest.mark.parametrize("text,expected", [
    (r"so \boxed{12} then \boxed{13}", ["12", "13"]),              # every box commits
    (r"Final: $\boxed{\frac{3}{4}}$.", [r"\frac{3}{4}"]),          # boxed stays raw LaTeX
    (r"\boxed{\left[2, 5\right)}", [r"\left[2, 5\right)"]),
    (r"\boxed{a{b}c}", ["a{b}c"]),
    ("She pays 3 + 4 = <<3+4=7>>7.\n#### 1,234", ["1234"]),      # GSM8K, commas dropped
    ("#### $18.", ["18"]),
    ("#### 18 apples", ["18"]),
    ("#### 1\n#### 2", ["1", "2"]),
    (r"The answer is $3\sqrt{2}$.", [r"3\sqrt{2}"]),
    (r"The final answer is \(\dfrac{1}{2}\)", [r"\dfrac{1}{2}"]),
    (r"The answer is: $\text{Evelyn}$", [r"\text{Evelyn}"]),
    ("The answer is: Evelyn", []),                               # words alone are no answer
    ("The answer is 18 apples.", ["18"]),
    ("answer = -4", ["-4"]),
    ("x = 3, then y = 4.5", ["4.5"]),                            # no marker: the last number
    ("no numbers at all", []),
    ("", []),
    (None, []),
])
def test_final_answers(text, expected):
    assert final_answers(text) == expected


def test_gold_answer_takes_the_part_after_the_last_hashes():
    assert gold_answer("She has 3 ducks.\n#### 1,003") == "1,003"
    assert gold_answer(r"  \frac{1}{2} ") == r"\frac{1}{2}"
    assert gold_answer("72") == "72"
    assert gold_answer(72) == "72"


# ----------------------------------------------------------------------------------------- equivalence

EQUIVALENT = [  # (pred, gold)
    ("0.5", r"\frac{1}{2}"), ("1/2", r"\frac{1}{2}"), (r"\dfrac{1}{2}", r"\frac{1}{2}"), (r"\tfrac12", "0.5"),
    (r"\frac12", "1/2"), ("1.25", r"\frac54"), ("5/4", "1.25"), (r"\frac{7}{2}", "3.5"), (r"3\frac{1}{2}",
                                                                                          r"\frac72"),
    (r"2\sqrt{2}", r"\sqrt{8}"), (r"\sqrt{8}", r"2\sqrt{2}"), (r"\sqrt{117}", r"3\sqrt{13}"), (r"11\sqrt{2}",
                                                                                               r"11\sqrt2"),
    (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}"), (r"\frac{3\sqrt{3}}{4}", r"\frac{3}{4}\sqrt{3}"),
    (r"2^{1/2}", r"\sqrt{2}"),
    ("[2, 5)", "[2,5)"), (r"\left[2,5\right)", "[2,5)"), (r"x \in [2,5)", "[2,5)"), (r"(-\infty, 3]",
                                                                                     r"(-\infty,3]"),
    (r"(2,\infty)\cup(-\infty,1)", r"(-\infty, 1) \cup (2, \infty)"),
    (r"(3,\frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)"), (r"\pi/2", r"\frac{\pi}{2}"),
    ("-2,1", "1,-2"), (r"\{1,-2\}", "1,-2"), ("6-5i", "6 - 5i"),
    ("x=5", "5"), ("5", "x=5"), ("1,234", "1234"), ("1234", "1,234"), ("1000.0", "1000"), (r"10^{3}", "1000"),
    ("50", r"50\%"), (r"\$18.90", "18.90"), ("18.9", r"\$18.90"), ("90", r"90^\circ"),
    ("Evelyn", r"\text{Evelyn}"), ("C", r"\text{(C)}"), ("-p+q", "q-p"), ("(x+1)^2", "x^2+2x+1"),
    ("52_8", "52_8"), ("52_{8}", "52_8"), ("52", "52_8"),
    ("72", "She has 3 ducks.\n#### 72"),  # a GSM8K gold is cut to what follows its last ####
]

NOT_EQUIVALENT = [
    ("0.5", r"\frac{1}{3}"), ("0.33", r"\frac{1}{3}"), (r"\frac{1}{2}", "2"), (r"\sqrt{2}", "2"),
    (r"2\sqrt{3}", r"\sqrt{8}"), (r"13\sqrt{3}", r"3\sqrt{13}"), ("(2,5)", "[2,5)"), ("[2,5]", "[2,5)"),
    ("73", "72"), ("-72", "72"), ("p-q", "q-p"), (r"\text{Bob}", r"\text{Evelyn}"), ("x^2", "x^3"),
    (r"(3,\pi)", r"(3,\frac{\pi}{2})"), ("(1,2)", "(2,1)"), ("1,2", "1,-2"), (r"\frac{1}{2}",
                                                                              r"\frac{1}{2}x"),
    ("42", "52_8"), ("52_9", "52_8"),  # math-verify alone drops the base subscript: 52_9 == 52_8 there
    ("", "1"), (None, "1"), ("1", None), ("1", ""),
]


@pytest.mark.parametrize("pred,gold", EQUIVALENT)
def test_equivalent_forms_match(pred, gold):
    assert math_equal(pred, gold)


@pytest.mark.parametrize("pred,gold", NOT_EQUIVALENT)
def test_different_answers_do_not_match(pred, gold):
    assert not math_equal(pred, gold)


@pytest.mark.parametrize("pred,gold", [p for p in EQUIVALENT if "_" not in p[1]])
def test_equivalence_does_not_need_the_exact_fast_path(pred, gold, monkeypatch):
    """With the exact-match shortcut off, math-verify alone still accepts every equivalent pair."""
    monkeypatch.setattr(answers, "answers_match", lambda p, g: False)
    assert math_equal(pred, gold)


def test_math_verify_failure_falls_back_to_the_exact_check(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("math-verify exploded")
    monkeypatch.setattr(answers, "_verify", broken)
    answers._parse.cache_clear()
    assert math_equal("1,000", "1000")              # the exact check still decides
    assert not math_equal("0.5", r"\frac{1}{3}")
    assert not math_equal(r"2\sqrt{2}", r"\sqrt{8}")  # needs symbolic help, which failed: wrong, no crash


# ----------------------------------------------------------------------------------------- the reward

def test_reward_scores_and_options():
    completions = [r"We get $\boxed{0.5}$.", "#### 73", "I do not know.", "The answer is $2\\sqrt{2}$."]
    meta = [{"answer": r"\frac{1}{2}"}, {"answer": "Work.\n#### 72"}, {"answer": "3"},
            {"answer": r"\sqrt{8}"}]
    prompts = ["q"] * 4
    assert MathReward().score(prompts, completions, meta) == [1.0, 0.0, 0.0, 1.0]
    r = MathReward(correct=2.0, wrong=-1.0, no_answer=-2.0)
    scores = r.score(prompts, completions, meta)
    assert scores == [2.0, -1.0, -2.0, 2.0]
    assert check_scores(scores, 4, r.name) == scores
    assert MathReward().score([], [], []) == []
    assert MathReward(answer_key="gold").score(["q"], ["#### 4"], [{"gold": 4}]) == [1.0]


def test_missing_answer_names_the_index_and_key():
    with pytest.raises(DataError, match=r"meta\[1\] has no 'answer'") as e:
        MathReward().score(["a", "b"], ["1", "2"], [{"answer": "1"}, {"question": "?"}])
    assert e.value.field == "answer"
    with pytest.raises(DataError, match="needs meta"):
        MathReward().score(["a"], ["1"], None)
    with pytest.raises(DataError, match=r"meta\[0\]\['answer'\] has no answer"):
        MathReward().score(["a"], ["1"], [{"answer": "Work only.\n#### "}])


def test_mismatched_lengths_and_bad_options():
    with pytest.raises(ValueError, match="2 meta entries but 1 completions"):
        MathReward().score(["a"], ["1"], [{"answer": "1"}, {"answer": "2"}])
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        MathReward().score(["a", "b"], ["1"], [{"answer": "1"}])
    with pytest.raises(RecipeError, match="correct must be a finite number"):
        MathReward(correct=float("nan"))
    with pytest.raises(RecipeError, match="wrong must be a finite number"):
        MathReward(wrong="bad")


HEDGED = [  # (completion, gold): each names the gold among other answers
    ("the answer is 3 or maybe 4", "3"), ("The answer is either 3 or 4.", "4"), (r"\boxed{3 \text{ or } 4}",
                                                                                 "3"),
    ("\\boxed{3}\nSo the answer is 4.", "3"), ("#### 3\n#### 4", "4"),
    (r"$\boxed{\frac{1}{2}}$ or $\boxed{2}$", "0.5"),
]


def test_hedged_completions_score_wrong():
    prompts, completions = [""] * len(HEDGED), [c for c, _ in HEDGED]
    meta = [{"answer": g} for _, g in HEDGED]
    assert MathReward().score(prompts, completions, meta) == [0.0] * len(HEDGED)
    assert MathReward(wrong=-1.0, no_answer=-2.0).score(prompts, completions, meta) == [-1.0] * len(HEDGED)


def test_restated_and_led_in_answers_score_right():
    completions = ["\\boxed{3}\nThe answer is 3.", "The answer is 12 (or 12.0)",
                   "The answer is 3 apples for 4 people.",
                   r"The answer is $2 + 3 = \boxed{5}$.",
                   r"Final Answer: The final answer is $\boxed{\sqrt{8}}$."]
    meta = [{"answer": g} for g in ("3", "12", "3", "5", r"2\sqrt{2}")]
    assert MathReward().score([""] * 5, completions, meta) == [1.0] * 5


def test_closeness_credits_a_hedge_by_its_farthest_guess():
    reward = MathReward(closeness=1.0)
    hedge, far, near = reward.score(["", "", ""], ["The answer is 3 or 40", "The answer is 40",
                                                   "The answer is 4"],
                                    [{"answer": "3"}] * 3)
    assert hedge == far < near < 1.0
    # the credit itself, by hand: wrong + closeness / (1 + |pred - gold| / (1 + |gold|)), gold 3 (1 + |gold| =
    # 4) far  (40): 1 / (1 + 37/4) = 4/41;   near (4): 1 / (1 + 1/4) = 4/5
    # (the ordering above alone would let e.g. a denominator |gold| instead of 1 + |gold| through)
    assert far == pytest.approx(4 / 41, rel=1e-12) and near == pytest.approx(0.8, rel=1e-12)
    shifted = MathReward(wrong=-1.0, closeness=0.5).score(["", ""], ["The answer is 40", "The answer is 4"],
                                                          [{"answer": "3"}] * 2)
    assert shifted == pytest.approx([-1.0 + 0.5 * 4 / 41, -1.0 + 0.5 * 0.8], rel=1e-12)
    # gold 0 (1 + |gold| = 1): pred 1 gets 1 / (1 + 1) = 1/2; a right answer is paid `correct`, not credit
    assert reward.score(["", ""], ["The answer is 1", "The answer is 0"], [{"answer": "0"}] * 2) == \
        pytest.approx([0.5, 1.0], rel=1e-12)


TRICKY = [c for c, _ in HEDGED] + [
    "\\boxed{3}\nThe answer is 3.", "The answer is 12 (or 12.0)", "The answer is 3/4?",
    "The answer is 3, or so.",
    r"The answer is $2 + 3 = \boxed{5}$.", "We check the answer: so our answer is correct. \\boxed{3}",
    "The answer is 4. Hmm, no. The answer is 3.", "I think 3 or 4", "#### 1,234", r"\boxed{\dfrac{6}{8}}",
    "The answer is: Evelyn", "", "no idea",
]


def test_eval_accuracy_and_the_reward_agree(monkeypatch):
    """The accuracy a run reports counts exactly the completions the reward pays for."""
    monkeypatch.setattr(generation, "generate_chat", lambda model, tok, prompts, **kw: TRICKY)
    prompts = [[{"role": "user", "content": "q"}]] * len(TRICKY)
    seen = set()
    for gold in ["3", "4", "5", "12", "0.75", "1234", r"\frac{1}{2}"]:
        out = generation.answer_accuracy(None, None, prompts, [gold] * len(TRICKY))
        scores = MathReward().score([""] * len(TRICKY), TRICKY, [{"answer": gold}] * len(TRICKY))
        assert [s["correct"] for s in out["samples"]] == [s == 1.0 for s in scores], gold
        assert out["accuracy"] == pytest.approx(sum(scores) / len(TRICKY))
        seen.update(scores)
    assert seen == {0.0, 1.0}


# ----------------------------------------------------------------------------------------- real data

def _bump_final_number(solution: str) -> str:
    """The GSM8K solution with its final '#### N' changed to N+1 (thousands commas kept when present)."""
    head, _, tail = solution.rpartition("####")
    n = int(tail.strip().replace(",", ""))
    new = f"{n + 1:,}" if "," in tail else str(n + 1)
    return f"{head}#### {new}"


def test_gsm8k_every_gold_matches_itself_and_not_a_perturbed_number():
    rows = _jsonl(require_data("gsm8k", "test.jsonl"))
    assert len(rows) == 1319
    golds = [r["answer"] for r in rows]
    reward = MathReward()
    meta = [{"answer": g} for g in golds]
    prompts = [r["question"] for r in rows]
    assert reward.score(prompts, golds, meta) == [1.0] * len(rows)  # full solution vs full solution
    plain = [{"answer": gold_answer(g)} for g in golds]              # vs the bare "N" (commas kept)
    assert reward.score(prompts, golds, plain) == [1.0] * len(rows)
    wrong = [_bump_final_number(g) for g in golds]
    assert all(w != g for w, g in zip(wrong, golds))
    assert reward.score(prompts, wrong, meta) == [0.0] * len(rows)


def test_gsm8k_golds_pass_through_math_verify_alone(monkeypatch):
    rows = _jsonl(require_data("gsm8k", "test.jsonl"))
    monkeypatch.setattr(answers, "answers_match", lambda p, g: False)
    golds = [r["answer"] for r in rows]
    assert MathReward().score([""] * len(golds), golds, [{"answer": g} for g in golds]) == [1.0] * len(golds)


def _bump_first_digit(answer: str) -> str | None:
    m = re.search(r"\d", answer)
    if m is None:
        return None
    return answer[:m.start()] + str((int(m.group()) + 1) % 10) + answer[m.end():]


def _math500() -> list[dict]:
    folder = require_data("math500")
    rows = [r for p in sorted(folder.glob("*.jsonl")) for r in _jsonl(p)]
    assert len(rows) == 500
    return rows


def test_math500_boxed_answers_match_their_gold_and_perturbed_ones_do_not():
    rows = _math500()
    reward = MathReward()
    meta = [{"answer": r["answer"]} for r in rows]
    boxed = [f"Thus the final answer is $\\boxed{{{r['answer']}}}$." for r in rows]
    assert reward.score([r["problem"] for r in rows], boxed, meta) == [1.0] * len(rows)
    # the reference solutions end in their own \boxed{...}, written as the answer field is
    assert reward.score([""] * len(rows), [r["solution"] for r in rows], meta) == [1.0] * len(rows)
    perturbed = [(m, _bump_first_digit(m["answer"])) for m in meta]
    perturbed = [(m, p) for m, p in perturbed if p is not None]
    assert len(perturbed) > 450
    scores = reward.score([""] * len(perturbed), [f"\\boxed{{{p}}}" for _, p in perturbed], [m for m,
                                                                                             _ in perturbed])
    wrongly_accepted = [(m["answer"], p) for (m, p), s in zip(perturbed, scores) if s]
    assert wrongly_accepted == []


def test_math500_golds_pass_through_math_verify_alone(monkeypatch):
    """Every MATH-500 gold parses, and equals itself, in math-verify (not just by exact text)."""
    rows = _math500()
    monkeypatch.setattr(answers, "answers_match", lambda p, g: False)
    boxed = [f"\\boxed{{{r['answer']}}}" for r in rows]
    scores = MathReward().score([""] * len(rows), boxed, [{"answer": r["answer"]} for r in rows])
    assert [r["answer"] for r, s in zip(rows, scores) if s != 1.0] == []


# ----------------------------------------------------------------------------------------- threads

def _thread_batch() -> tuple[list[str], list[dict]]:
    pairs = EQUIVALENT + [(p, g) for p, g in NOT_EQUIVALENT if p and g]
    return [f"The answer is $\\boxed{{{p}}}$" for p, _ in pairs], [{"answer": g} for _, g in pairs]


def test_math_verify_alone_refuses_worker_threads():
    """Why the reward needs care: math-verify's default signal timeout raises outside the main thread."""
    from math_verify import parse
    with ThreadPoolExecutor(max_workers=1) as pool:
        with pytest.raises(ValueError, match="thread"):
            pool.submit(parse, r"$\frac{1}{2}$").result()


def test_scoring_from_worker_threads_matches_the_main_thread():
    completions, meta = _thread_batch()
    prompts = [""] * len(completions)
    reward = MathReward()
    answers._parse.cache_clear()
    main = reward.score(prompts, completions, meta)
    assert threading.current_thread() is threading.main_thread()

    def work() -> tuple[list[float], bool]:
        answers._parse.cache_clear()  # parse afresh inside the worker, not from the main thread's cache
        return reward.score(prompts, completions, meta), threading.current_thread() is threading.main_thread()

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [f.result() for f in [pool.submit(work) for _ in range(4)]]
    for scores, on_main in results:
        assert not on_main
        assert scores == main
    assert sum(main) == len([p for p in EQUIVALENT])  # the equivalent pairs score 1, the rest 0
