"""The preference losses (posttrain/losses/preference.py) against float64 formulas and TRL: the DPO
family, rDPO / cDPO, RPO, IPO, hinge, and INPO (METHODS.md section 3) against IPO and its formula."""
from __future__ import annotations

import inspect
import math
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from posttrain.losses.preference import (
    PREFERENCE_LOSSES,
    PairLogps,
    cdpo,
    dpo,
    hinge,
    hinge_norm,
    inpo,
    ipo,
    ipo_length_norm,
    rdpo,
    rdpo_zeta,
    rpo,
    rpo_token_mean,
)

BETA_H_EXTREMES = [50.0, -50.0, 100.0, -100.0, 1000.0, -1000.0]


def nlogsig(x):
    """-log sigmoid(x) in float64, computed independently of torch."""
    return np.logaddexp(0.0, -x)


def sig(x):
    return np.exp(-np.logaddexp(0.0, -x))


def reference(name, pc, pr, rc, rr, nc, nr, p, tc=None, tr=None):
    """The formulas of METHODS.md sections 1 and 3, in numpy float64 (tc, tr: INPO's previous iterate)."""
    h = (pc - rc) - (pr - rr)
    if name == "inpo":
        a = p["tau"] / p["eta"]
        return ((pc - pr) - a * (rc - rr) - (1 - a) * (tc - tr) - 1 / (2 * p["eta"])) ** 2
    if name == "dpo":
        return nlogsig(p["beta"] * h)
    if name == "cdpo":
        z, e = p["beta"] * h, p["eps"]
        return (1 - e) * nlogsig(z) + e * nlogsig(-z)
    if name == "rdpo":
        z, e = p["beta"] * h, p["eps"]
        return ((1 - e) * nlogsig(z) - e * nlogsig(-z)) / (1 - 2 * e)
    if name == "ipo":
        return (h - 1 / (2 * p["tau"])) ** 2
    if name == "ipo_length_norm":
        hn = (pc - rc) / nc - (pr - rr) / nr
        return (hn - 1 / (2 * p["tau"])) ** 2
    if name == "hinge":
        return np.maximum(0.0, 1 - p["gamma"] * (pc - pr))
    if name == "hinge_norm":
        return np.maximum(0.0, 1 - p["gamma"] * h)
    if name == "rpo":
        return nlogsig(p["beta"] * h) + p["eta"] * p["beta"] * (-pc)
    if name == "rpo_token_mean":
        return nlogsig(p["beta"] * h) + p["alpha"] * (-pc / nc)
    raise KeyError(name)


PARAMS = {
    "dpo": {"beta": 0.1}, "cdpo": {"beta": 0.1, "eps": 0.2}, "rdpo": {"beta": 0.1, "eps": 0.3},
    "ipo": {"tau": 0.1}, "ipo_length_norm": {"tau": 0.1}, "hinge": {"gamma": 0.05},
    "hinge_norm": {"gamma": 0.05},
    "rpo": {"beta": 0.05, "eta": 0.005}, "rpo_token_mean": {"beta": 0.1, "alpha": 0.2},
    "inpo": {"eta": 0.005, "tau": 0.005 / 3},
}


def with_previous(name, arrs):
    """INPO also reads the previous iterate's log-probs: give it ones that differ from the reference's."""
    return (*arrs, arrs[2] + 1.5, arrs[3] - 0.7) if name == "inpo" else arrs


def scale_of(name, p):
    return p.get("beta", p.get("eta" if name == "inpo" else "tau", p.get("gamma")))


def random_pairs(n=64, seed=0, beta_h=(), scale=0.1):
    """Summed log-probs with random margins, and pairs forced to beta*h = each of beta_h exactly (via pc)."""
    rng = np.random.default_rng(seed)
    nc = rng.integers(1, 60, n).astype(np.float64)
    nr = rng.integers(1, 60, n).astype(np.float64)
    pc, pr = -nc * rng.uniform(0.2, 3, n), -nr * rng.uniform(0.2, 3, n)
    rc, rr = pc + rng.normal(0, 5, n), pr + rng.normal(0, 5, n)
    for i, bh in enumerate(beta_h):
        # h = (pc - rc) - (pr - rr) = bh / scale
        pc[i] = rc[i] + (pr[i] - rr[i]) + bh / scale
    return pc, pr, rc, rr, nc, nr


def as_pairs(arrs, dtype=torch.float64, requires_grad=False):
    ts = [torch.tensor(a, dtype=dtype) for a in arrs]
    if requires_grad:
        ts[0].requires_grad_(True)
        ts[1].requires_grad_(True)
    return PairLogps(*ts), ts


