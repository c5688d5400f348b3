"""Seal-Tools scores: hand-counted cases, and agreement with a transcription of the paper's script."""
from __future__ import annotations

import random
from functools import reduce

import pytest

from posttrain.data.tool_calls import ParseResult, ToolCall, parse_calls
from posttrain.tools.loaders import load_seal_tools
from posttrain.tools.seal import SealCounts, seal_counts, seal_scores
from tests.data_helpers import require_data

GOLD = [ToolCall("a", {"x": "1", "y": 2}), ToolCall("b", {"z": "API_call_0"})]


def _paper(golds: list[list[ToolCall]], preds: list[list[ToolCall] | None]) -> dict:
    """calculate_score_ToolLearning (fairyshine/Seal-Tools, LLM_Evaluation/src/llm_tools/evaluation/
    calculate.py), transcribed: `None` is an output that did not parse (the script's -1)."""
    fmt = api_ok = api_pred = api_gold = par_ok = par_pred = par_gold = 0
    for gold, pred in zip(golds, preds):
        gold_answer = [{"api": g.name, "parameters": g.arguments} for g in gold]
        api_gold += len(gold_answer)
        for g in gold_answer:
            par_gold += len(g["parameters"])
        if pred is not None:
            fmt += 1
            for p in [{"api": c.name, "parameters": c.arguments} for c in pred]:
                api_pred += 1
                par_pred += len(p["parameters"])
                idx = next((i for i, g in enumerate(gold_answer) if g["api"] == p["api"]), -1)
                if idx != -1:
                    api_ok += 1
                    for k in p["parameters"]:
                        if k in gold_answer[idx]["parameters"] and \
                                str(p["parameters"][k]) == str(gold_answer[idx]["parameters"][k]):
                            par_ok += 1
    out = {"AMOUNT": fmt / len(golds)}
    if api_ok * api_pred * api_gold > 0:
        out.update(P_api=api_ok / api_pred, R_api=api_ok / api_gold)
    if par_ok * par_pred * par_gold > 0:
        out.update(P_param=par_ok / par_pred, R_param=par_ok / par_gold)
    return out


def test_hand_counted():
    pred = parse_calls('[{"name": "a", "arguments": {"x": 1, "y": 3, "w": 0}}, '
                       '{"name": "c", "arguments": {}}]')
    c = seal_counts(pred, GOLD)
    assert (c.gold_calls, c.pred_calls, c.right_calls) == (2, 2, 1)
    assert (c.gold_params, c.pred_params, c.right_names, c.right_values) == (3, 3, 2, 1)  # "1" == 1 as str
    assert c.exact == 0 and c.parsed == 1
    s = seal_scores(c)
    assert s["tool_selection"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert s["parameter_identification"]["precision"] == pytest.approx(2 / 3)
    assert s["content_filling"]["recall"] == pytest.approx(1 / 3)
    assert seal_counts(parse_calls('[{"name": "b", "arguments": {"z": "API_call_0"}}, '
                                   '{"name": "a", "arguments": {"y": 2, "x": "1"}}]'), GOLD).exact == 1


def test_unparsable_predicts_nothing():
    c = seal_counts(ParseResult(False, error="unparsable"), GOLD)
    assert (c.parsed, c.pred_calls, c.gold_calls, c.gold_params) == (0, 0, 2, 3)
    assert seal_scores(c)["tool_selection"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_repeated_calls_are_matched_once():
    """The deviation from the paper's script: repeating a right call cannot push recall above 1."""
    gold = [ToolCall("a", {"x": 1})]
    pred = [ToolCall("a", {"x": 1})] * 3
    ours = seal_scores(seal_counts(ParseResult(True, pred), gold))
    assert (ours["tool_selection"]["recall"] == 1.0
            and ours["tool_selection"]["precision"] == pytest.approx(1 / 3))
    assert _paper([gold], [pred])["R_api"] == 3.0  # what the script reports
    two = [ToolCall("a", {"x": 1}), ToolCall("a", {"x": 2})]  # the best of the same-name gold calls is taken
    c = seal_counts(ParseResult(True, [ToolCall("a", {"x": 2}), ToolCall("a", {"x": 1})]), two)
    assert c.right_values == 2 and c.exact == 1


def _mutate(gold: list[ToolCall], names: list[str], rng: random.Random) -> list[ToolCall] | None:
    op = rng.choice(["same", "drop_call", "value", "drop_param", "extra_call", "unparsable", "rename",
                     "extra_param"])
    calls = [ToolCall(c.name, dict(c.arguments)) for c in gold]
    if op == "unparsable":
        return None
    if op == "drop_call" and len(calls) > 1:
        calls.pop(rng.randrange(len(calls)))
    elif op in ("value", "drop_param", "extra_param"):
        c = rng.choice(calls)
        if c.arguments and op != "extra_param":
            k = rng.choice(sorted(c.arguments))
            if op == "value":
                c.arguments[k] = str(c.arguments[k]) + "x"
            else:
                del c.arguments[k]
        else:
            c.arguments["zz"] = 1
    elif op in ("extra_call", "rename"):
        other = rng.choice([n for n in names if n not in {g.name for g in gold}])
        if op == "rename":
            calls[0] = ToolCall(other, calls[0].arguments)
        else:
            calls.append(ToolCall(other, {"q": 1}))
    rng.shuffle(calls)
    return calls


def test_agrees_with_the_papers_script_on_real_rows():
    path = require_data("seal-tools", "dev.jsonl")
    examples = [e for e in load_seal_tools(path) if len({c.name for c in e.calls}) == len(e.calls)]
    rng = random.Random(0)
    names = sorted({t["name"] for e in examples for t in e.tools})
    golds, preds = [e.calls for e in examples], [_mutate(e.calls, names, rng) for e in examples]
    ours = seal_scores(reduce(lambda a, b: a + b, (
        seal_counts(ParseResult(False, error="unparsable") if p is None else ParseResult(True, p), g)
        for g, p in zip(golds, preds)), SealCounts()))
    paper = _paper(golds, preds)
    assert len(examples) > 600 and ours["n"] == len(examples)
    assert ours["format_rate"] == pytest.approx(paper["AMOUNT"]) and paper["AMOUNT"] < 1
    assert ours["tool_selection"]["precision"] == pytest.approx(paper["P_api"])
    assert ours["tool_selection"]["recall"] == pytest.approx(paper["R_api"])
    assert ours["content_filling"]["precision"] == pytest.approx(paper["P_param"])
    assert ours["content_filling"]["recall"] == pytest.approx(paper["R_param"])
    assert 0.3 < ours["content_filling"]["f1"] < 0.95  # the mutations made a difference
