"""experiments/inpo_tabular.py: minimising the expected INPO loss is the mirror-descent step, and the
regularised gap (METHODS.md section 3)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from experiments.inpo_tabular import md_step, preference_matrix, regularized_gap
from posttrain.losses.preference import PairLogps, inpo


@pytest.mark.parametrize("eta,tau", [(0.3, 0.1), (0.5, 0.0), (1.0, 1.0)])
def test_minimising_the_expected_inpo_loss_is_the_mirror_descent_step(eta, tau):
    """Over on-policy pairs y, y' ~ pi_t with the winner drawn from P, the expected loss's minimiser over
    tabular policies is pi_{t+1} ∝ pi_ref^(tau/eta) pi_t^(1 - tau/eta) exp(P(y > pi_t) / eta)."""
    rng = np.random.default_rng(0)
    n = 4
    A = rng.uniform(-1, 1, (n, n))
    P = 0.5 + (A - A.T) / 4  # a general (non-transitive) preference, P + P^T = 1
    pi_ref = rng.dirichlet(np.ones(n))
    pi_t = rng.dirichlet(np.ones(n))
    ys = [(a, b) for a, b in itertools.product(range(n), repeat=2) if a != b]
    w = torch.tensor([a for a, _ in ys])
    l_ = torch.tensor([b for _, b in ys])
    # weight of (y_w = a, y_l = b): pi_t(a) pi_t(b) P(a > b)
    weight = torch.tensor([pi_t[a] * pi_t[b] * P[a, b] for a, b in ys])
    ref, prev = torch.log(torch.tensor(pi_ref)), torch.log(torch.tensor(pi_t))
    theta = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logp = torch.log_softmax(theta, 0)
        loss, _ = inpo(PairLogps(logp[w], logp[l_], ref[w], ref[l_], prev_chosen=prev[w],
                                 prev_rejected=prev[l_]),
                       eta=eta, tau=tau)
        total = (loss * weight).sum()
        total.backward()
        return total
    opt.step(closure)
    got = torch.softmax(theta.detach(), 0).numpy()
    np.testing.assert_allclose(got, md_step(pi_t, pi_ref, P, eta, tau), rtol=1e-6, atol=1e-8)


def test_the_regularised_gap_is_zero_at_the_fixed_point_and_positive_elsewhere():
    P = preference_matrix()
    pi_ref = np.array([0.5, 0.3, 0.2])
    pi = pi_ref.copy()
    for _ in range(300):
        pi = md_step(pi, pi_ref, P, 0.3, 0.1)
    assert abs(regularized_gap(pi, P, pi_ref, 0.1)) < 1e-9
    assert regularized_gap(pi_ref, P, pi_ref, 0.1) > 1e-3
