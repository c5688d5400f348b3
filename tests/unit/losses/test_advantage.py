"""Step-level DAPO's losses (METHODS.md section 5): Monte-Carlo targets and the critic's soft-label BCE,
advantages and the spread filter, and the actor loss with its tabular minimiser."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from posttrain.losses.advantage import advantages, critic_loss, dapo_step_loss, keeps_state, mc_target


def test_mc_target_and_soft_bce():
    assert mc_target([True, False, True, True]) == 0.75
    with pytest.raises(ValueError):
        mc_target([])
    logits = torch.tensor([-3.0, 0.0, 2.5, 40.0, -40.0], dtype=torch.float64)
    t = torch.tensor([0.25, 0.5, 1.0, 0.75, 0.0], dtype=torch.float64)
    got = critic_loss(logits, t)
    v = 1 / (1 + np.exp(-logits.numpy()))
    ref = [-(ti * math.log(vi) + (1 - ti) * math.log1p(-vi)) if 0 < vi < 1 else None for ti,
           vi in zip(t.numpy(), v)]
    np.testing.assert_allclose(got.numpy()[:3], ref[:3], rtol=1e-12)
    assert torch.isfinite(got).all()  # saturated logits stay finite
    np.testing.assert_allclose(got.numpy()[3], 0.25 * 40.0 + math.log1p(math.exp(-40.0)), rtol=1e-12)
    # soft labels: the gradient in the logit is V - t, so the loss is minimised at V = target
    z = torch.tensor([math.log(0.3 / 0.7), 0.0], dtype=torch.float64, requires_grad=True)
    critic_loss(z, torch.tensor([0.3, 0.3], dtype=torch.float64)).sum().backward()
    assert z.grad[0].item() == pytest.approx(0.0, abs=1e-12) and z.grad[1].item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        critic_loss(torch.zeros(1), torch.tensor([1.5]))


def test_advantages_and_the_spread_filter():
    assert advantages([0.2, 0.4, 0.9]) == pytest.approx([-0.3, -0.1, 0.4])
    assert keeps_state(advantages([0.5, 0.55, 0.6])) is True  # spread 0.1 exactly: kept
    assert keeps_state(advantages([0.5, 0.55, 0.59])) is False
    assert keeps_state(advantages([0.7])) is False  # one candidate: no spread


def test_actor_loss_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    lp, lr, a = (torch.randn(7, generator=g, dtype=torch.float64) for _ in range(3))
    got = dapo_step_loss(lp, lr, a, beta=0.01)
    torch.testing.assert_close(got, 0.5 * (a / 0.01 - (lp - lr)) ** 2, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="beta"):
        dapo_step_loss(lp, lr, a, beta=0.0)


@pytest.mark.parametrize("beta", [0.01, 0.5])
def test_actor_loss_minimiser_is_the_exponential_tilt_of_the_reference(beta):
    """Lemma 3.1: with each action's log-prob free, the minimiser is logp = logp_ref + A/beta, whose
    normalised form is pi_ref exp(A/beta) / Z; with a softmax policy and advantages for which Z = 1 the
    normalised tilt itself is the minimiser."""
    rng = np.random.default_rng(1)
    pi_ref = rng.dirichlet(np.ones(5))
    adv = torch.tensor(rng.normal(0, 0.05, 5))
    ref = torch.log(torch.tensor(pi_ref))
    free = ref.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([free], max_iter=2000, tolerance_grad=1e-15, tolerance_change=1e-30,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = dapo_step_loss(free, ref, adv, beta).sum()
        loss.backward()
        return loss
    opt.step(closure)
    tilt = pi_ref * np.exp(adv.numpy() / beta)
    np.testing.assert_allclose(torch.softmax(free.detach(), 0).numpy(), tilt / tilt.sum(), rtol=1e-6)
    # a softmax policy, advantages consistent with a normalised target pi* (A = beta log pi*/pi_ref)
    target = rng.dirichlet(np.ones(5))
    adv = torch.tensor(beta * np.log(target / pi_ref))
    theta = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=2000, tolerance_grad=1e-15, tolerance_change=1e-30,
                            line_search_fn="strong_wolfe")

    def closure2():
        opt.zero_grad()
        loss = (torch.tensor(pi_ref) * dapo_step_loss(torch.log_softmax(theta, 0), ref, adv, beta)).sum()
        loss.backward()
        return loss
    opt.step(closure2)
    np.testing.assert_allclose(torch.softmax(theta.detach(), 0).numpy(), target, rtol=1e-6)
