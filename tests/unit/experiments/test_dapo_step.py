"""experiments/dapo_step.py's report: both calibration baselines labelled, old critic files read."""
from __future__ import annotations

# ---- the critic's calibration and its constant baselines (issue 32) --------------------------------


def test_the_report_labels_both_baselines_and_reads_old_critic_files():
    from experiments.dapo_step import CALIBRATION_COLUMNS, calibration_row
    assert "training states' mean" in CALIBRATION_COLUMNS[0] and "own mean" in CALIBRATION_COLUMNS[1]
    new = {"heldout": {"states": 58, "brier": 0.11691, "brier_of_the_train_mean": 0.1052,
                       "brier_of_own_mean": 0.10081}, "train": {"brier": 0.11874}}
    assert calibration_row(new) == [58, "0.1169", "0.1052", "0.1008", "0.1187"]
    # a critic_eval.json from before issue 32: its own-mean Brier was `brier_of_the_mean`, no training mean
    old = {"heldout": {"states": 58, "brier": 0.11691, "brier_of_the_mean": 0.10081},
           "train": {"brier": 0.11874}}
    assert calibration_row(old) == [58, "0.1169", "n/a", "0.1008", "0.1187"]
    assert calibration_row({"heldout": {"states": 0}, "train": {"states": 0}}) == [0, "n/a", "n/a", "n/a",
                                                                                   "n/a"]
