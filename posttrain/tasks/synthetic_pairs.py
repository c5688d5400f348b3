"""Preference pairs with a ground-truth reward, built from the synthetic tasks: the chosen reply has
the correct answer, the rejected one a wrong answer in the same format. Labels can be flipped at a
known rate, so label-noise methods (cDPO, rDPO) can be measured against the truth."""
from __future__ import annotations

import random
import re

from posttrain.tasks import synthetic
from posttrain.tasks.synthetic import Problem


def wrong_answer(answer: str, rng: random.Random) -> str:
    """A plausible wrong integer: off by a small amount or by a digit, never the gold answer."""
    gold = int(answer)
    while True:
        delta = rng.choice([1, 2, 3, 5, 10, 20]) * rng.choice([-1, 1])
        spread = abs(gold) // 2 + 10
        cand = gold + delta if rng.random() < 0.7 else gold + rng.randint(-spread, spread)
        if cand != gold:
            return str(cand)


def corrupt_solution(problem: Problem, rng: random.Random) -> str:
    """The gold solution with its final result (and the last equation's result, units and all:
    "= 67 km.") replaced by a wrong one, so the rejected reply is wrong where the work is shown too."""
    wrong = wrong_answer(problem.answer, rng)
    lines = problem.solution.splitlines()[:-1]
    if lines:
        hits = list(re.finditer(rf"= {re.escape(problem.answer)}(?!\d)", lines[-1]))
        if hits:
            h = hits[-1]
            lines[-1] = f"{lines[-1][:h.start()]}= {wrong}{lines[-1][h.end():]}"
    return "\n".join(lines + [f"The answer is {wrong}."])


def pairs_from_problems(problems: list[Problem], *, seed: int, flip_rate: float = 0.0,
                        instruction: str | None = None) -> list[dict]:
    """Rows `{prompt, chosen, rejected, meta}`; meta records the gold answer, whether the label was
    flipped, and whether the (observed) chosen reply is the correct one."""
    if not 0.0 <= flip_rate <= 1.0:
        raise ValueError(f"flip_rate must be in [0, 1], got {flip_rate}")
    rng = random.Random(seed)
    rows = []
    for p in problems:
        good, bad = p.solution, corrupt_solution(p, rng)
        flipped = rng.random() < flip_rate
        chosen, rejected = (bad, good) if flipped else (good, bad)
        prompt = p.question if not instruction else f"{p.question}\n{instruction}"
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                     "meta": {"answer": p.answer, "flipped": flipped, "chosen_correct": not flipped,
                              "task": p.task}})
    return rows


def generate_pairs(task: str, n: int, *, seed: int, flip_rate: float = 0.0, instruction: str | None = None,
                   **options) -> list[dict]:
    problems = synthetic.generate(task, n, seed=seed, **options)
    return pairs_from_problems(problems, seed=seed + 7919, flip_rate=flip_rate, instruction=instruction)
