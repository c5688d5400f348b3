"""Seeded generators of math tasks with exact answers: nothing to download, same seed -> same problems.

Two tasks are built in:

- ``arithmetic``: "What is 47 + 38?", optionally multi-operand with precedence ("What is 3 + 4 * 5?").
- ``word_problems``: multi-step grade-school word problems (shopping, inventory, sharing, travel, ages,
  production, savings, teams) whose every step is one exact integer operation.

Every :class:`Problem` has a canonical ``answer`` (an integer written like ``"42"``: no thousands
separators, no trailing ``.0``) and a step-by-step gold ``solution`` whose arithmetic lines read
``a op b = r`` and whose last line is ``"The answer is {answer}."``. ``meta["equations"]`` lists the same
steps as ``[a, op, b, r]`` so a test or a reward can re-check them without parsing text.

Determinism: each generator draws from its own ``random.Random(seed)`` (never the global one), and a
generator's output for ``n`` is a prefix of its output for any larger ``n``.
"""
from __future__ import annotations

import random
from math import gcd
from typing import Any, Callable, Iterable, Iterator, Sequence

from posttrain.tasks.problems import Problem, apply_op, check_seed, example_count, int_range
from posttrain.tasks.word_problems import WORD_TEMPLATES, word_problems

__all__ = [
    "ANSWER_INSTRUCTION",
    "Problem",
    "TASKS",
    "WORD_TEMPLATES",
    "arithmetic",
    "generate",
    "register_task",
    "split",
    "to_prompt_rows",
    "to_sft_rows",
    "train_test",
    "word_problems",
]

#: A short instruction callers may append to a question so a model ends with a parseable answer.
ANSWER_INSTRUCTION = "End your reply with 'The answer is N.'"


# --------------------------------------------------------------------------------------------------
# arithmetic

_OPS = ("+", "-", "*", "/")


def _number(rng: random.Random, digits: tuple[int, int]) -> int:
    k = rng.randint(*digits)
    return rng.randint(1 if k == 1 else 10 ** (k - 1), 10 ** k - 1)


def _evaluate_steps(nums: list[int], ops: list[str]) -> tuple[list[list], list[str]]:
    """Evaluate with precedence (``*``/``/`` left to right, then ``+``/``-`` left to right).

    Returns the equations ``[a, op, b, r]`` in evaluation order and the expression text after each step.
    """
    nums, ops = list(nums), list(ops)
    equations: list[list] = []
    states: list[str] = []
    for level in (("*", "/"), ("+", "-")):
        i = 0
        while i < len(ops):
            if ops[i] in level:
                a, op, b = nums[i], ops[i], nums[i + 1]
                r = apply_op(a, op, b)
                equations.append([a, op, b, r])
                nums[i: i + 2] = [r]
                del ops[i]
                states.append(_expr_text(nums, ops))
            else:
                i += 1
    return equations, states


def _expr_text(nums: Sequence[int], ops: Sequence[str]) -> str:
    parts = [str(nums[0])]
    for op, x in zip(ops, nums[1:]):
        parts += [op, str(x)]
    return " ".join(parts)


def _arithmetic_one(rng: random.Random, ops: Sequence[str], digits: tuple[int, int],
                    terms: tuple[int, int], negative: bool) -> Problem:
    for _ in range(1000):
        k = rng.randint(*terms)
        chosen = [rng.choice(ops) for _ in range(k - 1)]
        nums = [_number(rng, digits) for _ in range(k)]
        # Make every division exact: walk each multiplicative group left to right and, when the running
        # value is not divisible by the divisor, scale the group's first operand (the value scales with it).
        start, value = 0, nums[0]
        for i, op in enumerate(chosen):
            b = nums[i + 1]
            if op in "+-":
                start, value = i + 1, b
            elif op == "*":
                value *= b
            else:
                if b == 1:
                    b = nums[i + 1] = rng.randint(2, 9)
                if value % b:
                    factor = b // gcd(value, b)
                    nums[start] *= factor
                    value *= factor
                value //= b
        equations, states = _evaluate_steps(nums, chosen)
        if not negative and any(eq[3] < 0 for eq in equations):
            continue
        break
    else:
        raise ValueError("could not generate a non-negative expression in 1000 tries; "
                         "allow negative=True or include '+' in ops")
    expr = _expr_text(nums, chosen)
    answer = equations[-1][3] if equations else nums[0]
    lines = []
    levels = {op in "*/" for op in chosen}
    if len(levels) == 2:
        lines.append("Multiplication and division come before addition and subtraction.")
    for (a, op, b, r), state in zip(equations, states):
        if state == str(r):
            lines.append(f"{a} {op} {b} = {r}.")
        else:
            lines.append(f"{a} {op} {b} = {r}, so the expression becomes {state}.")
    lines.append(f"The answer is {answer}.")
    return Problem(
        question=f"What is {expr}?",
        answer=str(answer),
        solution="\n".join(lines),
        task="arithmetic",
        meta={"expression": expr, "numbers": nums, "ops": chosen, "equations": equations},
    )


