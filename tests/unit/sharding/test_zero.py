"""DeepSpeed ZeRO requested by the recipe or by `accelerate launch`: the stage read, offload refused, a
missing deepspeed named. The multi-process runs themselves are in tests/distributed/test_methods.py (the
zero2 / zero3 cases)."""
import json
import sys

import pytest

from posttrain.errors import TrainingError
from posttrain.sharding import zero

pytestmark = pytest.mark.usefixtures("clean_launcher_env")


def test_the_stage_comes_from_the_recipe_or_from_accelerate_which_then_no_longer_sees_it(monkeypatch,
                                                                                         tmp_path):
    import os
    assert zero.requested_stage(0) == 0
    assert zero.requested_stage(2) == 2
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert zero.requested_stage(0) == 0  # without ACCELERATE_USE_DEEPSPEED the stage variable means nothing
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    assert zero.requested_stage(0) == 3
    assert os.environ["ACCELERATE_USE_DEEPSPEED"] == "false"  # accelerate must not wrap the model too
    assert zero.requested_stage(0) == 3 and zero.requested_stage(2) == 2  # kept; the recipe wins
    monkeypatch.delenv("POSTTRAIN_ZERO_STAGE")
    monkeypatch.delenv("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    cfg = tmp_path / "ds.json"
    cfg.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(cfg))
    assert zero.requested_stage(0) == 2
    monkeypatch.delenv("POSTTRAIN_ZERO_STAGE")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    cfg.write_text("{not json")
    with pytest.raises(TrainingError, match="gives no ZeRO stage"):
        zero.requested_stage(0)
    cfg.write_text(json.dumps({"zero_optimization": {"stage": 0}}))
    with pytest.raises(TrainingError, match="runs stages 1, 2 and 3"):
        zero.requested_stage(0)


def test_offload_is_refused_with_a_message(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "cpu")
    with pytest.raises(TrainingError, match="offload is not supported"):
        zero.requested_stage(0)


def test_a_missing_deepspeed_is_named(monkeypatch):
    import torch
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed -> ImportError
    model = torch.nn.Linear(2, 2)
    with pytest.raises(TrainingError, match="deepspeed is not installed"):
        zero.wrap(model, torch.optim.SGD(model.parameters(), lr=0.1), stage=2, micro_batch_size=1,
                  grad_accum=1,
                  max_grad_norm=1.0)
