"""`posttrain synth math` without a model: the decontamination test sets (any number, built-in or
files, with errors naming the recipe key), bad seed input, the SFT rows' prompt, the question cleaner and
the few-shot schema."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.errors import DataError, RecipeError
from posttrain.synth.config import load_synth_recipe
from posttrain.synth.math import decontam_targets, decontaminate, run_synth, sft_row
from tests.synth_helpers import CLEAN, TESTS
from tests.synth_helpers import recipe as _recipe
from tests.synth_helpers import write_rows as _write_jsonl

# ---------------------------------------------------------------- filters


def test_sft_rows_use_the_eval_prompt():
    from posttrain.eval.math import MATH_PROMPT
    row = sft_row("What is 2+2?", "4 \\boxed{4}", answer="4")
    assert (row["messages"][0]["content"] == MATH_PROMPT.format(problem="What is 2+2?")
            and row["answer"] == "4")


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("rows,match,field", [
    ([{"prompt": "What is 1+1?"}], "needs a gold answer", "answer"),
    ([{"foo": "bar"}], None, None),
])
def test_bad_seed_rows_are_named(tmp_path, rows, match, field):
    (tmp_path / "seeds.in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n")
    with pytest.raises(Exception) as e:
        run_synth(_recipe(tmp_path), progress=False)
    assert "seeds.in.jsonl" in str(e.value) and ":1" in str(e.value)
    if match:
        assert match in str(e.value) and isinstance(e.value, DataError) and e.value.field == field


def test_an_empty_seed_file_is_an_error(tmp_path):
    (tmp_path / "seeds.in.jsonl").write_text("")
    with pytest.raises(Exception, match="no problems|empty|no records"):
        run_synth(_recipe(tmp_path), progress=False)


# ---------------------------------------------------------------- test sets


def _recipe_file(tmp_path, test_sets) -> Path:
    path = tmp_path / "synth.yaml"
    path.write_text(json.dumps({"name": "s", "output_dir": str(tmp_path), "model": {"name": "tiny-llama"},
                                "seeds": [{"path": "seeds.in.jsonl"}],
                                "decontam": {"test_sets": test_sets, "embedding": "off"}}))
    return path


AIME = "Find the number of ordered pairs of positive integers (m, n) such that m^2 n = 20^20 and m divides n."
AMC = "What is the smallest positive integer that leaves remainder 1 when divided by 2, 3, 4, 5 and 6?"
MINE = ("A cyclist rides 18 kilometres in 45 minutes. At that speed, how many kilometres does she ride in 2 "
        "hours?")


def test_three_test_sets_from_a_recipe_each_remove_their_planted_problem(tmp_path, monkeypatch):
    """Test sets as the paper names them beyond the shipped two: files and folders with their own fields,
    relative to the recipe's folder whatever the working directory."""
    _write_jsonl(tmp_path / "sets" / "aime24.jsonl",
                 [{"problem": AIME, "answer": "1"}, {"problem": TESTS[1], "answer": "3"}])
    # a folder
    _write_jsonl(tmp_path / "sets" / "amc23" / "part-0.jsonl", [{"question": AMC, "answer": "61"}])
    _write_jsonl(tmp_path / "sets" / "mine.jsonl", [{"text": MINE, "id": 7}])  # no answer, its own field
    path = _recipe_file(tmp_path, [{"name": "aime24", "path": "sets/aime24.jsonl"}, {"path": "sets/amc23"},
                                   {"path": "sets/mine.jsonl", "field": "text"}])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    recipe = load_synth_recipe(path)
    tests = decontam_targets(recipe)
    assert tests == [("aime24", AIME), ("aime24", TESTS[1]), ("sets/amc23", AMC), ("sets/mine.jsonl", MINE)]
    planted = [AIME.upper(), AMC.replace("?", " ?"), MINE]  # each lightly edited or verbatim
    rows = [{"problem": p, "solution": "x \\boxed{1}", "answer": "1", "origin": "new", "problem_id": f"p{i}"}
            for i, p in enumerate(CLEAN + planted)]
    clean, removed, counts = decontaminate(recipe, rows, tests)
    assert [r["problem"] for r in clean] == CLEAN
    labels = ["aime24", "sets/amc23", "sets/mine.jsonl"]
    assert {r["problem"]: r["test_set"] for r in removed} == dict(zip(planted, labels))
    assert counts["problems_removed_by_test_set"] == {"aime24": 1, "sets/amc23": 1, "sets/mine.jsonl": 1}
    assert counts["test_problems"] == {"aime24": 2, "sets/amc23": 1, "sets/mine.jsonl": 1}


