"""A training run on the tiny model with every tracker of train.report_to: each step's loss read back from
what TensorBoard, MLflow and W&B wrote under the run folder equals metrics.jsonl; the run's report.md and
its PNGs are written at its end."""
import pytest

from posttrain.config import load_recipe
from posttrain.runner import run_recipe
from tests.helpers import logged, write_recipe
from tests.tracker_helpers import mlflow_run, tensorboard_scalars, wandb_history


def test_every_tracker_gets_the_run_and_a_report_is_written(tmp_path, in_tmp_path):
    recipe = load_recipe(write_recipe(tmp_path), [f"output_dir={tmp_path / 'runs'}",
                                                  "train.report_to=[tensorboard, mlflow, wandb]"])
    summary = run_recipe(recipe, show_progress=False)
    run = recipe.run_dir
    steps = logged(run)
    want = [(h["step"], h["loss"]) for h in steps]
    assert [s for s, _ in want] == [1, 2]

    tb = tensorboard_scalars(run / "tensorboard")
    assert [s for s, _ in tb["loss"]] == [1, 2]
    assert [v for _, v in tb["loss"]] == pytest.approx([v for _, v in want], rel=1e-6)  # float32 events

    client, found = mlflow_run(run)
    assert [(m.step, m.value) for m in client.get_metric_history(found.info.run_id, "loss")] == want
    assert found.data.params["train.max_steps"] == "2" and found.info.run_name == recipe.name

    history, config = wandb_history(run)
    assert [(s, h["loss"]) for s, h in sorted(history.items())] == want
    assert config["method.name"] == "sft"

    report = (run / "report.md").read_text()
    assert summary["train"]["report"] == str(run / "report.md")
    assert "![loss](report/loss.png)" in report
    assert (run / "report" / "loss.png").read_bytes()[:4] == b"\x89PNG"
