"""INPO's knockout (METHODS.md section 3): the best and worst under a transitive oracle in O(k) calls."""
from __future__ import annotations

import random

import numpy as np
import pytest

from posttrain.generation.knockout import knockout


@pytest.mark.parametrize("k", [2, 3, 5, 7, 8, 16])
def test_knockout_finds_the_true_best_and_worst_under_a_transitive_oracle_in_o_k_calls(k):
    for trial in range(50):
        rnd = random.Random(trial)
        scores = [rnd.random() for _ in range(k)]
        seen = []

        def beats(pairs):
            seen.extend(pairs)
            return [scores[a] > scores[b] for a, b in pairs]
        res = knockout(k, beats)
        assert res.best == int(np.argmax(scores)) and res.worst == int(np.argmin(scores))
        assert res.kept and res.calls == len(seen) <= 1.5 * k
        if k == 8:
            assert res.calls == 11  # 4 first-round, 3 winners, 3 losers, 1 final


def test_knockout_keeps_a_pair_only_if_the_winner_wins_the_final():
    # a 3-cycle: 0 beats 1, 1 beats 2, 2 beats 0 -> first round 0 > 1; winners {0, 2}: 2 wins; losers {1, 2}:
    # 2 loses; best = worst = 2 -> dropped
    cyc = {(0, 1): True, (1, 0): False, (1, 2): True, (2, 1): False, (2, 0): True, (0, 2): False}
    res = knockout(3, lambda pairs: [cyc[p] for p in pairs])
    assert not res.kept
    ties = knockout(4, lambda pairs: [False] * len(pairs))  # an indifferent oracle: no win, no pair
    assert not ties.kept
