"""The trackers of train.report_to (posttrain/trackers.py) behind MetricsLog (posttrain/step_metrics.py): each
step's scalars read back from what TensorBoard, MLflow and W&B themselves wrote under the run folder; a
tracker asked for and not installed is an error naming the extra."""
import json
from pathlib import Path

import pytest

from posttrain import trackers
from posttrain.errors import RecipeError
from posttrain.step_metrics import MetricsLog
from tests.tracker_helpers import mlflow_run, tensorboard_scalars, wandb_history

RECORDS = [{"step": 1, "loss": 2.5, "lr": 1e-3, "tokens": 40, "note": "text is not a metric"},
           {"step": 2, "loss": 2.0, "lr": 5e-4, "tokens": 40, "eval/loss": 2.25},
           {"step": 3, "loss": 1.75, "lr": 0.0, "tokens": 40}]


def write(run: Path, names, records=RECORDS, resume_step: int = 0) -> None:
    log = MetricsLog(run, resume_step, trackers.open_trackers(names, run, resume_step=resume_step,
                                                                settings={"lr": 1e-3, "max_steps": 3}))
    for r in records:
        log.write(r)
    log.close()


def test_tensorboard_gets_every_scalar_and_a_resume_rewrites_the_steps_after_its_checkpoint(tmp_path):
    run = tmp_path / "run"
    write(run, ["tensorboard"])
    got = tensorboard_scalars(run / "tensorboard")
    assert got["loss"] == [(1, 2.5), (2, 2.0), (3, 1.75)]
    assert got["eval/loss"] == [(2, 2.25)]
    assert set(got) == {"loss", "lr", "tokens", "eval/loss"}  # numbers only, not the step itself
    write(run, ["tensorboard"], [{"step": 3, "loss": 1.5}], resume_step=2)
    assert tensorboard_scalars(run / "tensorboard")["loss"] == [(1, 2.5), (2, 2.0), (3, 1.5)]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["loss"] for ln in lines] == [2.5, 2.0, 1.5]


def history(client, run, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]


def test_mlflow_file_store_in_the_run_folder(tmp_path):
    run = tmp_path / "run"
    write(run, ["mlflow"])
    client, found = mlflow_run(run)
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    assert history(client, found, "loss") == [(1, 2.5), (2, 2.0), (3, 1.75)]
    assert history(client, found, "eval/loss") == [(2, 2.25)]
    assert found.data.params == {"train.lr": "0.001", "train.max_steps": "3"}
    # resumed: the same MLflow run goes on
    write(run, ["mlflow"], [{"step": 4, "loss": 1.5}], resume_step=3)
    assert mlflow_run(run)[1].info.run_id == found.info.run_id
    assert [s for s, _ in history(client, found, "loss")] == [1, 2, 3, 4]


def test_mlflow_records_the_recipe_the_runner_saved(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: run\nmodel: {name: tiny-llama}\n"
                                     "train: {lr: 0.01, max_steps: 3}\n")
    write(run, ["mlflow"])
    _, found = mlflow_run(run)
    assert found.data.params == {"name": "run", "model.name": "tiny-llama", "train.lr": "0.01",
                                 "train.max_steps": "3"}


def test_wandb_offline_run_in_the_run_folder(tmp_path):
    run = tmp_path / "run"
    write(run, ["wandb"])
    history, config = wandb_history(run)
    assert {s: h["loss"] for s, h in history.items()} == {1: 2.5, 2: 2.0, 3: 1.75}
    assert history[2]["eval/loss"] == 2.25 and "note" not in history[1]
    assert config == {"train.lr": 1e-3, "train.max_steps": 3}
    run_id = (run / "wandb" / "posttrain-run-id").read_text()
    assert (run / "wandb").glob(f"offline-run-*-{run_id}")


def test_every_tracker_at_once(tmp_path):
    run = tmp_path / "run"
    write(run, ["tensorboard", "mlflow", "wandb"])
    assert tensorboard_scalars(run / "tensorboard")["loss"][-1] == (3, 1.75)
    assert wandb_history(run)[0][3]["loss"] == 1.75
    assert (run / "mlruns").is_dir()


def test_no_tracker_writes_metrics_jsonl_alone(tmp_path):
    run = tmp_path / "run"
    write(run, [])
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]


def test_a_tracker_not_installed_names_its_extra(monkeypatch):
    monkeypatch.setitem(trackers.TRACKERS, "wandb", ("posttrain_no_such_module", "wandb"))
    with pytest.raises(RecipeError, match=r"wandb, which is not installed: pip install 'posttrain\[wandb\]'"):
        trackers.check_installed(["tensorboard", "wandb"])
    trackers.check_installed(["tensorboard"])


def test_a_run_asking_for_a_missing_tracker_fails_before_any_work(tmp_path, monkeypatch, in_tmp_path):
    from posttrain.config import load_recipe
    from posttrain.runner import run_recipe
    from tests.helpers import write_recipe
    monkeypatch.setitem(trackers.TRACKERS, "mlflow", ("posttrain_no_such_module", "mlflow"))
    recipe = load_recipe(write_recipe(tmp_path), ["train.report_to=[mlflow]", f"output_dir={tmp_path}"])
    with pytest.raises(RecipeError, match=r"pip install 'posttrain\[mlflow\]'"):
        run_recipe(recipe, show_progress=False)
    assert not (tmp_path / "cli-run").exists()


def test_report_to_names_known_trackers(tmp_path):
    from posttrain.config import load_recipe
    from tests.helpers import write_recipe
    with pytest.raises(RecipeError, match="train.report_to.0"):
        load_recipe(write_recipe(tmp_path), ["train.report_to=[neptune]"])
    assert load_recipe(write_recipe(tmp_path)).train.report_to == ["tensorboard"]
