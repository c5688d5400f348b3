"""BFCL and Seal-Tools loaders: the real files, and bad rows named by file, line and field."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from posttrain.errors import DataError
from posttrain.tools.bfcl import check_bfcl, reference_calls
from posttrain.tools.loaders import bfcl_category, load_bfcl, load_seal_tools, load_tool_examples
from tests.data_helpers import BFCL_FN as FN
from tests.data_helpers import require_data

BFCL_COUNTS = {"simple_python": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200,
               "live_simple": 258, "irrelevance": 240}


@pytest.mark.parametrize("category, n", sorted(BFCL_COUNTS.items()))
def test_real_bfcl_files(category, n):
    path = require_data("bfcl", f"BFCL_v4_{category}.json")
    examples = load_tool_examples(path)
    assert len(examples) == n and {e.category for e in examples} == {category}
    assert all(e.source == "bfcl" and e.messages[-1]["role"] == "user" and e.tools for e in examples)
    if category == "irrelevance":
        assert all(e.possible_answer is None for e in examples)
        return
    # the reference calls built from the possible answers pass, but for two unsatisfiable live rows
    wrong = [e.id for e in examples
             if not check_bfcl(reference_calls(e.possible_answer, e.tools), e.tools, e.possible_answer,
                               e.category).correct]
    assert wrong == (["live_simple_106-63-0", "live_simple_112-68-0"] if category == "live_simple" else [])


def test_bfcl_categories_from_ids():
    assert bfcl_category("simple_python_12") == "simple_python"
    assert bfcl_category("live_simple_0-0-0") == "live_simple"
    assert bfcl_category("parallel_multiple_3") == "parallel_multiple"


def test_real_seal_tools_files():
    for name in ("dev.jsonl", "test_in_domain.jsonl"):
        path = require_data("seal-tools", name)
        examples = load_tool_examples(path)
        assert len(examples) == 700
        assert Counter(e.category for e in examples) == {"difficult": 500, "easy": 200}
        for e in examples:
            offered = [t["name"] for t in e.tools]
            assert {c.name for c in e.calls} <= set(offered)
            assert len(offered) == len({c.name for c in e.calls}) + 4 == len(set(offered))
    again = load_seal_tools(path, limit=20)
    assert [e.tools for e in again] == [e.tools for e in examples[:20]]  # the same draw every time
    other = load_seal_tools(path, limit=20, seed=1)
    assert [e.tools for e in other] != [e.tools for e in again]
    assert all(len(e.tools) == len({c.name for c in e.calls}) for e in load_seal_tools(path, limit=5,
                                                                                       distractors=0))


# --------------------------------------------------------------------------------------------- bad rows

ROW = {"id": "simple_python_0", "question": [[{"role": "user", "content": "q"}]], "function": [FN]}
ANSWER = {"id": "simple_python_0", "ground_truth": [{"f": {"a": [1]}}]}


def _bfcl(tmp_path, rows, answers=(ANSWER,)):
    (tmp_path / "possible_answer").mkdir(exist_ok=True)
    path = tmp_path / "BFCL_v4_simple_python.json"
    good = {**ROW, "id": "simple_python_1"}
    path.write_text(json.dumps(good) + "\n" + "".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "possible_answer" / path.name).write_text(
        json.dumps({**ANSWER,
                    "id": "simple_python_1"}) + "\n" + "".join(json.dumps(a) + "\n" for a in answers))
    return path


@pytest.mark.parametrize("row, answer, field, match, in_answers", [
    ({k: v for k, v in ROW.items() if k != "function"}, ANSWER, "function", "missing field", False),
    ({**ROW, "function": [{**FN, "parameters": {**FN["parameters"], "required": ["b"]}}]}, ANSWER,
     "function[0].parameters.required", "not in properties", False),
    ({**ROW, "question": [[{"role": "user", "content": "q"}], [{"role": "user", "content": "r"}]]}, ANSWER,
     "question", "multi-turn", False),
    ({**ROW, "question": [[{"role": "user", "content": 3}]]}, ANSWER, "question[0][0].content", "string",
     False),
    (ROW, {**ANSWER, "id": "simple_python_9"}, "id", "no possible answer", False),
    (ROW, {**ANSWER, "ground_truth": [{"g": {"a": [1]}}]}, "ground_truth[0]", "not among", True),
    (ROW, {**ANSWER, "ground_truth": [{"f": {"a": 1}}]}, "ground_truth[0].f.a", "list of allowed", True),
    (ROW, {**ANSWER, "ground_truth": []}, "ground_truth", "non-empty list", True),
])
def test_bad_bfcl_rows(tmp_path, row, answer, field, match, in_answers):
    path = _bfcl(tmp_path, [row], [answer])
    with pytest.raises(DataError, match=match) as e:
        load_bfcl(path)
    want = tmp_path / "possible_answer" / path.name if in_answers else path
    assert (e.value.file, e.value.line, e.value.field) == (str(want), 2, field)


def test_bfcl_without_answers_file(tmp_path):
    path = tmp_path / "BFCL_v4_simple_python.json"
    path.write_text(json.dumps(ROW) + "\n")
    with pytest.raises(DataError, match="no possible_answer file"):
        load_bfcl(path)
    (tmp_path / "BFCL_v4_irrelevance.json").write_text(json.dumps({**ROW, "id": "irrelevance_0"}) + "\n")
    assert load_bfcl(tmp_path / "BFCL_v4_irrelevance.json")[0].possible_answer is None


TOOL = {"api_name": "getX", "api_description": "d", "field": "A/b", "parameters": {"q": {"type": "str",
        "description": "q"}}, "required": ["q"], "responses": {"r": {"type": "int", "description": "r"}}}


def _seal(tmp_path, rows, tools=(TOOL,)):
    (tmp_path / "tool.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tools))
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("row, field, match", [
    ({"id": "dev-easy-0", "calling": [{"api": "getX", "parameters": {}}]}, "query", "missing field"),
    ({"id": "dev-easy-0", "query": "q", "calling": [{"api": "getY", "parameters": {}}]}, "calling[0].api",
     "unknown api"),
    ({"id": "dev-easy-0", "query": "q", "calling": [{"api": "getX", "parameters": {"zz": 1}}]},
     "calling[0].parameters", "not declared"),
    ({"id": "dev-easy-0", "query": "q", "calling": []}, "calling", "non-empty list"),
])
def test_bad_seal_rows(tmp_path, row, field, match):
    ok = {"id": "dev-easy-1", "query": "q", "calling": [{"api": "getX", "parameters": {"q": "v"}}]}
    path = _seal(tmp_path, [ok, row])
    with pytest.raises(DataError, match=match) as e:
        load_seal_tools(path)
    assert (e.value.file, e.value.line, e.value.field) == (str(path), 2, field)


def test_bad_seal_tool_file(tmp_path):
    ok = {"id": "dev-easy-1", "query": "q", "calling": [{"api": "getX", "parameters": {"q": "v"}}]}
    path = _seal(tmp_path, [ok], [TOOL, {**TOOL, "required": ["nope"]}])
    with pytest.raises(DataError, match="not in properties") as e:
        load_seal_tools(path)
    assert (e.value.file, e.value.line) == (str(tmp_path / "tool.jsonl"), 2)
    path = _seal(tmp_path, [ok], [TOOL, TOOL])
    with pytest.raises(DataError, match="duplicate api_name") as e:
        load_seal_tools(path)
    (tmp_path / "tool.jsonl").unlink()
    with pytest.raises(DataError, match="tool.jsonl"):
        load_seal_tools(path)


def test_seal_tool_specs_use_json_schema_types(tmp_path):
    ok = {"id": "dev-difficult-1", "query": "q", "calling": [{"api": "getX", "parameters": {"q": "v"}}]}
    (ex,) = load_seal_tools(_seal(tmp_path, [ok]))
    assert ex.category == "difficult" and ex.messages == [{"role": "user", "content": "q"}]
    assert ex.tools == [{"name": "getX", "description": "d", "field": "A/b", "responses": TOOL["responses"],
                         "parameters": {"type": "object", "required": ["q"],
                                        "properties": {"q": {"type": "string", "description": "q"}}}}]


def test_unknown_format(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"prompt": "hi"}) + "\n")
    with pytest.raises(DataError, match="neither a BFCL row") as e:
        load_tool_examples(path)
    assert e.value.line == 1
