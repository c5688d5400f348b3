"""Step-level DAPO's batches keep every state with all its candidates (METHODS.md section 5)."""
from __future__ import annotations

from posttrain.methods.dapo_step.method import DAPOStepObjective, collate_states


def test_batches_keep_every_state_with_all_its_candidates_and_count_candidates():
    feats = [{"context": [1, 2, 3], "actions": [[4], [5, 6]], "adv": [0.1, -0.1], "logp_ref": [-1.0, -2.0]},
             {"context": [7], "actions": [[8, 9, 10], [11], [12]], "adv": [0.2, 0.0, -0.2], "logp_ref": [-3,
                                                                                                         -1,
                                                                                                         -2]}]
    b = collate_states(feats, pad=0)
    assert b["state_index"].tolist() == [0, 0, 1, 1, 1]
    assert DAPOStepObjective(0.01).units(b) == 5
    assert b["input_ids"][1, :5].tolist() == [1, 2, 3, 5, 6]
    assert b["labels"][1, :5].tolist() == [-100, -100, -100, 5, 6]  # only the candidate step is a target
    assert b["labels"][2, :4].tolist() == [-100, 8, 9, 10]