@pytest.mark.parametrize("name", list(PREFERENCE_LOSSES))
def test_loss_matches_float64_formula_including_extremes(name):
    p = PARAMS[name]
    arrs = with_previous(name, random_pairs(beta_h=BETA_H_EXTREMES, scale=scale_of(name, p)))
    lp, _ = as_pairs(arrs)
    fn = PREFERENCE_LOSSES[name].fn
    losses, metrics = fn(lp, **p)
    expected = reference(name, *arrs[:6], p, *arrs[6:])
    assert losses.shape == (64,)
    np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-6, atol=1e-12)
    for k in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracy", "logps/chosen",
              "logps/rejected"):
        assert metrics[k].shape == (64,) and not metrics[k].requires_grad
    m = metrics["rewards/margins"]
    assert torch.equal(metrics["rewards/accuracy"], (m > 0).double())
    assert torch.allclose(metrics["rewards/chosen"] - metrics["rewards/rejected"], m)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(PREFERENCE_LOSSES))
def test_no_nan_or_inf_and_finite_gradients_at_extremes(name, dtype):
    p = PARAMS[name]
    arrs = with_previous(name, random_pairs(n=len(BETA_H_EXTREMES) + 4, seed=1, beta_h=BETA_H_EXTREMES,
                                            scale=scale_of(name, p)))
    lp, ts = as_pairs(arrs, dtype=dtype, requires_grad=True)
    losses, metrics = PREFERENCE_LOSSES[name].fn(lp, **p)
    assert torch.isfinite(losses).all()
    losses.sum().backward()
    assert torch.isfinite(ts[0].grad).all() and torch.isfinite(ts[1].grad).all()
    assert all(torch.isfinite(v).all() for v in metrics.values())


def margin_pairs(h, requires_grad=False):
    """Pairs whose DPO margin is exactly h (reference 0), with h itself as the leaf for autograd."""
    h = torch.as_tensor(h, dtype=torch.float64).clone().requires_grad_(requires_grad)
    z = torch.zeros_like(h)
    return PairLogps(h, z, z, z, z + 1, z + 1), h


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.2, 0.3, 0.4, 0.49])
def test_rdpo_is_unbiased_over_label_flips(eps):
    beta = 0.5
    h = torch.tensor(np.random.default_rng(2).normal(0, 20, 200))
    observed, _ = margin_pairs(h)
    flipped, _ = margin_pairs(-h)  # a flipped label swaps chosen and rejected: the margin changes sign
    expected_loss = (1 - eps) * rdpo(observed, beta=beta, eps=eps)[0] + eps * rdpo(flipped, beta=beta,
                                                                                   eps=eps)[0]
    np.testing.assert_allclose(expected_loss.numpy(), nlogsig(beta * h.numpy()), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 0.45])
def test_rdpo_gradient_is_minus_beta_zeta_and_zeta_positive(eps):
    beta = 0.2
    h0 = np.concatenate([np.random.default_rng(3).normal(0, 10, 50), np.array(BETA_H_EXTREMES) / beta])
    lp, h = margin_pairs(h0, requires_grad=True)
    losses, metrics = rdpo(lp, beta=beta, eps=eps)
    losses.sum().backward()
    zeta = rdpo_zeta(h.detach(), beta, eps)
    assert torch.allclose(h.grad, -beta * zeta, rtol=1e-10, atol=1e-14)
    assert torch.equal(metrics["zeta"], zeta)
    # zeta lies between eps/(1-2eps) and (1-eps)/(1-2eps): > 0 for eps > 0 even where sigma underflows
    # (at eps = 0 it is DPO's weight sigma(-beta*h), which is 0.0 in float64 at beta*h = 1000)
    assert (zeta >= eps / (1 - 2 * eps)).all() and (zeta <= (1 - eps) / (1 - 2 * eps)).all()
    assert (zeta > 0).all() if eps > 0 else (zeta >= 0).all()
    z = beta * h0
    np.testing.assert_allclose(zeta.numpy(), ((1 - eps) * sig(-z) + eps * sig(z)) / (1 - 2 * eps), rtol=1e-9)


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.25, 0.4])
def test_cdpo_gradient_vanishes_at_the_margin_cap(eps):
    beta = 0.1
    h_star = math.log((1 - eps) / eps) / beta
    lp, h = margin_pairs([h_star - 1.0, h_star, h_star + 1.0], requires_grad=True)
    cdpo(lp, beta=beta, eps=eps)[0].sum().backward()
    g = h.grad
    assert abs(float(g[1])) < 1e-12
    assert g[0] < 0 < g[2]  # below the cap the margin is pushed up, above it pulled down
    # cdpo is the DPO loss averaged over labels that are wrong with probability eps; its minimum is the cap
    grid = torch.linspace(h_star - 30, h_star + 30, 60001, dtype=torch.float64)
    best = grid[cdpo(margin_pairs(grid)[0], beta=beta, eps=eps)[0].argmin()]
    assert abs(float(best) - h_star) < 2e-3


