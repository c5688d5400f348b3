"""Synthetic task generators: determinism, exact answers, solution format, splits, converters."""
from __future__ import annotations

import json
import random
import re

import pytest

from posttrain.data.answers import extract_answer
from posttrain.tasks import synthetic as syn
from posttrain.tasks.synthetic import (
    ANSWER_INSTRUCTION,
    TASKS,
    WORD_TEMPLATES,
    Problem,
    arithmetic,
    generate,
    split,
    to_prompt_rows,
    to_sft_rows,
    train_test,
    word_problems,
)

# An equation line in a solution: "a op b = r" (r may be negative in arithmetic).
EQ = re.compile(r"(-?\d+) ([-+*/]) (\d+) = (-?\d+)")


def apply(a: int, op: str, b: int) -> int:
    """Independent evaluator of one exact integer operation (no eval())."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    assert op == "/" and b != 0 and a % b == 0, f"inexact division {a} / {b}"
    return a // b


def eval_expression(expr: str) -> int:
    """Precedence-aware evaluation of 'a op b op c ...' by a two-pass reduction."""
    tokens = expr.split()
    nums, ops = [int(t) for t in tokens[0::2]], tokens[1::2]
    for level in ("*/", "+-"):
        i = 0
        while i < len(ops):
            if ops[i] in level:
                nums[i: i + 2] = [apply(nums[i], ops[i], nums[i + 1])]
                del ops[i]
            else:
                i += 1
    assert len(nums) == 1
    return nums[0]


def check_problem(p: Problem) -> None:
    assert re.fullmatch(r"-?\d+", p.answer), p.answer
    assert p.answer == str(int(p.answer))  # canonical: no leading zeros, no "-0"
    assert p.solution.endswith(f"\nThe answer is {p.answer}.") or p.solution == f"The answer is {p.answer}."
    eqs = p.meta["equations"]
    assert eqs, p
    for a, op, b, r in eqs:
        assert apply(a, op, b) == r
    assert str(eqs[-1][3]) == p.answer
    # The solution's written arithmetic is the same chain, and each line is correct.
    lines = [tuple(int(x) if x.lstrip("-").isdigit() else x for x in m.groups())
             for m in EQ.finditer(p.solution)]
    assert [tuple(e) for e in eqs] == lines, (p.solution, eqs)
    hash(p)
    assert Problem.from_dict(json.loads(json.dumps(p.to_dict()))) == p


# --------------------------------------------------------------------------------------------------
# determinism

@pytest.mark.parametrize("task,kw", [("arithmetic", {}), ("arithmetic", {"terms": (2, 4), "ops": "+-*/"}),
                                     ("word_problems", {}), ("word_problems", {"steps": (1, 8)})])
def test_same_seed_same_problems_different_seed_different(task, kw):
    a = generate(task, 200, seed=7, **kw)
    b = generate(task, 200, seed=7, **kw)
    c = generate(task, 200, seed=8, **kw)
    assert a == b
    assert [p.question for p in a] != [p.question for p in c]
    overlap = {p.question for p in a} & {p.question for p in c}
    assert len(overlap) < 20  # different seeds: mostly different questions


def test_global_random_is_untouched():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    arithmetic(50, seed=1)
    word_problems(50, seed=1)
    assert random.random() == expected


def test_output_is_prefix_of_longer_output():
    for task in ("arithmetic", "word_problems"):
        assert generate(task, 30, seed=3) == generate(task, 100, seed=3)[:30]


def test_generate_dispatches_and_rejects_unknown():
    assert set(TASKS) >= {"arithmetic", "word_problems"}
    assert generate("arithmetic", 5, seed=0) == arithmetic(5, seed=0)
    assert generate("word_problems", 5, seed=0, steps=3) == word_problems(5, seed=0, steps=3)
    with pytest.raises(ValueError, match="unknown synthetic task"):
        generate("chess", 3, seed=0)
    assert generate("arithmetic", 0, seed=0) == []


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="ops"):
        arithmetic(3, seed=0, ops=("^",))
    with pytest.raises(ValueError, match="digits"):
        arithmetic(3, seed=0, digits=(3, 1))
    with pytest.raises(ValueError, match="steps"):
        word_problems(3, seed=0, steps=(0, 2))
    with pytest.raises(ValueError, match="steps"):
        word_problems(3, seed=0, steps=9)
    with pytest.raises(ValueError, match="templates"):
        word_problems(3, seed=0, templates=["poker"])
    with pytest.raises(ValueError, match="seed"):
        arithmetic(3, seed=None)


# --------------------------------------------------------------------------------------------------
# arithmetic

def test_arithmetic_answers_and_solutions_are_exact():
    for p in arithmetic(1000, seed=0, ops=("+", "-", "*", "/"), terms=(2, 5), digits=(1, 3)):
        assert p.task == "arithmetic"
        assert p.question == f"What is {p.meta['expression']}?"
        assert eval_expression(p.meta["expression"]) == int(p.answer)
        check_problem(p)


def test_arithmetic_two_operands_default_shape():
    probs = arithmetic(500, seed=1)
    for p in probs:
        a, op, b = p.meta["expression"].split()
        assert op in "+-*" and 1 <= int(a) <= 99 and 1 <= int(b) <= 99
        assert p.solution == f"{a} {op} {b} = {p.answer}.\nThe answer is {p.answer}."
    assert {p.meta["ops"][0] for p in probs} == {"+", "-", "*"}


def test_arithmetic_digits_control_operand_size():
    for p in arithmetic(300, seed=2, digits=3, ops="+-*"):
        assert all(100 <= x <= 999 for x in p.meta["numbers"])
    for p in arithmetic(300, seed=2, digits=(1, 1)):
        assert all(1 <= x <= 9 for x in p.meta["numbers"])


def test_arithmetic_precedence_in_solution_steps():
    probs = arithmetic(500, seed=3, terms=(3, 4), ops="+-*")
    mixed = [p for p in probs if "*" in p.meta["ops"] and set(p.meta["ops"]) & {"+", "-"}]
    assert mixed
    for p in mixed:
        assert p.solution.startswith("Multiplication and division come before addition and subtraction.")
        eqs = p.meta["equations"]
        # every multiplication is done before any addition/subtraction
        kinds = [op in "*/" for _, op, _, _ in eqs]
        assert kinds == sorted(kinds, reverse=True)
    for p in probs:
        assert eval_expression(p.meta["expression"]) == int(p.answer)


def test_arithmetic_division_is_exact_and_nonnegative_option():
    for p in arithmetic(500, seed=4, ops="/", terms=(2, 3)):
        check_problem(p)
        assert all(b >= 2 for _, op, b, _ in p.meta["equations"] if op == "/")
    probs = arithmetic(500, seed=5, ops="+-*", terms=(2, 4), negative=False)
    for p in probs:
        assert all(r >= 0 for *_, r in p.meta["equations"])
    assert any(int(p.answer) < 0 for p in arithmetic(300, seed=5, ops="-"))


# --------------------------------------------------------------------------------------------------
# word problems

def test_word_problems_exact_nonnegative_integer_answers():
    probs = word_problems(1000, seed=0, steps=(1, 8))
    for p in probs:
        assert p.task == "word_problems"
        check_problem(p)
        assert int(p.answer) >= 0
        assert all(r >= 0 for *_, r in p.meta["equations"])  # no negative intermediate counts
        assert len(p.meta["equations"]) == p.meta["steps"]


@pytest.mark.parametrize("k", range(1, 9))
def test_steps_control_chain_length_for_every_template(k):
    for t in WORD_TEMPLATES:
        for p in word_problems(20, seed=k, steps=k, templates=[t]):
            assert p.meta["template"] == t
            assert len(p.meta["equations"]) == k == len(EQ.findall(p.solution))
            check_problem(p)


def test_templates_coverage_and_variety():
    assert len(WORD_TEMPLATES) >= 6
    probs = word_problems(400, seed=11)
    assert {p.meta["template"] for p in probs} == set(WORD_TEMPLATES)
    assert {len(p.meta["equations"]) for p in probs} == {2, 3, 4}
    assert len({p.question for p in probs}) > 390
    ops = {op for p in probs for _, op, _, _ in p.meta["equations"]}
    assert ops == {"+", "-", "*", "/"}


def test_word_problem_solution_shape():
    p = word_problems(1, seed=0, steps=3, templates=["shopping"])[0]
    lines = p.solution.split("\n")
    assert len(lines) == 4 and lines[-1] == f"The answer is {p.answer}."
    assert "$" in p.question and p.question.endswith("?")


# --------------------------------------------------------------------------------------------------
# extraction round trip

@pytest.mark.parametrize("task,kw", [("arithmetic", {"terms": (2, 4), "ops": "+-*/", "digits": (1, 3)}),
                                     ("word_problems", {"steps": (1, 8)})])
def test_extract_answer_reads_every_gold_solution(task, kw):
    for p in generate(task, 1000, seed=21, **kw):
        assert extract_answer(p.solution) == p.answer


# --------------------------------------------------------------------------------------------------
# splits

@pytest.mark.parametrize("task", ["arithmetic", "word_problems"])
def test_train_test_disjoint_unique_and_stable(task):
    train, test = train_test(task, 300, 100, seed=5)
    assert len(train) == 300 and len(test) == 100
    tq, sq = [p.question for p in train], [p.question for p in test]
    assert len(set(tq)) == 300 and len(set(sq)) == 100
    assert not set(tq) & set(sq)
    assert train_test(task, 300, 100, seed=5) == (train, test)
    # the test set does not depend on how much training data is asked for
    assert train_test(task, 50, 100, seed=5)[1] == test


def test_train_test_small_space_raises():
    # 1-digit subtraction: 81 distinct questions at most
    with pytest.raises(ValueError, match="distinct"):
        train_test("arithmetic", 80, 10, seed=0, ops="-", digits=1)
    train, test = train_test("arithmetic", 70, 11, seed=0, ops="-", digits=1)
    assert len({p.question for p in train + test}) == 81


def test_split_by_question():
    probs = arithmetic(300, seed=0, digits=1, ops="+")  # 81 possible questions: many repeats
    train, test = split(probs, 0.25, seed=1)
    assert len(train) + len(test) == 300
    assert not {p.question for p in train} & {p.question for p in test}
    assert len({p.question for p in test}) == round(0.25 * len({p.question for p in probs}))
    assert split(probs, 0.25, seed=1) == (train, test)
    assert split(probs, 0.25, seed=2) != (train, test)
    tr, te = split(probs, 10, seed=1)
    assert len({p.question for p in te}) == 10
    with pytest.raises(ValueError):
        split(probs, 1000, seed=1)


# --------------------------------------------------------------------------------------------------
# converters

def test_record_converters():
    probs = word_problems(3, seed=0)
    rows = to_sft_rows(probs)
    assert rows[0] == {"messages": [{"role": "user", "content": probs[0].question},
                                    {"role": "assistant", "content": probs[0].solution}]}
    rows = to_sft_rows(probs, instruction=ANSWER_INSTRUCTION)
    assert rows[1]["messages"][0]["content"] == f"{probs[1].question}\n{ANSWER_INSTRUCTION}"
    prompts = to_prompt_rows(probs)
    assert prompts == [{"prompt": p.question, "answer": p.answer} for p in probs]
    assert to_prompt_rows(probs, instruction="Go.")[0]["prompt"].endswith("\nGo.")
    assert json.loads(json.dumps(rows)) == rows


def test_register_task():
    def echo(n, *, seed):
        return [Problem(f"q{seed}-{i}", str(i), f"The answer is {i}.", "echo", {}) for i in range(n)]

    syn.register_task("echo_test", echo)
    try:
        assert [p.answer for p in generate("echo_test", 3, seed=1)] == ["0", "1", "2"]
        train, test = train_test("echo_test", 4, 2, seed=1)
        assert [p.question for p in test] == ["q1-0", "q1-1"]
    finally:
        del TASKS["echo_test"]
