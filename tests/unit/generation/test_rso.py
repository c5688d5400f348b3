"""The RSO rejection sampler (METHODS.md §2): accepted samples follow pi_r ∝ pi_sft · exp(r / beta)."""
import math

import numpy as np
import pytest

from posttrain.generation.rso import pair_up, rso_accept, select

PI_SFT = np.array([0.30, 0.25, 0.20, 0.12, 0.08, 0.05])
R = np.array([0.0, 0.4, 0.9, 1.3, 1.6, 2.0])


def tilted(beta: float) -> np.ndarray:
    w = PI_SFT * np.exp(R / beta)
    return w / w.sum()


def accepted_distribution(beta: float, trials: int, n_cand: int = 64, num_samples: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    counts = np.zeros(len(PI_SFT))
    for _ in range(trials):
        cand = rng.choice(len(PI_SFT), size=n_cand, p=PI_SFT)
        acc, _ = rso_accept(R[cand], beta, num_samples, rng)
        for i in acc:
            counts[cand[i]] += 1
    return counts / counts.sum(), counts.sum()


@pytest.mark.parametrize("beta", [0.1, 0.5, 5.0])
def test_accepted_samples_follow_the_tilted_distribution(beta):
    # 256 candidates: the best item (pi_sft 0.05) is then in the pool with probability 1 - 2e-6. With 64 it
    # is missing 3.7% of the time and r_max drops to the runner-up: the practical algorithm's known bias
    emp, n = accepted_distribution(beta, trials=2000, n_cand=256)
    target = tilted(beta)
    tv = 0.5 * np.abs(emp - target).sum()
    # sampling noise of n draws is ~ sqrt(K / n) / 2 in TV; the first-round truncation adds a little
    assert tv < 0.03, (beta, emp.round(3), target.round(3), tv)
    # chi-square goodness of fit on the well-populated cells
    cells = target * n > 20
    chi2 = (((emp - target) * n) ** 2 / (target * n))[cells].sum()
    assert chi2 < 30, chi2  # df <= 5: p ~ 1e-5 threshold, a real mismatch gives hundreds


def test_several_accepted_per_prompt_follow_the_tilted_distribution_too():
    emp, _ = accepted_distribution(0.5, trials=1500, n_cand=256, num_samples=8)
    assert 0.5 * np.abs(emp - tilted(0.5)).sum() < 0.03


def test_sft_distribution_is_not_mistaken_for_tilted():  # the test above can fail
    emp = PI_SFT
    assert 0.5 * np.abs(emp - tilted(0.5)).sum() > 0.2


def test_beta_to_zero_gives_argmax_and_to_infinity_uniform_acceptance():
    rng = np.random.default_rng(1)
    r = rng.normal(size=50)
    acc, st = rso_accept(r, 1e-6, 1, rng)
    assert acc == [int(np.argmax(r))] and st.rounds == 1
    acc, st = rso_accept(r, 1e9, 10, rng)
    assert acc == list(range(10)) and st.rounds == 1  # everything accepted, in candidate order


def test_every_round_accepts_at_least_one_and_pool_exhaustion_is_reported():
    rng = np.random.default_rng(2)
    acc, st = rso_accept([0.0, -50.0, -60.0], 0.01, 8, rng)
    assert sorted(acc) == [0, 1, 2] and st.exhausted and st.rounds == 3 and st.accepted == 3
    acc, st = rso_accept([], 0.5, 4, rng)
    assert acc == [] and st.exhausted and st.rounds == 0


def test_duplicates_are_one_candidate():
    rng = np.random.default_rng(3)
    keys = [(1, 2), (1, 2), (3,), (1, 2), (4,)]
    acc, st = rso_accept([1.0, 1.0, 0.0, 1.0, 0.5], 1e9, 8, rng, keys=keys)
    assert acc == [0, 2, 4] and st.unique == 3 and st.exhausted


def test_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="beta"):
        rso_accept([1.0], 0.0, 1, rng)
    with pytest.raises(ValueError, match="finite"):
        rso_accept([math.nan], 0.5, 1, rng)
    with pytest.raises(ValueError, match="selection"):
        select([1.0], "nope", 1, rng)


def test_selections_and_pairings():
    rng = np.random.default_rng(4)
    r = [0.1, 0.9, 0.5, 0.3, 0.7, 0.2]
    idx, _ = select(r, "sft_sample_rank", 4, rng)
    assert idx == [0, 1, 2, 3]
    idx, _ = select(r, "best_of_n", 3, rng)
    assert idx[0] == 1 and len(idx) == 3
    pairs, ties = pair_up(idx, r, "first_round", rng, anchor_first=True)
    assert all(c == 1 for c, _ in pairs) and len(pairs) == 2 and ties == 0
    pairs, ties = pair_up(list(range(6)), r, "first_round", rng)
    assert len(pairs) == 3 and all(r[c] > r[j] for c, j in pairs)
    assert sorted(i for p in pairs for i in p) == list(range(6))  # disjoint
    pairs, ties = pair_up(list(range(6)), r, "tournament", rng)
    assert len(pairs) == 5 and all(r[c] > r[j] for c, j in pairs)
    assert 1 in {c for c, _ in pairs} and 1 not in {j for _, j in pairs}  # the best never loses
    pairs, ties = pair_up([0, 1], [1.0, 1.0], "first_round", rng)
    assert pairs == [] and ties == 1
