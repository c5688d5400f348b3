"""The new data formats end to end on the tiny model: plain text with packing, an Alpaca CSV mixed with a
text file, skipped rows in the summary, and unpaired rows refused by SFT and DPO."""
import json

import datasets
import pandas as pd
import pytest

from posttrain.config import load_recipe
from posttrain.errors import DataError
from posttrain.runner import read_history, run_recipe

RECIPE = """
name: {name}
seed: 0
method: {{name: {method}}}
model: {{name: tiny-llama}}
data:
  train: {train}
  max_length: 64
  packing: {packing}
train: {{lr: 3.0e-3, micro_batch_size: 2, max_steps: 3, warmup_steps: 0, schedule: constant}}
"""


def run(tmp_path, train, *, name="r", method="sft", packing="false"):
    p = tmp_path / f"{name}.yaml"
    p.write_text(RECIPE.format(name=name, method=method, train=train, packing=packing))
    recipe = load_recipe(p, [f"output_dir={tmp_path / 'runs'}"])
    return recipe, run_recipe(recipe, show_progress=False)


def test_plain_text_trains_packed_with_every_token_supervised(tmp_path):
    pd.DataFrame({"text": [f"Story {i}: the fox jumped over {i} dogs." for i in range(8)]}).to_json(
        tmp_path / "docs.jsonl", orient="records", lines=True)
    recipe, summary = run(tmp_path, "{path: docs.jsonl}", packing="true")
    assert summary["data"]["examples"] == 8 and summary["data"]["text_examples"] == 8
    hist = read_history(recipe.run_dir)
    assert len(hist) == 3 and all(h["loss"] == h["loss"] for h in hist)


def test_alpaca_csv_and_text_mixture_with_skipped_rows_in_the_summary(tmp_path):
    counts = [" ".join(map(str, range(1, i + 2))) for i in range(6)]
    pd.DataFrame({"instruction": [f"Count to {i}." for i in range(6)], "input": [""] * 6,
                  "output": counts}).to_csv(tmp_path / "alpaca.csv", index=False)
    rows = [json.dumps({"text": f"Note {i}."}) for i in range(40)] + ['{"text": broken']
    (tmp_path / "notes.jsonl").write_text("\n".join(rows) + "\n")
    train = ("[{path: alpaca.csv, share: 0.5}, "
             "{path: notes.jsonl, share: 0.5, on_invalid: skip}]")
    _, summary = run(tmp_path, train)
    assert summary["data"]["examples"] == 12 and summary["data"]["text_examples"] == 6
    (reason,) = summary["data"]["invalid_rows"]
    assert reason.startswith("invalid JSON")
    saved = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert saved["data"]["invalid_rows"] == {reason: 1}


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_unpaired_rows_are_refused(tmp_path, method):
    datasets.Dataset.from_list([{"prompt": "Hi", "completion": "Hello", "label": True},
                                {"prompt": "Hi", "completion": "Go away", "label": False}]).to_json(
        str(tmp_path / "kto.jsonl"))
    with pytest.raises(DataError, match=r"unpaired preference data \(format 'unpaired'.*method kto"):
        run(tmp_path, "{path: kto.jsonl}", method=method)
