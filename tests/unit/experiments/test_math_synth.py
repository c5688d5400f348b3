"""experiments/math_synth.py without a model: the three training sets are built at equal count from a
fabricated synthesis run, and the report's format is the one docs/results/math_synth.md shows."""
from argparse import Namespace

from experiments.math_synth import gold_rows, report, synthetic_rows
from tests.synth_helpers import synth_run as _synth_run


def test_sets_have_equal_counts_and_questions_add(tmp_path):
    run = _synth_run(tmp_path)
    gold = gold_rows(run)
    assert len(gold) == 3 and gold[0]["messages"][1]["content"].startswith("0 + 2 = 2")
    syn = synthetic_rows(run, len(gold), False)
    assert len(syn) == 3 and [r["problem_id"] for r in syn] == ["seed-0", "seed-2", "seed-0"]
    # cycles through kept solutions
    assert syn[0]["messages"][1]["content"] != syn[2]["messages"][1]["content"]
    assert len(synthetic_rows(run, len(gold), True)) == 4


def _grades(n: int, start: int, count: int) -> list[bool]:
    return [start <= i < start + count for i in range(n)]


# The tables of docs/results/math_synth.md part 2, as typed from the 2026-12-01 runs.
PAGE_TABLES = """\
| training set | rows | word problems: seed 0, seed 1 | mean ± 95% t (2 seeds) \
| GSM8K: seed 0, seed 1 | mean ± 95% t |
|---|---:|---:|---:|---:|---:|
| gold | 200 | 0.06, 0.09 | 0.075 ± 0.191 | 0.01, 0.00 | 0.005 ± 0.064 |
| synthetic | 200 | 0.13, 0.17 | 0.150 ± 0.254 | 0.02, 0.01 | 0.015 ± 0.064 |
| synthetic + new problems | 209 | 0.11, 0.17 | 0.140 ± 0.381 | 0.01, 0.03 | 0.020 ± 0.127 |

Paired against gold over the same (problem, seed) pairs — problems one arm solved and the other did not,
exact two-sided sign test:

| arm vs gold | eval set | arm only | gold only | sign test p |
|---|---|---:|---:|---:|
| synthetic | word problems | 23 | 8 | 0.011 |
| synthetic | GSM8K | 3 | 1 | 0.625 |
| synthetic + new problems | word problems | 20 | 7 | 0.019 |
| synthetic + new problems | GSM8K | 4 | 1 | 0.375 |

The t intervals (one degree of freedom) are over seeds on fixed eval sets and exclude the eval sets' own
sampling error (10% accuracy on 100 problems alone has a Wilson interval of 0.055–0.174).
"""


def test_the_report_writes_the_tables_the_page_shows():
    """The runs behind the page are gone, so their per-problem grades are too: these grades are built to
    give the page's counts (per-seed correct, and problems one arm solved and gold did not, and back);
    what is checked is that the report turns such runs into exactly the page's lines."""
    # (arm, seed): (start, count) of the correct problems among 100, word problems then GSM8K
    spans = {("gold", 0): ((0, 6), (0, 1)), ("gold", 1): ((0, 9), (0, 0)),
             ("synthetic", 0): ((3, 13), (1, 2)), ("synthetic", 1): ((5, 17), (0, 1)),
             ("synthetic_questions", 0): ((3, 11), (1, 1)), ("synthetic_questions", 1): ((4, 17), (0, 3))}
    rows = {"gold": 200, "synthetic": 200, "synthetic_questions": 209}
    results = []
    for (name, seed), (wp, gs) in spans.items():
        r = {"name": name, "seed": seed, "rows": rows[name], "word_problems_n": 100, "gsm8k_n": 100,
             "word_problems_correct": _grades(100, *wp), "gsm8k_correct": _grades(100, *gs)}
        for k in ("word_problems", "gsm8k"):
            r[k] = sum(r[f"{k}_correct"]) / 100
        results.append(r)
    a = Namespace(synth_run="runs/synth-math", seeds=[0, 1], steps=40, eval_limit=100, max_new_tokens=256,
                  overrides=[])
    title, written_by, tables = report(results, a).split("\n\n", 2)
    assert tables == PAGE_TABLES
    assert written_by.startswith("Written by `python -m experiments.math_synth --synth-run runs/synth-math "
                                 "--seeds 0 1 --steps 40 --eval-limit 100` ")
