"""Shared inputs of the `posttrain synth math` tests (tests/unit/synth, tests/integration/synth,
tests/distributed/synth): GSM8K-like test problems, a paraphrase of one and clean problems; a small
synthesis recipe; the pipeline's seed and test-set files and the stage files it writes; and a finished
synthesis run for experiments/math_synth.py (tests/*/experiments/test_math_synth.py)."""
from __future__ import annotations

import json
from pathlib import Path

from posttrain.synth.config import load_synth_recipe
from posttrain.synth.math import sft_row, write_jsonl

TESTS = ["Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
         "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
         "per fresh duck egg. How much in dollars does she make every day at the farmers' market?",
         "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it "
         "take?"]
PARAPHRASE = ("Every day Janet's ducks produce 16 eggs. Three of them she eats at breakfast and four go into "
              "muffins she bakes for friends. The rest she sells at the market for $2 each. How many dollars "
              "does she earn per day?")
CLEAN = ["A farmer plants 7 rows of 12 trees and then removes 5 trees. How many trees remain?",
         "Sara reads 20 pages a day for a week and then 35 pages on Sunday. How many pages did she read?"]


def recipe(tmp_path, **over):
    """A synthesis recipe on the tiny model, seeds from tmp_path/seeds.in.jsonl, one test set file (an
    unrelated problem unless the test wrote one), the embedding pass off; `over` replaces top-level keys."""
    cfg = {"name": "s", "output_dir": str(tmp_path), "model": {"name": "tiny-llama"},
           "seeds": [{"path": str(tmp_path / "seeds.in.jsonl")}],
           "solutions": {"k": 2, "max_new_tokens": 8}, "questions": {"per_seed": 1, "k": 2,
                                                                     "max_new_tokens": 12},
           "decontam": {"test_sets": [str(tmp_path / "test.jsonl")], "embedding": "off"}, "batch_size": 8,
           **over}
    path = tmp_path / "synth.yaml"
    path.write_text(json.dumps(cfg))
    if not (tmp_path / "test.jsonl").exists():  # a recipe's test set must exist when it loads
        (tmp_path / "test.jsonl").write_text(json.dumps({"question": "Unrelated?",
                                                         "answer": "#### 1"}) + "\n")
    return load_synth_recipe(path)


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Rows as JSON lines, the folder made if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- the pipeline

BAKER = "A baker makes 14 loaves in the morning and 9 loaves in the afternoon. How many loaves does he make?"


def inputs(tmp_path):
    """Three seed problems and a test set holding seed problem 1 and BAKER."""
    seeds = [{"question": f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?",
              "answer": f"#### {2 * i + 2}"} for i in range(3)]
    (tmp_path / "seeds.in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seeds))
    # seed problem 1 and the new problem the fake teacher writes for seed 0 are test problems
    write_rows(tmp_path / "test.jsonl", [{"question": seeds[1]["question"], "answer": "#### 4"},
                                         {"question": BAKER, "answer": "#### 23"}])


# the stage files the pipeline writes, and those made by sampling (their log-probs depend on the batch)
SAMPLED = {"solutions.jsonl", "questions.raw.jsonl", "new_solutions.jsonl"}
OUTPUTS = ["seeds.jsonl", "solutions.jsonl", "questions.raw.jsonl", "new_problems.jsonl",
           "new_solutions.jsonl",
           "filtered.jsonl", "synth.jsonl", "removed.jsonl"]
# The random model is near uniform over 49k tokens, where the float rounding another batch composition gives
# (a resumed or sharded run samples its rows in other batches) moves a draw to the next token now and then:
# a narrow nucleus and greedy questions keep the draws apart. Their log-probs agree to rounding.
NARROW = dict(solutions={"k": 2, "max_new_tokens": 8, "top_p": 0.0005},
              questions={"per_seed": 1, "k": 2, "max_new_tokens": 12, "temperature": 0})


def synth_run(tmp_path):
    """A fabricated finished synthesis run (tmp_path/synth): its recipe, three seed problems and a
    synth.jsonl of seed and new solutions, for experiments/math_synth.py."""
    run = tmp_path / "synth"
    run.mkdir()
    seeds_file = tmp_path / "seeds.in.jsonl"
    seeds_file.write_text("".join(json.dumps({"question": f"What is {i} + 2?",
                                              "answer": f"{i} + 2 = {i + 2}.\n#### {i + 2}"})
                                  + "\n" for i in range(3)))
    (run / "recipe.yaml").write_text(json.dumps({"name": "synth", "model": {"name": "tiny-llama"},
                                                 "seeds": [{"path": str(seeds_file), "format": "gsm8k"}]}))
    write_jsonl(run / "seeds.jsonl", [{"id": i, "problem": f"What is {i} + 2?", "answer": str(i + 2),
                                       "source": 0}
                                      for i in range(3)])
    rows = [sft_row("What is 0 + 2?", f"0 + 2 = 2 \\boxed{{2}} v{k}", origin="seed", problem_id="seed-0",
                    answer="2")
            for k in range(2)]
    rows += [sft_row("What is 2 + 2?", "\\boxed{4}", origin="seed", problem_id="seed-2", answer="4"),
             sft_row("What is 7 + 1?", "\\boxed{8}", origin="new", problem_id="new-0", answer="8")]
    write_jsonl(run / "synth.jsonl", rows)
    return run
