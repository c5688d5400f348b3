"""Rerunning a finished run (posttrain/pipeline.py, posttrain/runner.py): unchanged, it says it is finished
and does nothing; with train.max_steps raised it continues from its last checkpoint; lowered, it is
refused."""
import json

import pytest

from posttrain.config import load_recipe
from posttrain.engine import Engine
from posttrain.errors import RecipeError
from posttrain.runner import run_recipe
from posttrain.schedule import lr_lambda
from tests.helpers import logged
from tests.tracker_helpers import tensorboard_scalars

RECIPE = """
name: extend
method: {name: sft}
model: {name: tiny-llama}
data:
  train: {synthetic: {task: arithmetic, n: 8}}
  max_length: 96
train: {lr: 1.0e-2, micro_batch_size: 2, max_steps: 3, schedule: cosine}
"""


@pytest.fixture
def make(tmp_path, in_tmp_path):
    (tmp_path / "r.yaml").write_text(RECIPE)

    def make(*overrides):
        return load_recipe(tmp_path / "r.yaml", [f"output_dir={tmp_path / 'runs'}", *overrides])
    return make


@pytest.fixture
def engine_calls(monkeypatch):
    """The checkpoints the engine loads and the lr each optimisation step runs with."""
    calls = {"loaded": [], "lrs": []}
    load, step = Engine.load_checkpoint, Engine.train_step

    def loading(self, path):
        calls["loaded"].append(path.name)
        return load(self, path)

    def stepping(self, batches):
        calls["lrs"].append(self.optimizer.param_groups[0]["lr"])
        return step(self, batches)
    monkeypatch.setattr(Engine, "load_checkpoint", loading)
    monkeypatch.setattr(Engine, "train_step", stepping)
    return calls


def test_finished_run_says_so_and_raised_max_steps_continues(make, engine_calls, capsys):
    r3 = make()
    first = run_recipe(r3, show_progress=False)
    assert first["train"]["steps"] == 3 and "note" not in first
    three = logged(r3)
    assert [h["step"] for h in three] == [1, 2, 3]
    assert len(engine_calls["lrs"]) == 3 and engine_calls["loaded"] == []

    capsys.readouterr()
    again = run_recipe(r3, show_progress=False)
    assert again["note"] == "already finished at step 3; nothing to do"
    assert "already finished at step 3; nothing to do" in capsys.readouterr().out
    assert json.loads((r3.run_dir / "summary.json").read_text())["note"] == again["note"]
    assert len(engine_calls["lrs"]) == 3  # no step run

    r5 = make("train.max_steps=5")
    more = run_recipe(r5, show_progress=False)
    assert engine_calls["loaded"] == ["step-0000003"]  # the finished run's last checkpoint
    assert len(engine_calls["lrs"]) == 5  # two more steps
    assert more["train"]["steps"] == 5 and "note" not in more
    cont = more["train"]["continued"]
    assert cont["from_step"] == 3 and cont["max_steps"] == {"from": 3, "to": 5}
    assert cont["checkpoint"].endswith("step-0000003")
    # the remaining steps follow the 5-step schedule from its step 4: the lr the optimizer really used
    want = [1e-2 * lr_lambda(r5.train, 5)(k) for k in (3, 4)]
    assert engine_calls["lrs"][3:] == pytest.approx(want)
    assert cont["lr_at_continuation"] == pytest.approx(want[0])
    assert "steps 1-3 ran under the 3-step cosine schedule" in cont["schedule"]
    # one history: the first three steps as they were, two new ones after them
    five = logged(r5)
    assert [h["step"] for h in five] == [1, 2, 3, 4, 5]
    assert five[:3] == three
    tb = tensorboard_scalars(r5.run_dir / "tensorboard")["loss"]  # the tracker goes on where it stopped
    assert [s for s, _ in tb] == [1, 2, 3, 4, 5]
    assert [v for _, v in tb] == pytest.approx([h["loss"] for h in five], rel=1e-6)
    assert (r5.run_dir / "checkpoints" / "step-0000005").is_dir()
    state = json.loads((r5.run_dir / "pipeline.json").read_text())["stages"]["train"]
    assert state["status"] == "done" and state["settings"]["train.max_steps"] == 5
    assert "continues" not in state
    assert (r5.run_dir / "report.md").is_file()

    capsys.readouterr()
    assert run_recipe(r5, show_progress=False)["note"] == "already finished at step 5; nothing to do"

    with pytest.raises(RecipeError, match="train.max_steps=5"):  # lowering it is a change, refused
        run_recipe(make("train.max_steps=4"), show_progress=False)
