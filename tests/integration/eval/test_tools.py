"""`posttrain eval tools` sampling the tiny model, the report written."""
from __future__ import annotations

import json

from posttrain.cli import main
from tests.data_helpers import bfcl_files as _bfcl_files


def test_runs_a_model(tmp_path, capsys):
    data = _bfcl_files(tmp_path, n=2)
    out = tmp_path / "out"
    assert main(["eval", "tools", "--data", str(data), "--model", "tiny-llama", "--max-new-tokens", "4",
                 "--out-dir", str(out), "--quiet"]) == 0
    graded = [json.loads(x) for x in (out / data.stem / "graded.jsonl").read_text().splitlines()]
    assert len(graded) == 2 and all(isinstance(g["completion"], str) for g in graded)
    assert "accuracy" in capsys.readouterr().out