def _arithmetic_stream(seed: Any, *, ops: Sequence[str] = ("+", "-", "*"),
                       digits: int | Sequence[int] = (1, 2), terms: int | Sequence[int] = 2,
                       negative: bool = True) -> Iterator[Problem]:
    check_seed(seed)
    ops = tuple(ops)
    if not ops or any(op not in _OPS for op in ops):
        raise ValueError(f"ops must be a non-empty subset of {_OPS}, got {ops!r}")
    digits_r = int_range(digits, "digits", 1, 9)
    terms_r = int_range(terms, "terms", 2, 12)
    rng = random.Random(seed)
    while True:
        yield _arithmetic_one(rng, ops, digits_r, terms_r, negative)


def arithmetic(n: int, *, seed: Any, ops: Sequence[str] = ("+", "-", "*"),
               digits: int | Sequence[int] = (1, 2), terms: int | Sequence[int] = 2,
               negative: bool = True) -> list[Problem]:
    """``n`` arithmetic problems such as "What is 47 + 38?".

    Args:
        ops: operators to draw from, any of ``+ - * /``; divisions are always exact (the dividend is
            scaled up when needed, so it may have more digits than ``digits`` says).
        digits: digits per operand, an int or an inclusive ``(low, high)`` range (1-digit operands are 1-9).
        terms: operands per expression, an int or ``(low, high)``; with 3 or more, ``*``/``/`` bind
            tighter than ``+``/``-`` and the solution shows each step in that order.
        negative: allow negative intermediate results and answers; if False such draws are redrawn.
    """
    it = _arithmetic_stream(seed, ops=ops, digits=digits, terms=terms, negative=negative)
    return [next(it) for _ in range(example_count(n))]


# --------------------------------------------------------------------------------------------------
# registry, splits, converters

#: Task name -> generator ``fn(n, *, seed, **kw) -> list[Problem]``. A generator's output for ``n`` must
#: be a prefix of its output for a larger ``n`` (``train_test`` relies on it for stable test sets).
TASKS: dict[str, Callable[..., list[Problem]]] = {
    "arithmetic": arithmetic,
    "word_problems": word_problems,
}


def register_task(name: str, fn: Callable[..., list[Problem]]) -> None:
    """Add a generator to :data:`TASKS` (e.g. tool-call tasks defined elsewhere)."""
    TASKS[name] = fn


def generate(task: str, n: int, *, seed: Any, **kw: Any) -> list[Problem]:
    """``n`` problems of ``task`` (a name in :data:`TASKS`); ``kw`` go to that task's generator."""
    try:
        fn = TASKS[task]
    except KeyError:
        raise ValueError(f"unknown synthetic task {task!r}; choose from {sorted(TASKS)}") from None
    return fn(n, seed=seed, **kw)


def train_test(task: str, n_train: int, n_test: int, *, seed: Any,
               **kw: Any) -> tuple[list[Problem], list[Problem]]:
    """Disjoint train and test sets (by question text), each free of duplicate questions.

    The test set is the first ``n_test`` distinct questions of the seeded stream, so it depends only on
    ``(task, n_test, seed, kw)``, not on ``n_train``. Raises ``ValueError`` when the task's settings do
    not allow ``n_train + n_test`` distinct questions.
    """
    n_train, n_test = example_count(n_train), example_count(n_test)
    need = n_train + n_test
    size = max(16, need + need // 4)
    while True:
        problems = generate(task, size, seed=seed, **kw)
        seen: set[str] = set()
        unique = []
        for p in problems:
            if p.question not in seen:
                seen.add(p.question)
                unique.append(p)
                if len(unique) == need:
                    return unique[n_test:], unique[:n_test]
        if size >= 64 * need + 4096:
            raise ValueError(f"task {task!r} with {kw or 'default settings'} gave only {len(unique)} "
                             f"distinct questions in {size} draws; {need} are needed "
                             f"(widen digits/terms/steps)")
        size *= 4


def split(problems: Sequence[Problem], held_out: int | float,
          seed: Any) -> tuple[list[Problem], list[Problem]]:
    """Split into ``(train, test)`` with no question text in both.

    ``held_out`` is a number of distinct questions (int) or a fraction of them (float in (0, 1)). Problems
    sharing a question go to the same side; order within each side follows the input.
    """
    check_seed(seed)
    questions = list(dict.fromkeys(p.question for p in problems))
    if isinstance(held_out, float):
        if not 0.0 <= held_out <= 1.0:
            raise ValueError(f"held_out fraction must be in [0, 1], got {held_out}")
        k = round(held_out * len(questions))
    else:
        k = int(held_out)
        if not 0 <= k <= len(questions):
            raise ValueError(f"held_out={k} but there are {len(questions)} distinct questions")
    random.Random(seed).shuffle(questions)
    test_q = set(questions[:k])
    train = [p for p in problems if p.question not in test_q]
    test = [p for p in problems if p.question in test_q]
    return train, test


def _with_instruction(question: str, instruction: str | None) -> str:
    return question if not instruction else f"{question}\n{instruction}"


def to_sft_rows(problems: Iterable[Problem], instruction: str | None = None) -> list[dict[str, Any]]:
    """Chat records ``{"messages": [user: question (+ instruction), assistant: solution]}``."""
    return [{"messages": [{"role": "user", "content": _with_instruction(p.question, instruction)},
                          {"role": "assistant", "content": p.solution}]} for p in problems]


def to_prompt_rows(problems: Iterable[Problem], instruction: str | None = None) -> list[dict[str, Any]]:
    """Prompt records ``{"prompt": question (+ instruction), "answer": answer}`` for RL / evaluation."""
    return [{"prompt": _with_instruction(p.question, instruction), "answer": p.answer} for p in problems]
