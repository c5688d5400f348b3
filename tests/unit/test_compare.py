"""`posttrain compare RUN...` (posttrain/compare.py): the settings in which runs differ, their final metrics,
their loss curves on one plot."""
import json

import pytest

from posttrain.cli import main
from posttrain.compare import compare_runs, comparison_table, plot_losses
from posttrain.errors import PosttrainError

RECIPE = """name: {name}
output_dir: runs
method: {{name: sft}}
model: {{name: tiny-llama}}
train: {{lr: {lr}, max_steps: {steps}, schedule: cosine, betas: [0.9, 0.999]}}
"""


def run(tmp_path, name, lr, losses, eval_loss=None):
    d = tmp_path / "runs" / name
    d.mkdir(parents=True)
    (d / "recipe.yaml").write_text(RECIPE.format(name=name, lr=lr, steps=len(losses)))
    rows = [{"step": i + 1, "loss": v, "tokens_per_s": 100.0} for i, v in enumerate(losses)]
    if eval_loss is not None:
        rows[-1]["eval/loss"] = eval_loss
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_table_of_differing_settings_and_final_metrics(tmp_path):
    a = run(tmp_path, "a", 0.001, [2.0, 1.5, 1.0], eval_loss=1.2)
    b = run(tmp_path, "b", 0.01, [2.0, 1.0])
    result = compare_runs([a, b])
    assert result["labels"] == ["a", "b"]
    # name and output_dir say where a run is, not how it trains; what is the same is left out
    assert result["settings"] == [["train.lr", 0.001, 0.01], ["train.max_steps", 3, 2]]
    assert result["metrics"] == [["steps", 3, 2], ["loss", 1.0, 1.0], ["eval/loss", 1.2, "-"]]
    table = comparison_table(result)
    assert table.splitlines()[0] == "|  | a | b |"
    assert "| train.lr | 0.001 | 0.01 |" in table
    assert "| final loss | 1 | 1 |" in table and "| final eval/loss | 1.2 | - |" in table
    assert "tokens_per_s" not in table and "schedule" not in table
    assert result["curves"]["a"] == ([1, 2, 3], [2.0, 1.5, 1.0])
    png = plot_losses(result, tmp_path / "cmp.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_same_named_runs_are_told_apart_by_path(tmp_path):
    a = run(tmp_path / "x", "r", 0.001, [1.0])
    b = run(tmp_path / "y", "r", 0.001, [2.0])
    result = compare_runs([a, b])
    assert result["labels"] == [str(a), str(b)]
    assert "| (settings) | same | same |" in comparison_table(result)


def test_not_a_run_folder(tmp_path):
    with pytest.raises(PosttrainError, match="no metrics.jsonl"):
        compare_runs([tmp_path])


def test_cli_compare(tmp_path, capsys):
    a = run(tmp_path, "a", 0.001, [2.0, 1.5])
    b = run(tmp_path, "b", 0.002, [2.0, 1.25])
    assert main(["compare", str(a), str(b), "--plot", str(tmp_path / "loss.png")]) == 0
    out = capsys.readouterr().out
    assert "| train.lr | 0.001 | 0.002 |" in out and "| final loss | 1.5 | 1.25 |" in out
    assert f"loss curves -> {tmp_path / 'loss.png'}" in out
    assert (tmp_path / "loss.png").is_file()
    assert main(["compare", str(tmp_path / "nope")]) == 2
