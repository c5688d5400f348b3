"""DeepSpeed ZeRO requested in one process on the tiny model: refused with FSDP, otherwise trains
unwrapped. The multi-process runs themselves are in tests/distributed/test_methods.py (the zero2 / zero3
cases)."""
import pytest

from posttrain.errors import TrainingError
from posttrain.sharding import zero
from tests.helpers import engine, settings

pytestmark = pytest.mark.usefixtures("clean_launcher_env")


def test_fsdp_and_zero_together_are_refused(tmp_path):
    with pytest.raises(TrainingError, match="choose one"):
        engine(tmp_path, settings(fsdp=True, zero_stage=2))


def test_one_process_with_zero_requested_trains_unwrapped(tmp_path):
    e = engine(tmp_path, settings(zero_stage=3, max_steps=2))
    assert not zero.is_zero(e.model) and e.sharding == "none"
    result = e.train()
    assert result.steps == 2
