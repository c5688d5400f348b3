"""experiments/tool_use.py --report: built from the committed evaluation files alone (the runs do not
survive a session), arms paired with sft by example id and seed."""
import json

import pytest

from experiments import tool_use


def _eval(correct: list[bool], seed: int, steps: int | None) -> dict:
    rows = [{"id": f"e{i}", "correct": c} for i, c in enumerate(correct)]
    res = {"n": len(rows), "rows": rows, "date": "2026-12-02",
           "bfcl": {c: {"n": 2, "accuracy": 0.5} for c in tool_use.BFCL},
           "seal_tools": {"all": {k: {"f1": 0.25 + seed / 10} for k in
                                  ("tool_selection", "parameter_identification", "content_filling")}}}
    if steps is not None:
        res["train"] = {"steps": steps, "wall_time_s": 600.0}
    return res


def test_report_reads_evaluation_files_only(tmp_path, monkeypatch):
    evals, out = tmp_path / "evals", tmp_path / "out"
    evals.mkdir()
    sft = [False, False, True, True, False]
    mae = [True, True, True, False, False]  # vs sft: 2 wins, 1 loss per seed
    for seed in (0, 1):
        (evals / f"sft-seed{seed}.json").write_text(json.dumps(_eval(sft, seed, 12)))
        (evals / f"mae-seed{seed}.json").write_text(json.dumps(_eval(mae, seed, 12)))
    (evals / "irm-seed0.json").write_text(json.dumps(_eval(mae, 0, 6)))  # PPO from sft, seed 0 only
    (evals / "start.json").write_text(json.dumps(_eval(sft, 0, None)))
    monkeypatch.setattr(tool_use, "eval_sets", lambda a: pytest.fail("a report loads no data"))
    monkeypatch.setattr(tool_use, "train_arm", lambda *a: pytest.fail("a report trains nothing"))
    assert tool_use.main(["--report", "--evals", str(evals), "--out", str(out), "--runs",
                          str(tmp_path / "r")]) == 0
    text = (out / "tool_use_results.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| mae "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:4] == ["0 1", "12", "10 / 10"]
    assert cells[-2:] == ["4 / 2, p = 0.688", ""]  # the exact two-sided sign test of 4 wins, 2 losses
    assert cells[-5] == "0.300 ± 0.635"  # Seal tool F1 0.25 and 0.35: the t interval over 2 seeds
    irm = [c.strip() for c in next(x for x in text.splitlines()
                                   if x.startswith("| irm ")).strip("|").split("|")]
    # vs sft, its start
    assert irm[1:3] == ["0", "6"] and irm[-2:] == ["2 / 1, p = 1.000", "2 / 1, p = 1.000"]
    assert "| start | - | 0 | - |" in text and "| pkt " not in text  # arms without files are left out
    assert (out / "tool_use.png").stat().st_size > 1000 and "(tool_use.png)" in text


def test_report_refuses_unpaired_rows(tmp_path):
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "sft-seed0.json").write_text(json.dumps(_eval([True, False], 0, 12)))
    other = _eval([True, False], 0, 12)
    other["rows"][0]["id"] = "x"
    (evals / "mae-seed0.json").write_text(json.dumps(other))
    with pytest.raises(AssertionError):
        tool_use.main(["--report", "--seeds", "0", "--evals", str(evals), "--out", str(tmp_path / "o")])
