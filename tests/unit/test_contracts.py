"""Step indices cover each epoch once and depend on the seed."""
from posttrain.contracts import step_indices


def test_step_indices_cover_each_epoch_once_and_depend_on_seed():
    seen = sum((step_indices(10, 5, s, seed=3) for s in range(2)), [])
    assert sorted(seen) == list(range(10))
    assert step_indices(10, 5, 0, seed=3) != step_indices(10, 5, 0, seed=4)
