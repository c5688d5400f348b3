"""`posttrain synth math` on the tiny model: the filters (gold, majority with a minimum agreement,
lengths, exact and near duplicates), and the pipeline end to end on a fake teacher: planted test problems
removed at the last stage, and a kill mid-stage resumes to byte-identical files."""
from __future__ import annotations

import json

import pytest

from posttrain.synth.math import filter_solutions, run_synth, write_jsonl
from tests.helpers import assert_same_samples
from tests.synth_helpers import BAKER, NARROW, OUTPUTS, SAMPLED
from tests.synth_helpers import inputs as _inputs
from tests.synth_helpers import recipe as _recipe

# ---------------------------------------------------------------- filters


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


# ---------------------------------------------------------------- the pipeline


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
            return BAKER if i == 0 else (f"Ann has {i + 10} pens and buys {i + 3} more. "
                                         "How many pens does she have?")
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


def test_until_stops_after_the_stage_and_a_rerun_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    _inputs(tmp_path)
    _fake_teacher(monkeypatch)
    recipe = _recipe(tmp_path)
    stats = run_synth(recipe, progress=False, until="solutions")
    assert list(stats) == ["seeds", "solutions"]
    d = recipe.run_dir
    assert (d / "solutions.jsonl").exists() and not (d / "filtered.jsonl").exists()
    assert not (d / "report.md").exists()  # the report waits for the last stage
    stats = run_synth(recipe, progress=False)
    assert list(stats)[-1] == "decontam" and (d / "report.md").exists()
