"""Seeded multi-step grade-school word problems (shopping, inventory, sharing, travel, ages,
production, savings, teams) whose every step is one exact integer operation.

Re-exported by :mod:`posttrain.tasks.synthetic` (``word_problems``, ``WORD_TEMPLATES``), where the
``word_problems`` task is registered.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

from posttrain.tasks.problems import Problem, apply_op, check_seed, example_count, int_range

__all__ = ["WORD_TEMPLATES", "word_problems"]

_MAX_STEPS = 8  # longest word-problem chain the templates are written for


# --------------------------------------------------------------------------------------------------
# word problems

_PEOPLE = [
    ("Sam", "he", "his"), ("Ava", "she", "her"), ("Liam", "he", "his"), ("Mia", "she", "her"),
    ("Noah", "he", "his"), ("Emma", "she", "her"), ("Omar", "he", "his"), ("Priya", "she", "her"),
    ("Lucas", "he", "his"), ("Zoe", "she", "her"), ("Kenji", "he", "his"), ("Sofia", "she", "her"),
    ("Mateo", "he", "his"), ("Chloe", "she", "her"), ("Ethan", "he", "his"), ("Amara", "she", "her"),
    ("Leo", "he", "his"), ("Hana", "she", "her"), ("Diego", "he", "his"), ("Grace", "she", "her"),
    ("Yusuf", "he", "his"), ("Lena", "she", "her"), ("Ravi", "he", "his"), ("Nora", "she", "her"),
]


class _Chain:
    """Collects solution lines whose arithmetic is checked as it is written."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.equations: list[list] = []

    def step(self, a: int, op: str, b: int, text: str) -> int:
        """Record ``a op b = r``; ``text`` is formatted with ``{eq}`` (the equation) and ``{r}``."""
        r = apply_op(a, op, b)
        if r < 0:
            raise AssertionError(f"negative intermediate {a} {op} {b} = {r}")  # a template bug
        self.equations.append([a, op, b, r])
        self.lines.append(text.format(eq=f"{a} {op} {b} = {r}", r=r))
        return r

    def solution(self) -> str:
        return "\n".join(self.lines + [f"The answer is {self.equations[-1][3]}."])


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _tune(rng: random.Random, cur: int, f: int, kind: str, max_delta: int = 60) -> tuple[str, int]:
    """Pick an add/remove amount ``d`` so that ``cur +/- d`` is a positive multiple of ``f``.

    Returns ``(kind, d)``; a removal that cannot leave at least ``f`` becomes an addition.
    """
    if kind == "remove" and cur - 1 >= f:
        lo = max(f, cur - max_delta)
        return "remove", cur - rng.choice(range(-(-lo // f) * f, cur, f))
    first = (cur // f + 1) * f
    return "add", rng.choice(range(first, cur + max_delta + f, f)) - cur


def _events_amount(rng: random.Random, cur: int, kind: str, max_delta: int = 60) -> tuple[str, int]:
    """An add/remove amount keeping the count at least 1; a removal from 1 becomes an addition."""
    if kind == "remove" and cur >= 3:
        return "remove", rng.randint(1, min(cur - 1, max_delta))
    return "add", rng.randint(2, max_delta)


# Each template takes (rng, k) and returns (question, chain, extra meta) with exactly k steps.

_SHOP_ITEMS = [
    ("notebook", "notebooks", 2, 9), ("pen", "pens", 1, 4), ("apple", "apples", 1, 3),
    ("comic book", "comic books", 3, 12), ("sandwich", "sandwiches", 4, 11), ("toy car", "toy cars", 3, 15),
    ("plant", "plants", 5, 20), ("T-shirt", "T-shirts", 8, 25), ("ticket", "tickets", 6, 18),
    ("candle", "candles", 2, 8), ("mug", "mugs", 4, 12), ("puzzle", "puzzles", 7, 22),
]
_BILLS = [5, 10, 20, 50, 100, 200, 500, 1000, 2000]


def _t_shopping(rng: random.Random, k: int):
    name, he, _ = rng.choice(_PEOPLE)
    m, change = (k + 1) // 2, k % 2 == 0
    items = rng.sample(_SHOP_ITEMS, m)
    c = _Chain()
    parts, total = [], 0
    for i, (one, many, plo, phi) in enumerate(items):
        q, p = rng.randint(2, 9), rng.randint(plo, phi)
        parts.append(f"{q} {many} at ${p} each")
        cost = c.step(q, "*", p, f"{q} {many} at ${p} each cost {{eq}} dollars.")
        if i == 0:
            total = cost
        else:
            total = c.step(total, "+", cost, f"Adding the {many}: {{eq}} dollars in total.")
    question = f"{name} buys {_join(parts)}."
    if change:
        bills = [b for b in _BILLS if b > total]
        bill = bills[0] if len(bills) == 1 or rng.random() < 0.7 else bills[1]
        c.step(bill, "-", total, f"Paying with a ${bill} bill, {he} gets {{eq}} dollars in change.")
        question += f" {he.capitalize()} pays with a ${bill} bill. How much change does {he} get, in dollars?"
    else:
        question += f" How much does {he} spend{' in total' if m > 1 else ''}, in dollars?"
    return question, c, {"name": name}


_PLACES = [  # place, items, container, add verb (present, past participle), remove verb (present, -ing)
    ("A bakery", "muffins", "trays", ("bakes", "baking"), ("sells", "selling")),
    ("A library", "books", "boxes", ("receives", "receiving"), ("lends out", "lending out")),
    ("A farm stand", "eggs", "cartons", ("collects", "collecting"), ("sells", "selling")),
    ("A toy shop", "toys", "crates", ("gets a delivery of", "getting"), ("sells", "selling")),
    ("A florist", "roses", "buckets", ("cuts", "cutting"), ("sells", "selling")),
    ("A school store", "pencils", "packs", ("orders", "ordering"), ("hands out", "handing out")),
]
_TIMES = ["In the morning", "Before lunch", "At noon", "In the early afternoon", "In the afternoon",
          "Later", "In the evening", "Just before closing"]


def _t_inventory(rng: random.Random, k: int):
    place, items, box, (add, adding), (remove, removing) = rng.choice(_PLACES)
    a, b = rng.randint(2, 9), rng.randint(6, 24)
    c = _Chain()
    cur = c.step(a, "*", b, f"It starts with {{eq}} {items}.")
    q = [f"{place} starts the day with {a} {box} of {b} {items}."]
    times = [_TIMES[i] for i in sorted(rng.sample(range(len(_TIMES)), k - 1))]
    for when in times:
        kind, d = _events_amount(rng, cur, rng.choice(["add", "remove", "remove"]))
        if kind == "add":
            q.append(f"{when} it {add} {d} more {items}.")
            cur = c.step(cur, "+", d, f"After {adding} {d} more: {{eq}} {items}.")
        else:
            q.append(f"{when} it {remove} {d} {items}.")
            cur = c.step(cur, "-", d, f"After {removing} {d}: {{eq}} {items}.")
    q.append(f"How many {items} does it have {'now' if k > 1 else 'at the start of the day'}?")
    return " ".join(q), c, {"place": place}


_SHARE_ITEMS = ["stickers", "marbles", "trading cards", "candies", "seashells", "beads", "stamps", "cookies"]
_RELATIVES = ["brother", "sister", "cousin", "neighbour", "best friend", "teacher"]


def _share_event(rng, c, q, cur, kind, d, item, name, he, his):
    if kind == "add":
        said, done = rng.choice([
            (f"{he} buys {d} more {item}", f"After buying {d} more"),
            (f"{his} aunt gives {name} {d} {item}", f"After getting {d} from {his} aunt"),
            (f"{he} finds {d} more {item}", f"After finding {d} more"),
            (f"{he} wins {d} {item} in a game", f"After winning {d}"),
        ])
        op = "+"
    else:
        rel = rng.choice(_RELATIVES)
        said, done = rng.choice([
            (f"{he} gives {d} {item} to {his} {rel}", f"After giving {d} to {his} {rel}"),
            (f"{he} loses {d} {item}", f"After losing {d}"),
            (f"{he} trades away {d} {item}", f"After trading away {d}"),
        ])
        op = "-"
    q.append(said[0].upper() + said[1:] + ".")
    return c.step(cur, op, d, f"{done}: {{eq}} {item}.")


def _t_sharing(rng: random.Random, k: int):
    name, he, his = rng.choice(_PEOPLE)
    item = rng.choice(_SHARE_ITEMS)
    f = rng.randint(2, 9)
    cur = f * rng.randint(2, 12) if k == 1 else rng.randint(10, 80)
    c = _Chain()
    q = [f"{name} has {cur} {item}."]
    for i in range(k - 1):
        want = rng.choice(["add", "remove"])
        kind, d = _tune(rng, cur, f, want) if i == k - 2 else _events_amount(rng, cur, want, 40)
        cur = _share_event(rng, c, q, cur, kind, d, item, name, he, his)
    q.append(f"{'Then ' + he if k > 1 else he.capitalize()} shares all of {his} {item} equally among "
             f"{f} friends. How many {item} does each friend get?")
    c.step(cur, "/", f, f"Shared equally among {f} friends: {{eq}} {item} each.")
    return " ".join(q), c, {"name": name}


_MOVERS = [  # subject, pronoun, speed range, verb
    ("A train", "it", 40, 120, "travels"), ("A car", "it", 30, 110, "drives"),
    ("A cyclist", "she", 8, 25, "rides"), ("A hiker", "he", 3, 6, "walks"),
    ("A bus", "it", 30, 80, "drives"), ("A boat", "it", 10, 40, "sails"),
]


def _t_travel(rng: random.Random, k: int):
    who, it, slo, shi, verb = rng.choice(_MOVERS)
    m, remaining = (k + 1) // 2, k % 2 == 0
    c = _Chain()
    legs, total = [], 0
    for i in range(m):
        s, h = rng.randint(slo, shi), rng.randint(1, 6)
        hours = "hour" if h == 1 else "hours"
        legs.append(f"at {s} km per hour for {h} {hours}")
        leg = c.step(s, "*", h, f"At {s} km per hour for {h} {hours} {it} covers {{eq}} km.")
        total = leg if i == 0 else c.step(total, "+", leg, "So far that is {eq} km.")
    if m == 1:
        q = f"{who} {verb} {legs[0]}."
    elif m == 2:
        q = f"{who} {verb} {legs[0]}, then {legs[1]}."
    else:
        q = f"{who} {verb} {', then '.join(legs[:-1])}, and finally {legs[-1]}."
    if remaining:
        trip = total + rng.randint(3, 150)
        c.step(trip, "-", total, "The distance left is {eq} km.")
        q += f" The whole trip is {trip} km long. How many kilometres are left to go?"
    else:
        q += f" How many kilometres does {it} {verb[:-1]} in total?" if m > 1 else \
            f" How many kilometres does {it} {verb[:-1]}?"
    return q, c, {"mover": who}


def _t_ages(rng: random.Random, k: int):
    people = rng.sample(_PEOPLE, k + 1)
    cur = rng.randint(3, 15)
    c = _Chain()
    q = [f"{people[0][0]} is {cur} years old."]
    for (prev, _, _), (name, _, _) in zip(people, people[1:]):
        choices = ["older"] if cur <= 90 else []
        if cur * 2 <= 90:
            choices.append("times")
        if cur >= 6:
            choices.append("younger")
        if cur % 2 == 0 and cur >= 8:
            choices.append("half")
        kind = rng.choice(choices)
        if kind == "times":
            t = rng.randint(2, min(4, 90 // cur))
            q.append(f"{name} is {t} times as old as {prev}.")
            cur = c.step(cur, "*", t, f"{name} is {{eq}} years old.")
        elif kind == "older":
            d = rng.randint(1, max(1, min(30, 95 - cur)))
            q.append(f"{name} is {d} years older than {prev}.")
            cur = c.step(cur, "+", d, f"{name} is {{eq}} years old.")
        elif kind == "younger":
            d = rng.randint(1, min(30, cur - 2))
            q.append(f"{name} is {d} years younger than {prev}.")
            cur = c.step(cur, "-", d, f"{name} is {{eq}} years old.")
        else:
            q.append(f"{name} is half as old as {prev}.")
            cur = c.step(cur, "/", 2, f"{name} is {{eq}} years old.")
    q.append(f"How old is {people[-1][0]}?")
    return " ".join(q), c, {"names": [p[0] for p in people]}


_PRODUCTS = [("toys", "boxes"), ("bottles", "crates"), ("chairs", "trucks"), ("shirts", "bags"),
             ("phone cases", "cartons"), ("bricks", "pallets")]


def _t_production(rng: random.Random, k: int):
    thing, box = rng.choice(_PRODUCTS)
    rate, hours = rng.randint(5, 40), rng.randint(2, 10)
    c = _Chain()
    cur = c.step(rate, "*", hours, f"In one day it makes {{eq}} {thing}.")
    q = [f"A machine makes {rate} {thing} per hour and runs {hours} hours a day."]
    if k == 1:
        q.append(f"How many {thing} does it make in one day?")
        return " ".join(q), c, {"product": thing}
    days = rng.randint(2, 7)
    q.append(f"It runs for {days} days.")
    cur = c.step(cur, "*", days, f"In {days} days it makes {{eq}} {thing}.")
    if k == 2:
        q.append(f"How many {thing} does it make in those {days} days?")
        return " ".join(q), c, {"product": thing}
    if k == 3:
        size = rng.choice([d for d in range(2, 13) if cur % d == 0])
    else:
        size = rng.randint(4, 12)
    for i in range(k - 3):
        want = rng.choice(["add", "remove"])
        kind, d = _tune(rng, cur, size, want) if i == k - 4 else _events_amount(rng, cur, want, 50)
        if kind == "add":
            q.append(rng.choice([f"Then {d} more {thing} are found in storage.",
                                 f"Then {d} {thing} come back from repair."]))
            cur = c.step(cur, "+", d, f"With {d} more: {{eq}} {thing}.")
        else:
            q.append(rng.choice([f"Then {d} {thing} fail inspection and are thrown away.",
                                 f"Then {d} {thing} are given to a charity."]))
            cur = c.step(cur, "-", d, f"Without those {d}: {{eq}} {thing}.")
    q.append(f"All the {thing} are packed into {box} of {size}. How many {box} are filled?")
    c.step(cur, "/", size, f"In {box} of {size}: {{eq}} {box}.")
    return " ".join(q), c, {"product": thing}


def _t_savings(rng: random.Random, k: int):
    name, he, his = rng.choice(_PEOPLE)
    per, weeks = rng.randint(3, 25), rng.randint(2, 12)
    c = _Chain()
    cur = c.step(per, "*", weeks, f"{name} saves {{eq}} dollars.")
    q = [f"{name} saves ${per} every week for {weeks} weeks."]
    spends = ["a book", "a video game", "a gift for a friend", "a pair of shoes", "concert tickets",
              "a backpack"]
    gets = [f"{his} grandmother gives {name} ${{d}}", f"{he} earns ${{d}} walking dogs",
            f"{he} earns ${{d}} selling lemonade", f"{he} finds ${{d}} in an old coat"]
    for _ in range(k - 1):
        kind, d = _events_amount(rng, cur, rng.choice(["add", "remove"]), 40)
        if kind == "add":
            s = rng.choice(gets).format(d=d)
            q.append(f"Then {s}.")
            cur = c.step(cur, "+", d, f"After getting ${d}: {{eq}} dollars.")
        else:
            q.append(f"Then {he} spends ${d} on {rng.choice(spends)}.")
            cur = c.step(cur, "-", d, f"After spending ${d}: {{eq}} dollars.")
    q.append(f"How much money does {he} have now, in dollars?")
    return " ".join(q), c, {"name": name}


def _t_teams(rng: random.Random, k: int):
    groups, per = rng.randint(2, 8), rng.randint(12, 32)
    where, unit, member = rng.choice([("A school", "classes", "students"),
                                      ("A summer camp", "cabins", "campers"),
                                      ("A sports club", "groups", "players"),
                                      ("A company", "offices", "workers")])
    c = _Chain()
    cur = c.step(groups, "*", per, f"There are {{eq}} {member}.")
    q = [f"{where} has {groups} {unit} with {per} {member} each."]
    if k == 1:
        q.append(f"How many {member} are there in all?")
        return " ".join(q), c, {"place": where}
    size = rng.randint(3, 10)
    for i in range(k - 2):
        want = rng.choice(["add", "remove"])
        kind, d = _tune(rng, cur, size, want, 30) if i == k - 3 else _events_amount(rng, cur, want, 30)
        if kind == "add":
            q.append(f"Then {d} new {member} join.")
            cur = c.step(cur, "+", d, f"With {d} new {member}: {{eq}} {member}.")
        else:
            q.append(f"Then {d} {member} are away for the day.")
            cur = c.step(cur, "-", d, f"Without the {d} who are away: {{eq}} {member}.")
    if k == 2:  # no event to tune: pick a team size that divides the total
        size = rng.choice([d for d in range(3, 11) if cur % d == 0]
                          or [d for d in range(2, 13) if cur % d == 0])
    q.append(f"The {member} who are there form teams of {size}. How many teams are there?")
    c.step(cur, "/", size, f"In teams of {size}: {{eq}} teams.")
    return " ".join(q), c, {"place": where}


_TEMPLATES: dict[str, Callable[[random.Random, int], tuple]] = {
    "shopping": _t_shopping,
    "inventory": _t_inventory,
    "sharing": _t_sharing,
    "travel": _t_travel,
    "ages": _t_ages,
    "production": _t_production,
    "savings": _t_savings,
    "teams": _t_teams,
}
#: Names of the word-problem templates, for ``word_problems(..., templates=...)``.
WORD_TEMPLATES: tuple[str, ...] = tuple(_TEMPLATES)


def _word_stream(seed: Any, *, steps: int | Sequence[int] = (2, 4),
                 templates: Sequence[str] | None = None) -> Iterator[Problem]:
    check_seed(seed)
    lo, hi = int_range(steps, "steps", 1, _MAX_STEPS)
    names = tuple(templates) if templates is not None else WORD_TEMPLATES
    unknown = [t for t in names if t not in _TEMPLATES]
    if unknown or not names:
        raise ValueError(f"unknown word-problem templates {unknown!r}; choose from {WORD_TEMPLATES}")
    rng = random.Random(seed)
    while True:
        template = rng.choice(names)
        k = rng.randint(lo, hi)
        question, chain, meta = _TEMPLATES[template](rng, k)
        assert len(chain.equations) == k, (template, k)  # each template writes exactly k steps
        answer = chain.equations[-1][3]
        yield Problem(question=question, answer=str(answer), solution=chain.solution(),
                      task="word_problems",
                      meta={"template": template, "steps": k, "equations": chain.equations, **meta})


def word_problems(n: int, *, seed: Any, steps: int | Sequence[int] = (2, 4),
                  templates: Sequence[str] | None = None) -> list[Problem]:
    """``n`` multi-step word problems with non-negative integer answers.

    Args:
        steps: arithmetic steps per problem (the solution's chain length), an int or ``(low, high)``,
            between 1 and 8.
        templates: restrict to these template names (see :data:`WORD_TEMPLATES`); default all, drawn
            uniformly.
    """
    it = _word_stream(seed, steps=steps, templates=templates)
    return [next(it) for _ in range(example_count(n))]
