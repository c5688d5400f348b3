"""`posttrain eval tools` on a predictions file: BFCL and Seal-Tools, reports written, clear errors."""
from __future__ import annotations

import json

import pytest

from posttrain.cli import main
from posttrain.data.tool_calls import format_calls
from posttrain.tools.bfcl import reference_calls
from posttrain.tools.loaders import load_tool_examples
from tests.data_helpers import bfcl_files as _bfcl_files
from tests.data_helpers import require_data


def test_scores_a_predictions_file(tmp_path, capsys):
    data = _bfcl_files(tmp_path)
    preds = tmp_path / "preds.jsonl"
    preds.write_text("\n".join(json.dumps(r) for r in [
        {"id": "simple_python_0", "completion": 'Calling: [{"name": "f", "arguments": {"a": 0}}]'},
        {"id": "simple_python_1", "calls": [{"name": "f", "arguments": {"a": 2}}]},  # wrong value
        {"id": "simple_python_2", "text": "I don't know."},  # no call
        {"id": "simple_python_3", "completion": '```json\n{"name": "f", "arguments": {"a": 3}}\n```'},
        {"id": "other_7", "completion": "ignored"}]) + "\n")
    out = tmp_path / "out"
    assert main(["eval", "tools", "--data", str(data), "--predictions", str(preds), "--out-dir",
                 str(out)]) == 0
    assert "simple_python        accuracy 0.500  n 4" in capsys.readouterr().out
    graded = [json.loads(x) for x in (out / data.stem / "graded.jsonl").read_text().splitlines()]
    assert [(g["correct"], g["error"]) for g in graded] == [(True, None), (False, "value_error"),
                                                           (False, "unparsable"), (True, None)]
    report = (out / data.stem / "report.md").read_text()
    assert "| simple_python | 4 | 0.5 | correct 2, unparsable 1, value_error 1 |" in report


def test_missing_predictions_are_an_error(tmp_path, capsys):
    data = _bfcl_files(tmp_path)
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps({"id": "simple_python_0", "completion": "[]"}) + "\n")
    assert main(["eval", "tools", "--data", str(data), "--predictions", str(preds),
                 "--out-dir", str(tmp_path / "o")]) == 2
    assert "3 example(s) have no prediction, first 'simple_python_1'" in capsys.readouterr().err
    preds.write_text(json.dumps({"id": "simple_python_0", "answer": "[]"}) + "\n")
    assert main(["eval", "tools", "--data", str(data), "--predictions", str(preds)]) == 2
    assert "preds.jsonl:1" in capsys.readouterr().err
    assert main(["eval", "tools", "--predictions", str(preds)]) == 2  # no --data


def test_real_data_end_to_end(tmp_path, capsys):
    """Reference answers for BFCL parallel and Seal-Tools gold calls score as they should."""
    bfcl = require_data("bfcl", "BFCL_v4_parallel.json")
    seal = require_data("seal-tools", "test_in_domain.jsonl")
    preds = tmp_path / "preds.jsonl"
    rows = [{"id": e.id, "completion": format_calls(reference_calls(e.possible_answer, e.tools))}
            for e in load_tool_examples(bfcl, limit=30)]
    rows += [{"id": e.id, "calls": [c.to_dict() for c in e.calls]} for e in load_tool_examples(seal,
                                                                                               limit=30)]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert main(["eval", "tools", "--data", str(bfcl), str(seal), "--predictions", str(preds), "--limit",
                 "30",
                 "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parallel             accuracy 1.000  n 30" in printed
    assert "seal-tools all       format 1.000  exact 1.000  tool F1 1.000" in printed
    assert (out / "test_in_domain" / "report.md").read_text().count("1.000 / 1.000 / 1.000") == 6  # all, easy


def test_eval_help_lists_tools(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "tools" in capsys.readouterr().out
