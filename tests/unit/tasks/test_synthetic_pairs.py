import random

from posttrain.data.answers import extract_answer
from posttrain.tasks.synthetic import arithmetic
from posttrain.tasks.synthetic_pairs import corrupt_solution, generate_pairs, wrong_answer


def test_pairs_have_gold_chosen_and_wrong_rejected_and_flip_at_the_rate():
    rows = generate_pairs("arithmetic", 2000, seed=3, flip_rate=0.2)
    flipped = sum(r["meta"]["flipped"] for r in rows)
    assert 0.17 < flipped / len(rows) < 0.23
    for r in rows:
        good, bad = (r["rejected"], r["chosen"]) if r["meta"]["flipped"] else (r["chosen"], r["rejected"])
        assert extract_answer(good) == r["meta"]["answer"]
        assert extract_answer(bad) != r["meta"]["answer"] and good != bad


def test_wrong_answers_are_wrong_for_negative_and_zero_golds():
    rng = random.Random(0)
    for gold in ("-20", "0", "7", "12345"):
        assert all(wrong_answer(gold, rng) != gold for _ in range(200))


def test_corrupted_solution_changes_the_last_equation_too():
    p = arithmetic(1, seed=0)[0]
    bad = corrupt_solution(p, random.Random(1))
    assert (bad.splitlines()[0] != p.solution.splitlines()[0]
            and bad.splitlines()[-1].startswith("The answer is "))


def test_same_seed_same_pairs():
    assert generate_pairs("word_problems", 20, seed=1, flip_rate=0.3) == generate_pairs("word_problems", 20,
                                                                                        seed=1, flip_rate=0.3)


def test_word_problem_corruption_reaches_the_last_equation_with_units():
    from posttrain.tasks.synthetic import word_problems
    rng = random.Random(2)
    for p in word_problems(50, seed=4):
        bad = corrupt_solution(p, rng)
        assert bad.splitlines()[-2] != p.solution.splitlines()[-2], (p.solution, bad)
