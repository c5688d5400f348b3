"""Converters: GSM8K, MATH, HH-RLHF, prompt/completion; and the real data sets when present."""
import pytest

import posttrain.data
import posttrain.data.answers as answers
import posttrain.data.converters as converters
from posttrain.data import clean_gsm8k_solution, gsm8k_final_answer, load_records, parse_hh_dialogue
from posttrain.data.converters import (
    gsm8k_to_conversation,
    gsm8k_to_prompt,
    hh_rlhf_to_pair,
    math_to_prompt,
    prompt_completion_to_conversation,
)
from posttrain.errors import DataError
from tests.data_helpers import require_data

GSM = {"question": "Janet has 3 ducks and buys 1,000 more. How many?",
       "answer": "She has 3 + 1000 = <<3+1000=1003>>1003 ducks.\nSo <<1003*1=1003>>1003 in all.\n#### 1,003"}


def test_gsm8k_solution_styles():
    assert gsm8k_final_answer(GSM["answer"]) == "1003"
    assert clean_gsm8k_solution(GSM["answer"]) == \
        "She has 3 + 1000 = 1003 ducks.\nSo 1003 in all.\nThe answer is 1003."
    assert clean_gsm8k_solution(GSM["answer"], "boxed").endswith("\nThe answer is $\\boxed{1003}$.")
    assert clean_gsm8k_solution(GSM["answer"], "hash").endswith("in all.\n#### 1003")
    conv = gsm8k_to_conversation(GSM)
    assert conv.messages[0] == {"role": "user", "content": GSM["question"]}
    assert conv.meta["answer"] == "1003"
    rec = gsm8k_to_prompt(GSM)
    assert rec.answer == "1003" and rec.prompt[0]["content"] == GSM["question"]


def test_gsm8k_without_final_answer():
    with pytest.raises(DataError, match=r"x.jsonl:4, field 'answer': no final answer line '#### N'"):
        gsm8k_to_conversation({"question": "q", "answer": "it is 4"}, file="x.jsonl", line=4)


@pytest.mark.parametrize("solution, gold, self_consistent", [
    (r"So $x = \boxed {\frac{1}{2}}$.", r"\frac{1}{2}", True),            # a space before the brace
    (r"First \boxed{1}, then \boxed{\{1, \{2\}\}}", r"\{1, \{2\}\}", False),  # the last box; nested braces
    (r"\boxed{7} and a broken \boxed{8", "7", True),                     # an unclosed box is not an answer
])
def test_math_gold_is_read_with_the_graders_last_boxed(solution, gold, self_consistent):
    assert converters.last_boxed is posttrain.data.last_boxed is answers.last_boxed
    rec = math_to_prompt({"problem": "p", "solution": solution})
    assert rec.answer == gold
    # the grader reads the same boxes: a solution is right against its own gold unless it boxes two answers
    assert answers.grade(solution, rec.answer) is self_consistent


def test_math_without_answer_or_box():
    with pytest.raises(DataError, match=r"no 'answer' field and no \\boxed\{\} in the solution"):
        math_to_prompt({"problem": "p", "solution": "it is 4"})


def test_hh_dialogue_parsing_merges_split_turns():
    text = "\n\nHuman: hi\n\nAssistant: one\n\nAssistant:  two\n\nHuman: ok\n\nAssistant: Human: odd but kept"
    assert parse_hh_dialogue(text) == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "one\n\ntwo"},
        {"role": "user", "content": "ok"}, {"role": "assistant", "content": "Human: odd but kept"}]


def test_hh_pair():
    prefix = "\n\nHuman: What is 2+2?\n\nAssistant: Why?\n\nHuman: Tell me."
    pair = hh_rlhf_to_pair({"chosen": prefix + "\n\nAssistant: 4.", "rejected": prefix + "\n\nAssistant: 5."})
    assert pair.prompt == [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant",
                                                                         "content": "Why?"},
                           {"role": "user", "content": "Tell me."}]
    assert (pair.chosen, pair.rejected) == ("4.", "5.")


@pytest.mark.parametrize("row, expected", [
    ({"chosen": "\n\nHuman: q\n\nAssistant: ", "rejected": "\n\nHuman: q\n\nAssistant: no"},
     "f:2, field 'chosen': empty response"),
    ({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: other\n\nAssistant: b"},
     "field 'rejected': chosen and rejected dialogues differ before the final reply (at turn 1)"),
    ({"chosen": "\n\nHuman: q\n\nAssistant: a\n\nHuman: more", "rejected": "\n\nHuman: q\n\nAssistant: b"},
     "field 'chosen': the dialogue does not end with an Assistant turn"),
    ({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: a"},
     "field 'rejected': chosen and rejected are identical"),
    ({"chosen": "no turns", "rejected": "x"}, "field 'chosen': text before the first"),
])
def test_hh_errors(row, expected):
    with pytest.raises(DataError) as e:
        hh_rlhf_to_pair(row, file="f", line=2)
    assert expected in str(e.value)


def test_prompt_completion():
    c = prompt_completion_to_conversation({"prompt": [{"role": "system", "content": "s"},
                                                      {"role": "user", "content": "q"}],
                                           "completion": [{"role": "assistant", "content": "a"}], "id": 1})
    assert [m["role"] for m in c.messages] == ["system", "user", "assistant"] and c.meta == {"id": 1}
    with pytest.raises(DataError, match="field 'completion': empty response"):
        prompt_completion_to_conversation({"prompt": "q", "completion": ""})


# ------------------------------------------------------------ real data

@pytest.mark.parametrize("split, n", [("train.jsonl", 7473), ("test.jsonl", 1319)])
def test_real_gsm8k_every_row_converts(split, n):
    path = require_data("gsm8k", split)
    convs = load_records(path, "sft")  # raises on any bad row
    prompts = load_records(path, "prompt")
    assert len(convs) == len(prompts) == n
    for c, p in zip(convs, prompts):
        sol = c.messages[-1]["content"]
        assert "<<" not in sol and "####" not in sol
        assert sol.endswith(f"The answer is {p.answer}.") and c.meta["answer"] == p.answer
        assert p.answer.lstrip("-").isdigit()


def test_real_hh_rlhf_converts_with_counted_skips():
    path = require_data("hh-rlhf", "harmless-base-test.jsonl.gz")
    pairs = load_records(path, "preference", on_invalid="skip")
    # 2,312 rows: 4 have an empty final chosen reply (lines 87, 517, 926, 1104); everything else converts,
    # including rows whose reply was split by a stray "\n\nAssistant:" (merged into one turn).
    assert len(pairs) == 2308
    assert [e.line for e in pairs.skipped] == [87, 517, 926, 1104]
    assert set(pairs.skip_reasons()) == {"field 'chosen': empty response (the final Assistant turn is empty)"}
    assert all(p.prompt[-1]["role"] == "user" and p.chosen != p.rejected for p in pairs)
    with pytest.raises(DataError, match=r"harmless-base-test.jsonl.gz:87, field 'chosen': empty response"):
        load_records(path, "preference")
    assert len(load_records(path, "prompt")) == 2312
