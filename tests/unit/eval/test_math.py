"""`posttrain eval math`: field-layout detection with clear errors, the majority vote, grading through the
one answer module, per-subject/level breakdowns."""
import pytest

from posttrain.errors import DataError
from posttrain.eval.math import (
    MATH_PROMPT,
    MathItem,
    breakdown,
    evaluate,
    item_from_row,
    load_items,
    majority,
)
from tests.data_helpers import require_data
from tests.data_helpers import write_lines as _jsonl


@pytest.mark.parametrize("row,gold", [
    ({"question": "Q?", "answer": "So 3 + 4 = 7.\n#### 7"}, "7"),  # GSM8K
    ({"problem": "P?", "solution": "... so $\\boxed{\\frac{1}{2}}$."}, "\\frac{1}{2}"),  # MATH without answer
    ({"problem": "P?", "solution": "worked", "answer": "42"}, "42"),  # answer before solution
    ({"prompt": "P?", "target": 5}, "5"),
    ({"query": "P?", "final_answer": "\\boxed{x+1}"}, "x+1"),
])
def test_layouts_are_detected(row, gold):
    assert item_from_row(row).answer == gold


def test_bad_rows_name_file_line_and_field(tmp_path):
    with pytest.raises(DataError, match=r"found \['q', 'sol'\].*one of \['problem'") as e:
        load_items(_jsonl(tmp_path / "a.jsonl", [{"q": "x", "sol": "y"}]))
    assert e.value.line == 1 and e.value.file.endswith("a.jsonl")
    with pytest.raises(DataError, match="no final answer in 'solution'") as e:
        load_items(_jsonl(tmp_path / "b.jsonl", [{"problem": "P", "answer": "1"}, {"problem": "P",
                                                                                   "solution": "no box"}]))
    assert e.value.line == 2 and e.value.field == "solution"
    with pytest.raises(DataError, match="non-empty string") as e:
        load_items(_jsonl(tmp_path / "c.jsonl", [{"problem": "  ", "answer": "1"}]))
    assert e.value.field == "problem"
    (tmp_path / "d.jsonl").write_text("")
    with pytest.raises(DataError, match="no problems"):
        load_items(tmp_path / "d.jsonl")
    with pytest.raises(DataError, match="no such file"):
        load_items(tmp_path / "missing.jsonl")


def test_majority_groups_equivalent_answers_and_breaks_ties_by_first_seen():
    assert majority(["1/2", "0.5", "\\frac{1}{2}", "3", "3"]) == ("1/2", 3)
    assert majority(["4", "5", "5", "4"]) == ("4", 2)  # tie: the group seen first
    assert majority([None, None, "7"]) == ("7", 1)
    assert majority([None, None]) == (None, 0)
    assert majority([]) == (None, 0)


def test_evaluate_grades_with_the_answer_module_and_breaks_down(monkeypatch):
    """A stand-in sampler returns fixed completions, so only the grading is under test."""
    from posttrain.generation import sampler
    from posttrain.generation.sampler import Sample

    greedy = ["so \\boxed{7}", "the answer is 3 or maybe 4", "\\boxed{0.5}"]
    votes = [["\\boxed{7}", "\\boxed{8}", "\\boxed{7}"], ["\\boxed{4}", "\\boxed{4}", "\\boxed{3}"],
             ["\\boxed{1/2}", "\\boxed{2}", "\\boxed{\\frac{1}{2}}"]]

    def fake(model, tok, prompts, params, **kw):
        texts = greedy if params.temperature == 0 else None
        out = [[Sample(i, j, (texts[i] if texts else votes[i][j]), [1], [0.0],
                       "stop") for j in range(params.n)]
               for i in range(len(prompts))]
        return out, sampler.SamplingStats()
    monkeypatch.setattr(sampler, "sample", fake)
    items = [MathItem("a", "7", {"subject": "Algebra", "level": 1}), MathItem("b", "3", {"subject": "Algebra",
                                                                                         "level": 2}),
             MathItem("c", "\\frac{1}{2}", {"subject": "Geometry", "level": 2})]
    monkeypatch.setattr("posttrain.data.template.encode_prompt", lambda tok, msgs, **kw: [1, 2])
    res = evaluate(None, None, items, k=3)
    assert [r["correct"] for r in res["rows"]] == [True, False, True]  # the hedge is wrong
    assert [r["maj_correct"] for r in res["rows"]] == [True, False, True]
    assert res["greedy_accuracy"] == pytest.approx(2 / 3) and res["maj_accuracy"] == pytest.approx(2 / 3)
    assert res["by_subject"] == {"Algebra": {"n": 2, "greedy_accuracy": 0.5, "maj_accuracy": 0.5},
                                 "Geometry": {"n": 1, "greedy_accuracy": 1.0, "maj_accuracy": 1.0}}
    assert breakdown(res["rows"], "level")["2"]["n"] == 2
    assert res["prompt"] == MATH_PROMPT.format(problem="<problem>") and "\\boxed{}" in res["prompt"]


def test_real_test_sets_load():
    gsm = load_items(require_data("gsm8k", "test.jsonl"))
    assert len(gsm) == 1319 and all(it.answer and "####" not in it.answer for it in gsm)
    m500 = load_items(require_data("math500", "test.jsonl"))
    assert len(m500) == 500 and {"subject", "level"} <= set(m500[0].meta)