def test_eps_zero_makes_rdpo_and_cdpo_equal_to_dpo():
    arrs = random_pairs(seed=4, beta_h=BETA_H_EXTREMES, scale=0.1)
    grads = []
    for fn, kw in ((dpo, {}), (cdpo, {"eps": 0.0}), (rdpo, {"eps": 0.0})):
        lp, ts = as_pairs(arrs, requires_grad=True)
        losses, _ = fn(lp, beta=0.1, **kw)
        losses.sum().backward()
        grads.append((losses.detach(), ts[0].grad, ts[1].grad))
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            assert torch.allclose(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("fn", [cdpo, rdpo])
@pytest.mark.parametrize("eps", [0.5, 0.7, -0.1])
def test_eps_outside_range_is_a_recipe_error(fn, eps):
    lp, _ = margin_pairs([1.0])
    with pytest.raises(ValueError, match=r"\[0, 0\.5\).*coin flip.*1 - 2\*eps"):
        fn(lp, beta=0.1, eps=eps)
    with pytest.raises(ValueError, match=r"\[0, 0\.5\)"):
        rdpo_zeta(torch.zeros(1), 0.1, eps)


def test_rpo_is_dpo_plus_eta_beta_summed_nll():
    arrs = random_pairs(seed=5)
    lp, _ = as_pairs(arrs)
    beta, eta = 0.05, 0.005
    losses, metrics = rpo(lp, beta=beta, eta=eta)
    base = dpo(lp, beta=beta)[0]
    assert torch.allclose(losses, base + eta * beta * (-lp.policy_chosen), rtol=1e-14, atol=0)
    assert torch.equal(metrics["nll"], -lp.policy_chosen)


def test_rpo_token_mean_divides_the_nll_by_the_chosen_length():
    arrs = random_pairs(seed=6)
    lp, _ = as_pairs(arrs)
    longer = PairLogps(lp.policy_chosen, lp.policy_rejected, lp.ref_chosen, lp.ref_rejected,
                       lp.chosen_tokens * 2, lp.rejected_tokens)
    base = dpo(lp, beta=0.1)[0]
    a, ma = rpo_token_mean(lp, beta=0.1, alpha=0.2)
    b, mb = rpo_token_mean(longer, beta=0.1, alpha=0.2)
    assert torch.allclose(a - base, 0.2 * (-lp.policy_chosen / lp.chosen_tokens), rtol=1e-12)
    assert torch.allclose(b - base, (a - base) / 2, rtol=1e-12)  # twice the tokens, half the per-token NLL
    assert torch.allclose(mb["nll"], ma["nll"] / 2)


def test_ipo_and_its_length_normalised_variant_agree_only_at_length_one():
    arrs = list(random_pairs(seed=7))
    lp, _ = as_pairs(arrs)
    assert not torch.allclose(ipo(lp, tau=0.1)[0], ipo_length_norm(lp, tau=0.1)[0])
    arrs[4], arrs[5] = np.ones(64), np.ones(64)
    lp1, _ = as_pairs(arrs)
    assert torch.allclose(ipo(lp1, tau=0.1)[0], ipo_length_norm(lp1, tau=0.1)[0], rtol=1e-14)


def test_hinge_needs_no_reference_and_reference_losses_say_so():
    pc, pr = torch.tensor([-3.0, -9.0]), torch.tensor([-5.0, -4.0])
    lp = PairLogps(pc, pr)
    losses, metrics = hinge(lp, gamma=0.5)
    assert torch.allclose(losses, torch.tensor([0.0, 3.5]))
    assert torch.equal(metrics["rewards/accuracy"], torch.tensor([1.0, 0.0]))
    assert not PREFERENCE_LOSSES["hinge"].needs_reference
    assert all(spec.needs_reference for name, spec in PREFERENCE_LOSSES.items() if name != "hinge")
    with pytest.raises(ValueError, match="reference"):
        dpo(lp)
    with pytest.raises(ValueError, match="lengths"):
        rpo_token_mean(PairLogps(pc, pr, pc, pr))


def test_pair_logps_checks_shapes():
    with pytest.raises(ValueError, match="shape"):
        PairLogps(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="1-D"):
        PairLogps(torch.zeros(3, 1), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="both"):
        PairLogps(torch.zeros(3), torch.zeros(3), torch.zeros(3))


def test_registry_names_the_keyword_parameters_and_validates():
    for name, spec in PREFERENCE_LOSSES.items():
        kw = [p.name for p in inspect.signature(spec.fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
        assert list(spec.params) == kw, name
        fn, needs_ref, names = spec  # unpacks as a plain triple
        assert fn is spec.fn
    lp, _ = margin_pairs([2.0])
    # pure functions guard their arguments with ValueError; recipes are checked earlier, by the schema
    with pytest.raises(ValueError, match=r"\[0, 0\.5\)"):
        rdpo(lp, beta=0.1, eps=0.5)
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo(lp, beta=0.0)


# ---- cross-check against TRL ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def trl_loss():
    """TRL 1.16's own loss code (DPOTrainer._compute_loss) on given per-sequence log-probs.

    TRL has no standalone loss function, so `_compute_loss` runs with a stand-in `self` (the config
    fields it reads, a no-op accelerator) and a stand-in model whose per-token log-probs sum to the
    given sequence log-probs; reference log-probs come in as precomputed. One pair per call, so TRL's
    batch mean is the per-pair loss.
    """
    try:
        from trl.trainer.dpo_trainer import DPOTrainer
    except Exception as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"trl is not importable ({type(e).__name__}: {e})")

    def run(loss_types, beta, pc, pr, rc, rr, nc, nr, label_smoothing=0.0, loss_weights=None):
        nc, nr = int(nc), int(nr)
        length = max(nc, nr) + 1  # position 0 is a prompt token
        completion_mask = torch.zeros(2, length, dtype=torch.long)
        completion_mask[0, 1:1 + nc] = 1
        completion_mask[1, 1:1 + nr] = 1
        shift = completion_mask[:, 1:].double()
        token_logps = shift * torch.tensor([[pc / nc], [pr / nr]], dtype=torch.float64)
        zeros = torch.zeros_like(token_logps)
        outputs = SimpleNamespace(log_probs=token_logps, entropy=zeros, mean_logits=zeros,
                                  is_top1=zeros.bool())
        accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda t: t,
                                      gather=lambda t: t)
        stub = SimpleNamespace(
            model=SimpleNamespace(training=True), accelerator=accelerator, aux_loss_enabled=False,
            ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
            loss_types=list(loss_types),
            loss_weights=loss_weights or [1.0] * len(loss_types), beta=beta, label_smoothing=label_smoothing,
            use_weighting=False, _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
            _total_train_tokens=0, _tp_size=1, args=SimpleNamespace())
        inputs = {"input_ids": torch.zeros(2, length, dtype=torch.long),
                  "attention_mask": torch.ones(2, length, dtype=torch.long),
                  "completion_mask": completion_mask,
                  "ref_chosen_logps": torch.tensor([rc], dtype=torch.float64),
                  "ref_rejected_logps": torch.tensor([rr], dtype=torch.float64)}
        loss = DPOTrainer._compute_loss(stub, lambda **kw: outputs, inputs, False)
        return float(loss)

    return run


def trl_pairs():
    # moderate margins plus beta*h = +-50 (beta = 0.1), unequal lengths so length normalisation shows
    return list(zip(*random_pairs(n=12, seed=8, beta_h=[50.0, -50.0], scale=0.1)))


def ours(fn, pair, **kw):
    lp = PairLogps(*[torch.tensor([v], dtype=torch.float64) for v in pair])
    return float(fn(lp, **kw)[0][0])


def test_trl_sigmoid_is_dpo(trl_loss):
    for pair in trl_pairs():
        assert ours(dpo, pair, beta=0.1) == pytest.approx(trl_loss(["sigmoid"], 0.1, *pair), rel=1e-6,
                                                          abs=1e-12)


@pytest.mark.parametrize("eps", [0.1, 0.3, 0.45])
def test_trl_robust_is_rdpo(trl_loss, eps):
    for pair in trl_pairs():
        expected = trl_loss(["robust"], 0.1, *pair, label_smoothing=eps)
        assert ours(rdpo, pair, beta=0.1, eps=eps) == pytest.approx(expected, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_trl_cdpo_lives_in_aot_not_sigmoid(trl_loss, eps):
    # TRL 1.16's "sigmoid" ignores label_smoothing (cDPO was dropped); at one pair per batch its "aot"
    # loss (which sorts margins across the batch) is exactly the label-smoothed loss.
    for pair in trl_pairs():
        got = ours(cdpo, pair, beta=0.1, eps=eps)
        assert got == pytest.approx(trl_loss(["aot"], 0.1, *pair, label_smoothing=eps), rel=1e-6, abs=1e-12)
        # TRL's "sigmoid" with label smoothing is plain DPO: the smoothing is ignored, so it is not cDPO
        sigmoid_ls = trl_loss(["sigmoid"], 0.1, *pair, label_smoothing=eps)
        assert sigmoid_ls == pytest.approx(ours(dpo, pair, beta=0.1), rel=1e-6, abs=1e-12)
        assert sigmoid_ls != pytest.approx(got, rel=1e-3)


def test_trl_hinge_is_hinge_norm_with_gamma_equal_beta(trl_loss):
    for pair in trl_pairs():
        assert ours(hinge_norm, pair, gamma=0.1) == pytest.approx(trl_loss(["hinge"], 0.1, *pair), rel=1e-6,
                                                                  abs=1e-12)
        # the reference-free SLiC hinge is TRL's hinge with a zero reference
        pc, pr, _, _, nc, nr = pair
        assert ours(hinge, (pc, pr, 0.0, 0.0, nc, nr), gamma=0.1) == pytest.approx(
            trl_loss(["hinge"], 0.1, pc, pr, 0.0, 0.0, nc, nr), rel=1e-6, abs=1e-12)


def test_trl_ipo_is_length_normalised(trl_loss):
    differs = 0
    for pair in trl_pairs():
        expected = trl_loss(["ipo"], 0.1, *pair)
        assert ours(ipo_length_norm, pair, tau=0.1) == pytest.approx(expected, rel=1e-6, abs=1e-12)
        differs += ours(ipo, pair, tau=0.1) != pytest.approx(expected, rel=1e-3)
    assert differs == len(trl_pairs())  # on summed log-probs (the paper's formula) TRL's "ipo" differs


def test_trl_sft_term_is_token_mean_rpo_and_sigmoid_norm_is_not_rso(trl_loss):
    for pair in trl_pairs():
        expected = trl_loss(["sigmoid", "sft"], 0.1, *pair, loss_weights=[1.0, 0.2])
        assert ours(rpo_token_mean, pair, beta=0.1, alpha=0.2) == pytest.approx(expected, rel=1e-6, abs=1e-12)
    # TRL's "sigmoid_norm" is DPO on length-normalised log-ratios, not RSO's sigmoid-norm (= dpo)
    pair = trl_pairs()[0]
    assert pair[4] > 1 and pair[5] > 1  # both lengths above 1, so length normalisation changes the loss
    assert trl_loss(["sigmoid_norm"], 0.1, *pair) != pytest.approx(ours(dpo, pair, beta=0.1), rel=1e-3)


def logps(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64) * 5 for _ in range(6)]


def test_inpo_at_the_first_iteration_is_ipo_with_tau_eta():
    pc, pr, rc, rr, _, _ = logps()
    lp = PairLogps(pc, pr, rc, rr, prev_chosen=rc, prev_rejected=rr)  # pi_1 = pi_ref
    for tau in (0.005 / 3, 0.0, 0.005):
        loss, _ = inpo(lp, eta=0.005, tau=tau)
        torch.testing.assert_close(loss, ipo(PairLogps(pc, pr, rc, rr), tau=0.005)[0], rtol=1e-12, atol=1e-9)


def test_inpo_matches_its_formula_and_checks_tau():
    pc, pr, rc, rr, tc, tr = logps(1)
    eta, tau = 0.01, 0.004
    loss, m = inpo(PairLogps(pc, pr, rc, rr, prev_chosen=tc, prev_rejected=tr), eta=eta, tau=tau)
    h = (pc - pr) - (tau / eta) * (rc - rr) - (1 - tau / eta) * (tc - tr)
    torch.testing.assert_close(loss, (h - 1 / (2 * eta)) ** 2, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(m["rewards/margins"], eta * h, rtol=1e-12, atol=1e-12)
    # tau = 0: the reference does not enter
    a, _ = inpo(PairLogps(pc, pr, rc, rr, prev_chosen=tc, prev_rejected=tr), eta=eta, tau=0.0)
    b, _ = inpo(PairLogps(pc, pr, rc * 0, rr * 0, prev_chosen=tc, prev_rejected=tr), eta=eta, tau=0.0)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"tau must be in \[0, eta\]"):
        inpo(PairLogps(pc, pr, rc, rr, prev_chosen=tc, prev_rejected=tr), eta=0.005, tau=0.1)
    with pytest.raises(ValueError, match="previous iterate"):
        inpo(PairLogps(pc, pr, rc, rr), eta=0.005, tau=0.001)