def test_a_missing_test_set_file_names_the_recipe_key(tmp_path):
    _write_jsonl(tmp_path / "a.jsonl", [{"problem": AIME}])
    _write_jsonl(tmp_path / "b.jsonl", [{"problem": AMC}])
    path = _recipe_file(tmp_path, [{"path": "a.jsonl"}, "b.jsonl", {"name": "aime24",
                                                                    "path": "sets/aime24.jsonl"}])
    with pytest.raises(RecipeError,
                       match=r"decontam\.test_sets\[2\]\.path: file not found: .*sets/aime24\.jsonl"):
        load_synth_recipe(path)
    path = _recipe_file(tmp_path, ["a.jsonl", "aime24"])  # a string that is no built-in is a path
    with pytest.raises(RecipeError, match=r"decontam\.test_sets\[1\]\.path: file not found: .*aime24"):
        load_synth_recipe(path)
    path = _recipe_file(tmp_path, [{"name": "aime24"}])
    with pytest.raises(RecipeError,
                       match=r"decontam\.test_sets\[0\]\.name: 'aime24' is not a built-in test set "
                                          r"\(those are gsm8k, math500\)"):
        load_synth_recipe(path)


def test_a_test_set_without_the_problem_field_names_the_file_and_the_key(tmp_path):
    _write_jsonl(tmp_path / "a.jsonl", [{"text": AIME}])
    with pytest.raises(DataError,
                       match=r"a\.jsonl:1: no problem field: .*name it in decontam\.test_sets\[0\]\.field"):
        decontam_targets(load_synth_recipe(_recipe_file(tmp_path, ["a.jsonl"])))
    with pytest.raises(DataError, match=r"looked for 'body'"):
        decontam_targets(load_synth_recipe(_recipe_file(tmp_path, [{"path": "a.jsonl", "field": "body"}])))


def test_built_in_names_resolve_under_the_shared_data_folder_and_a_missing_one_fails_before_sampling(tmp_path,
                                                                                                   monkeypatch):
    shared = tmp_path / "shared"
    _write_jsonl(shared / "gsm8k" / "test.jsonl", [{"question": TESTS[0], "answer": "#### 18"}])
    monkeypatch.setenv("POSTTRAIN_SHARED_DATA", str(shared))
    (tmp_path / "seeds.in.jsonl").write_text(json.dumps({"question": "What is 1+1?",
                                                         "answer": "#### 2"}) + "\n")
    path = _recipe_file(tmp_path, ["gsm8k", {"name": "math500"}])  # the shipped recipe's form, and a mapping
    recipe = load_synth_recipe(path)  # a built-in's file is the machine's business: not looked for at load
    assert [t.label for t in recipe.decontam.test_sets] == ["gsm8k", "math500"]
    with pytest.raises(RecipeError,
                       match=r"decontam\.test_sets\[1\]: the built-in test set 'math500' is not on "
                                          r"this machine"):
        run_synth(recipe, progress=False)
    assert not recipe.run_dir.exists()  # nothing sampled
    recipe = load_synth_recipe(path, ["decontam.test_sets=[gsm8k]"])
    assert decontam_targets(recipe) == [("gsm8k", TESTS[0])]


def test_the_default_test_sets_are_the_shipped_two():
    from posttrain.synth.config import DecontamSettings
    assert [t.label for t in DecontamSettings().test_sets] == ["gsm8k", "math500"]


@pytest.mark.parametrize("text,ok", [
    ("Problem: Sara has 5 pens and buys 3 more. How many pens does she have?", True),
    ("Sara has 5 pens and buys 3 more. 5 + 3 = 8.\nThe answer is 8.", False),  # an answer, not a problem
    ("Sara has 5 pens and buys 3 more pens today.", False),  # no question
    ("How many?", False),  # too short
])
def test_clean_question_keeps_problems_only(text, ok):
    from posttrain.synth.math import clean_question
    out = clean_question(text)
    assert (out is not None) == ok and (not ok or not out.lower().startswith("problem:"))


def test_the_schema_allows_every_few_shot_example():
    from posttrain.synth.config import FEW_SHOT_MAX
    from posttrain.synth.math import FEW_SHOT
    assert len(FEW_SHOT) == FEW_SHOT_MAX
