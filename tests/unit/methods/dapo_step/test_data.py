"""Step-level DAPO's data stages (METHODS.md section 5): the balanced keep, MC targets and candidates,
the spread filter, and the critic's calibration against its constant baselines (issue 32)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from posttrain.data.records import PromptRecord
from posttrain.methods.dapo_step import data as dd


@pytest.mark.parametrize("n_right,n_wrong,keep,want", [(10, 10, 6, (3, 3)), (1, 20, 6, (1, 5)), (20, 2, 6, (4,
                                                                                                            2)),
                                                        (0, 5, 4, (0, 4)), (2, 1, 6, (2, 1)), (5, 5, 5, (2,
                                                                                                         3))])
def test_balanced_keep_takes_half_of_each_side_and_fills_from_the_other(n_right, n_wrong, keep, want):
    correct = [True] * n_right + [False] * n_wrong
    rng = np.random.default_rng([0, 1])
    np.random.default_rng(0).shuffle(correct)
    idx = dd.balanced_keep(correct, keep, rng)
    assert idx == sorted(set(idx))
    assert (sum(correct[i] for i in idx), sum(not correct[i] for i in idx)) == want


class FakeGrader:
    """Correct when the last token id of the whole response is even."""

    def __call__(self, record, ids_list):
        return [ids[-1] % 2 == 0 for ids in ids_list]


def test_mc_targets_are_the_fraction_correct_and_candidates_are_deduplicated_first_steps():
    nl, eos = frozenset({10}), {99}
    states = [{"state_id": 0, "prompt_id": 0, "prefix_ids": [5, 10]}]
    rows = [{"token_ids": [1, 10, 4], "finish_reason": "stop"},     # first step [1, 10], correct
            {"token_ids": [1, 10, 3, 99], "finish_reason": "stop"},  # same first step, wrong (99 odd)
            {"token_ids": [2, 98], "finish_reason": "length"},       # one step, cut: not terminal
            {"token_ids": [7, 99], "finish_reason": "stop"},         # one step ended by eos: terminal, wrong
            {"token_ids": [8, 10, 6], "finish_reason": "stop"}]      # correct
    (t,) = dd.state_targets(states, {0: rows}, [PromptRecord("p", "1")], FakeGrader(), nl, eos)
    assert t["mc"] == pytest.approx(3 / 5)  # the grader saw prefix + completion: [5,10,1,10,4] ... even last
    acts = {tuple(a["ids"]): a for a in t["actions"]}
    assert list(acts) == [(1, 10), (2, 98), (7, 99), (8, 10)]
    assert acts[(1, 10)]["count"] == 2 and not acts[(1, 10)]["terminal"]
    assert [a["correct"] for a in acts.values()] == [1, 1, 0, 1]  # of the completions starting with it
    assert dd.mc_spreads([t]) == pytest.approx([1.0])  # candidate values 0.5, 1, 0, 1
    assert dd.mc_spreads([{**t, "actions": t["actions"][:1]}]) == []  # one candidate: no spread
    assert not acts[(2, 98)]["terminal"] and acts[(2, 98)]["reward"] is None
    assert acts[(7, 99)]["terminal"] and acts[(7, 99)]["reward"] == 0.0


def test_the_spread_filter_drops_exactly_the_states_below_the_threshold():
    def state(sid, n, terminal=()):
        return {"state_id": sid, "actions": [{"ids": [j], "terminal": j in terminal,
                                              "reward": 1.0 if j in terminal else None} for j in range(n)]}
    targets = [state(0, 2), state(1, 3), state(2, 1), state(3, 2, terminal=(1,)), state(4, 2)]
    values = {(0, 0): 0.5, (0, 1): 0.6, (1, 0): 0.2, (1, 1): 0.25, (1, 2): 0.29, (2, 0): 0.9,
              (3, 0): 0.2, (4, 0): 0.3, (4, 1): 0.75}
    kept, stats, spreads = dd.score_states(targets, values, 0.1, "reward")
    assert [t["state_id"] for t in kept] == [0, 3, 4]  # 0.6 - 0.5 is a spread of 0.1: kept
    assert stats == Counter(dropped_single_candidate=1, dropped_small_spread=1)
    assert spreads == pytest.approx([0.1, 0.09, 0.8, 0.45])
    s3 = kept[1]["actions"]
    assert [a["value"] for a in s3] == [0.2, 1.0] and [a["adv"] for a in s3] == pytest.approx([-0.4, 0.4])
    kept, _, _ = dd.score_states(targets, {**values, (3, 1): 0.25}, 0.1, "critic")
    assert [t["state_id"] for t in kept] == [0, 4]  # valued by the critic, state 3 spreads 0.05


def test_calibration_reports_brier_and_a_reliability_table():
    c = dd.calibration([0.05, 0.15, 0.95, 0.9], [0.0, 0.5, 1.0, 0.5])
    assert c["brier"] == pytest.approx((0.05 ** 2 + 0.35 ** 2 + 0.05 ** 2 + 0.4 ** 2) / 4)
    assert [r["states"] for r in c["reliability"]] == [1, 1, 2]
    assert c["reliability"][2]["mean_target"] == pytest.approx(0.75)
    assert dd.heldout_problems(20, 0.1, 0, 0) == dd.heldout_problems(20, 0.1, 0, 0)
    assert len(dd.heldout_problems(20, 0.1, 0, 0)) == 2 and dd.heldout_problems(20, 0.0, 0, 0) == set()


# ---- the critic's calibration and its constant baselines (issue 32) --------------------------------


def test_calibration_compares_with_the_training_mean_and_reports_the_own_mean_as_a_lower_bound():
    from posttrain.methods.dapo_step import data as dd
    v, t = [0.05, 0.15, 0.95, 0.9], [0.0, 0.5, 1.0, 0.5]
    c = dd.calibration(v, t, train_mean=0.25)
    assert c["brier"] == pytest.approx((0.05 ** 2 + 0.35 ** 2 + 0.05 ** 2 + 0.4 ** 2) / 4)  # 0.071875
    assert c["mean_target"] == pytest.approx(0.5)
    # own mean 0.5: (0.25 + 0 + 0.25 + 0) / 4; the training mean 0.25: (0.0625 + 0.0625 + 0.5625 + 0.0625) / 4
    assert c["brier_of_own_mean"] == pytest.approx(0.125)
    assert c["train_mean"] == 0.25 and c["brier_of_the_train_mean"] == pytest.approx(0.1875)
    # the two differ by exactly (own mean - training mean)^2: the own mean is the best constant
    assert c["brier_of_the_train_mean"] - c["brier_of_own_mean"] == pytest.approx((0.5 - 0.25) ** 2)
    for m in (0.0, 0.3, 0.5, 0.8):
        assert dd.calibration(v, t, train_mean=m)["brier_of_the_train_mean"] >= c["brier_of_own_mean"] - 1e-12
    # a critic between the two: worse than the own mean (0.125), better than the training mean (0.1875)
    mid = dd.calibration([0.6, 0.6, 0.6, 0.6], t, train_mean=0.25)
    assert mid["brier"] == pytest.approx((0.36 + 0.01 + 0.16 + 0.01) / 4)  # 0.135
    assert mid["brier_of_own_mean"] < mid["brier"] < mid["brier_of_the_train_mean"]
    # when the training mean is the held-out mean the two baselines agree
    same = dd.calibration(v, t, train_mean=0.5)
    assert same["brier_of_the_train_mean"] == pytest.approx(same["brier_of_own_mean"])
    assert "brier_of_the_train_mean" not in dd.calibration(v, t)  # no baseline given, none reported
    assert dd.calibration([], [], train_mean=0.2) == {"states": 0}
