"""Which recipe changes continue a finished stage instead of invalidating it (posttrain/pipeline.py,
EXTEND_KEYS): train.max_steps raised, and nothing else, on the run's last recorded stage."""
import pytest

from posttrain.errors import RecipeError
from posttrain.pipeline import WATCH_KEYS, check_fingerprint, extension


def record(status="done", **settings):
    return {"status": status, "settings": {"seed": 0, "train.max_steps": 3, **settings}, "inputs": {},
            "start": {"model": {}}}


def fp(**settings):
    return {k: v for k, v in record(**settings).items() if k != "status"}


def test_raised_max_steps_continues_the_last_stage():
    assert extension("train", record(), fp(**{"train.max_steps": 5}), []) == \
        {"train.max_steps": {"from": 3, "to": 5}}


@pytest.mark.parametrize("new", [{"train.max_steps": 2}, {"train.max_steps": 3},
                                 {"train.max_steps": 5, "seed": 1}, {"train.lr": 0.1}])
def test_anything_else_is_no_continuation(new):
    assert extension("train", record(), fp(**new), []) is None


def test_lowered_max_steps_is_refused_by_the_fingerprint():
    with pytest.raises(RecipeError, match="train.max_steps=3; the recipe now says 2"):
        check_fingerprint("train", record(), fp(**{"train.max_steps": 2}))


def test_a_stage_in_progress_is_resumed_not_continued():
    assert extension("train", record(status="running"), fp(**{"train.max_steps": 5}), []) is None


def test_no_continuation_under_a_later_stage():
    with pytest.raises(RecipeError, match="under stage 'iter-2/sample'.*--restart-from train"):
        extension("train", record(), fp(**{"train.max_steps": 5}), ["iter-2/sample", "iter-2/train"])


def test_trackers_only_watch():
    assert "train.report_to" in WATCH_KEYS
