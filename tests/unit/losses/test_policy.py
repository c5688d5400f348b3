"""PPO building blocks (posttrain/losses/policy.py) against hand-computed numbers and float64 references."""
import importlib
import json
import math
import warnings

import numpy as np
import pytest
import torch

from posttrain.losses.policy import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_penalty,
    ppo_policy_loss,
    ppo_value_loss,
    shaped_rewards,
    whiten,
)

D = torch.float64


def t(x, dtype=D):
    return torch.tensor(x, dtype=dtype)


def ragged_mask(lengths, T, starts=None):
    starts = starts or [0] * len(lengths)
    m = torch.zeros(len(lengths), T, dtype=torch.bool)
    for i, (s, n) in enumerate(zip(starts, lengths)):
        m[i, s:s + n] = True
    return m


def ref_gae(rewards, values, mask, gamma, lam):
    """Independent float64 GAE: per row, take the response slice as a plain list and recurse backwards."""
    r, v, m = np.asarray(rewards, np.float64), np.asarray(values, np.float64), np.asarray(mask, bool)
    adv = np.zeros_like(r)
    for b in range(r.shape[0]):
        idx = np.flatnonzero(m[b])
        rr, vv = r[b, idx], v[b, idx]
        a, nxt = 0.0, 0.0
        out = []
        for k in range(len(idx) - 1, -1, -1):
            a = rr[k] + gamma * nxt - vv[k] + gamma * lam * a
            nxt = vv[k]
            out.append(a)
        adv[b, idx] = out[::-1]
    return adv, np.where(m, adv + v, 0.0)


# ---- GAE ------------------------------------------------------------------------------------------
def test_gae_hand_computed_single_row():
    # gamma 1, lambda 0.95; r = [0.1, -0.2, 1.0], V = [0.5, 0.3, 0.4], V after the last token = 0
    # delta = [0.1 + 0.3 - 0.5, -0.2 + 0.4 - 0.3, 1.0 + 0 - 0.4] = [-0.1, -0.1, 0.6]
    # A_2 = 0.6; A_1 = -0.1 + 0.95 * 0.6 = 0.47; A_0 = -0.1 + 0.95 * 0.47 = 0.3465
    # R = A + V = [0.8465, 0.77, 1.0]
    rewards, values = t([[0.1, -0.2, 1.0]]), t([[0.5, 0.3, 0.4]])
    adv, ret = gae(rewards, values, torch.ones(1, 3, dtype=torch.bool), gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv, t([[0.3465, 0.47, 0.6]]), rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, t([[0.8465, 0.77, 1.0]]), rtol=0, atol=1e-12)


def test_gae_padded_batch_does_not_leak_padding():
    # row 0 = the hand example above (3 tokens + 1 pad); row 1 has 2 tokens: r = [0.5, -1.0], V = [0.2, 0.1]
    # delta = [0.5 + 0.1 - 0.2, -1.0 + 0 - 0.1] = [0.4, -1.1]; A = [0.4 + 0.95 * -1.1, -1.1] = [-0.645, -1.1]
    nan = float("nan")
    rewards = t([[0.1, -0.2, 1.0, 7.0], [0.5, -1.0, 3.0, nan]])     # garbage (even NaN) in padding
    values = t([[0.5, 0.3, 0.4, 100.0], [0.2, 0.1, nan, -50.0]])
    mask = ragged_mask([3, 2], 4)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv, t([[0.3465, 0.47, 0.6, 0.0], [-0.645, -1.1, 0.0, 0.0]]), rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(ret, t([[0.8465, 0.77, 1.0, 0.0], [-0.445, -1.0, 0.0, 0.0]]), rtol=0,
                               atol=1e-12)
    # the same row alone, unpadded, gives the same numbers
    adv1, _ = gae(t([[0.5, -1.0]]), t([[0.2, 0.1]]), torch.ones(1, 2, dtype=torch.bool), gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv[1, :2], adv1[0], rtol=0, atol=1e-12)
    # a response that starts after masked prompt positions is handled the same way
    adv2, _ = gae(t([[9.0, 0.5, -1.0, 9.0]]), t([[9.0, 0.2, 0.1, 9.0]]), ragged_mask([2], 4, [1]), 1.0, 0.95)
    torch.testing.assert_close(adv2, t([[0.0, -0.645, -1.1, 0.0]]), rtol=0, atol=1e-12)


def test_gae_gamma_lambda_one_is_future_return_minus_value():
    g = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(4, 7, generator=g, dtype=D), torch.randn(4, 7, generator=g, dtype=D)
    mask = ragged_mask([7, 5, 1, 3], 7)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    r = torch.where(mask, rewards, 0)
    future = r.flip(-1).cumsum(-1).flip(-1)   # sum_{k >= t} r_k
    torch.testing.assert_close(adv, torch.where(mask, future - values, 0), rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, torch.where(mask, future, 0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (0.99, 0.0)])
def test_gae_matches_reference_on_random_batch(gamma, lam):
    g = torch.Generator().manual_seed(2)
    rewards, values = torch.randn(5, 9, generator=g, dtype=D), torch.randn(5, 9, generator=g, dtype=D)
    mask = ragged_mask([9, 4, 6, 1, 2], 9, [0, 2, 0, 5, 7])
    adv, ret = gae(rewards, values.requires_grad_(), mask, gamma, lam)
    ea, er = ref_gae(rewards, values.detach(), mask, gamma, lam)
    np.testing.assert_allclose(adv.numpy(), ea, atol=1e-12)
    np.testing.assert_allclose(ret.numpy(), er, atol=1e-12)
    assert not adv.requires_grad and not ret.requires_grad


def test_gae_rejects_non_contiguous_mask():
    mask = torch.tensor([[True, False, True, False]])
    with pytest.raises(ValueError, match="not contiguous"):
        gae(torch.zeros(1, 4), torch.zeros(1, 4), mask)


# ---- whitening ------------------------------------------------------------------------------------
def masked_stats(x, mask):
    v = x[mask]
    return v.mean().item(), v.var(unbiased=True).item(), v.var(unbiased=False).item()


def padded_random(seed=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 8, generator=g, dtype=D) * 3 + 2
    mask = ragged_mask([8, 3, 5, 6], 8)
    x[~mask] = float("nan")   # padding must not matter
    return x, mask


def test_whiten_zero_mean_unit_unbiased_variance_and_zero_padding():
    x, mask = padded_random()
    w = whiten(x, mask)
    mean, var_u, _ = masked_stats(w, mask)
    assert mean == pytest.approx(0.0, abs=1e-12)
    assert var_u == pytest.approx(1.0, rel=1e-7)
    assert torch.all(w[~mask] == 0)


def test_whiten_biased_option_gives_biased_unit_variance():
    x, mask = padded_random()
    _, var_u, var_b = masked_stats(whiten(x, mask, unbiased=False), mask)
    n = int(mask.sum())
    assert var_b == pytest.approx(1.0, rel=1e-7)
    assert var_u == pytest.approx(n / (n - 1), rel=1e-7)


def test_whiten_without_mean_shift_keeps_the_mean():
    x, mask = padded_random()
    w = whiten(x, mask, shift_mean=False)
    mean_x = x[mask].mean().item()
    mean, var_u, _ = masked_stats(w, mask)
    assert mean_x > 1.0 and mean == pytest.approx(mean_x, rel=1e-12)
    assert var_u == pytest.approx(1.0, rel=1e-7)
    assert torch.all(w[~mask] == 0)
    torch.testing.assert_close(w[mask] - mean_x, whiten(x, mask)[mask], rtol=0, atol=1e-12)


def test_whiten_needs_two_elements():
    with pytest.raises(ValueError, match="at least 2"):
        whiten(t([[1.0, 2.0]]), torch.tensor([[True, False]]))


def trl_masked_whiten_formula(values, mask, shift_mean=True):
    """TRL 0.x `masked_whiten` (trl/core.py, later trl/trainer/utils.py), transcribed: unbiased masked_var."""
    mean = (values * mask).sum() / mask.sum()
    var = (((values - mean) ** 2) * mask).sum() / mask.sum()
    var = var * mask.sum() / (mask.sum() - 1)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened + mean if not shift_mean else whitened


def _trl_masked_whiten():
    for mod in ("trl.trainer.utils", "trl.core", "trl.experimental.ppo", "trl.experimental.ppo.ppo_trainer",
                "trl.trainer.ppo_trainer"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # trl.experimental warns on import
                fn = getattr(importlib.import_module(mod), "masked_whiten", None)
        except Exception:
            continue
        if fn is not None:
            return fn
    return None


@pytest.mark.parametrize("shift_mean", [True, False])
def test_whiten_matches_trl_masked_whiten_formula(shift_mean):
    x, mask = padded_random(4)
    x = torch.where(mask, x, 0.0)   # TRL multiplies by the mask, so it needs finite padding
    ours = whiten(x, mask, shift_mean=shift_mean)
    ref = trl_masked_whiten_formula(x, mask.to(D), shift_mean)
    torch.testing.assert_close(ours[mask], ref[mask], rtol=0, atol=1e-12)


@pytest.mark.parametrize("shift_mean", [True, False])
def test_whiten_matches_installed_trl(shift_mean):
    fn = _trl_masked_whiten()
    if fn is None:
        trl = pytest.importorskip("trl")
        pytest.skip(f"TRL {trl.__version__} exposes no masked_whiten (searched trl.trainer.utils, trl.core, "
                    "trl.experimental.ppo); test_whiten_matches_trl_masked_whiten_formula checks the "
                    "transcribed formula")
    x, mask = padded_random(4)
    x = torch.where(mask, x, 0.0)
    ref = fn(x, mask.to(D), shift_mean=shift_mean)
    torch.testing.assert_close(whiten(x, mask, shift_mean=shift_mean)[mask], ref[mask], rtol=0, atol=1e-12)


# ---- KL and reward shaping ------------------------------------------------------------------------
def test_kl_penalty_kinds():
    logp, ref = t([[-1.0, -2.0, -0.5]]), t([[-1.5, -1.0, -0.5]])
    d = np.array([0.5, -1.0, 0.0])
    np.testing.assert_allclose(kl_penalty(logp, ref, "k1").numpy()[0], d, atol=1e-15)
    np.testing.assert_allclose(kl_penalty(logp, ref, "abs").numpy()[0], np.abs(d), atol=1e-15)
    np.testing.assert_allclose(kl_penalty(logp, ref, "mse").numpy()[0], 0.5 * d ** 2, atol=1e-15)
    k3 = (np.exp(-d) - 1) - (-d)     # (exp(ref - logp) - 1) - (ref - logp)
    np.testing.assert_allclose(kl_penalty(logp, ref, "k3").numpy()[0], k3, atol=1e-15)
    assert (kl_penalty(logp, ref, "k3") >= 0).all()
    with pytest.raises(ValueError, match="kind must be one of"):
        kl_penalty(logp, ref, "full")


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_shaped_rewards_score_on_last_response_token_only(kind):
    g = torch.Generator().manual_seed(5)
    logp_old, logp_ref = -torch.rand(3, 6, generator=g, dtype=D) * 3, -torch.rand(3, 6, generator=g,
                                                                                  dtype=D) * 3
    mask = ragged_mask([6, 2, 3], 6, [0, 0, 1])   # lengths differ; last tokens at 5, 1, 3
    logp_old[~mask] = float("nan")
    score = t([1.0, -1.0, -3.0])
    beta = 0.2
    rewards, kl = shaped_rewards(score, logp_old, logp_ref, mask, beta, kind)
    expected_kl = torch.where(mask, kl_penalty(logp_old, logp_ref, kind), 0)
    torch.testing.assert_close(kl, expected_kl, rtol=0, atol=1e-15)
    expected = -beta * expected_kl
    for b, last in enumerate([5, 1, 3]):
        expected[b, last] += score[b]
    torch.testing.assert_close(rewards, expected, rtol=0, atol=1e-15)
    assert torch.all(rewards[~mask] == 0)
    # the score appears exactly once per row: summing rewards + beta*kl recovers it
    torch.testing.assert_close((rewards + beta * kl).sum(-1), score, rtol=0, atol=1e-12)


def test_shaped_rewards_row_without_response_tokens_raises():
    mask = ragged_mask([2, 0], 3)
    with pytest.raises(ValueError, match=r"rows \[1\] have no response tokens"):
        shaped_rewards(t([1.0, 1.0]), torch.zeros(2, 3, dtype=D), torch.zeros(2, 3, dtype=D), mask, 0.1)
    with pytest.raises(ValueError, match="score must be"):
        shaped_rewards(t([1.0]), torch.zeros(2, 3, dtype=D), torch.zeros(2, 3, dtype=D), ragged_mask([2, 1],
                                                                                                     3), 0.1)


# ---- policy loss ----------------------------------------------------------------------------------
# (ratio, advantage) -> (per-token loss, clipped term active, d loss / d logp) with clip 0.2
POLICY_CASES = [
    (1.2, 1.0, -1.2, False, -1.2),    # at the upper boundary: a tie, counted unclipped, gradient kept
    (0.8, -1.0, 0.8, False, 0.8),     # at the lower boundary with A < 0: likewise
    (1.5, 1.0, -1.2, True, 0.0),      # beyond 1+eps with A > 0: the clipped term is active, no gradient
    # beyond 1+eps with A < 0: unclipped (pessimistic) term, pushes logp down
    (1.5, -1.0, 1.5, False, 1.5),
    (0.5, 1.0, -0.5, False, -0.5),    # below 1-eps with A > 0: unclipped term, pushes logp up
    (0.5, -1.0, 0.8, True, 0.0),      # below 1-eps with A < 0: clipped term active, no gradient
    (1.0, 2.0, -2.0, False, -2.0),    # on-policy: loss = -A, gradient -A
]


@pytest.mark.parametrize("ratio,adv,loss,clipped,grad", POLICY_CASES)
def test_policy_loss_clip_cases(ratio, adv, loss, clipped, grad):
    logp_old = t([[0.0]])
    logp = t([[math.log(ratio)]]).requires_grad_()
    assert torch.exp(logp).item() == ratio   # the boundary cases really sit on the boundary
    loss_sum, n, metrics = ppo_policy_loss(logp, logp_old, t([[adv]]), torch.ones(1, 1, dtype=torch.bool),
                                           clip=0.2)
    loss_sum.backward()
    assert loss_sum.item() == pytest.approx(loss, abs=1e-12)
    assert n.item() == 1
    assert metrics["policy/clipfrac"].item() == float(clipped)
    assert logp.grad.item() == pytest.approx(grad, abs=1e-12)
    if clipped:
        assert logp.grad.item() == 0.0
    elif adv > 0:
        assert logp.grad.item() < 0   # descent raises logp of a positively-advantaged token
    else:
        assert logp.grad.item() > 0


def test_policy_loss_matches_float64_formula_on_random_inputs():
    g = torch.Generator().manual_seed(6)
    B, T, clip = 4, 10, 0.2
    logp_old = -torch.rand(B, T, generator=g, dtype=D) * 4
    logp = (logp_old + torch.randn(B, T, generator=g, dtype=D) * 0.3).requires_grad_()
    adv = torch.randn(B, T, generator=g, dtype=D)
    mask = ragged_mask([10, 7, 3, 1], T, [0, 2, 0, 9])
    garbage_old = logp_old.clone()
    garbage_old[~mask] = float("inf")
    loss_sum, n, metrics = ppo_policy_loss(logp, garbage_old, adv, mask, clip)
    lp, lo, a, m = logp.detach().numpy(), logp_old.numpy(), adv.numpy(), mask.numpy()
    ratio = np.exp(lp - lo)
    l1, l2 = -a * ratio, -a * np.clip(ratio, 1 - clip, 1 + clip)
    assert n.item() == m.sum()
    assert loss_sum.item() == pytest.approx(np.maximum(l1, l2)[m].sum(), rel=1e-12)
    assert metrics["policy/clipfrac"].item() == (l2 > l1)[m].sum()
    assert 0 < metrics["policy/clipfrac"].item() < m.sum()   # the random case exercises both branches
    assert metrics["policy/approx_kl"].item() == pytest.approx((0.5 * (lp - lo) ** 2)[m].sum(), rel=1e-12)
    assert metrics["policy/ratio"].item() == pytest.approx(ratio[m].sum(), rel=1e-12)
    loss_sum.backward()
    expected_grad = np.where(m & (l1 >= l2), -a * ratio, 0.0)
    np.testing.assert_allclose(logp.grad.numpy(), expected_grad, atol=1e-12)


# ---- value loss -----------------------------------------------------------------------------------
# (V, V_old, R) -> (per-token loss, clipped active, d loss / d V) with clip 0.2
VALUE_CASES = [
    (0.5, 0.0, 1.0, 0.5 * 0.8 ** 2, True, 0.0),      # V moved past V_old+0.2 towards R: clipped error larger
    (0.5, 0.0, 0.0, 0.5 * 0.5 ** 2, False, 0.5),     # V moved past V_old+0.2 away from R: unclipped larger
    (-0.5, 0.0, -1.0, 0.5 * 0.8 ** 2, True, 0.0),    # the same below V_old-0.2
    (0.1, 0.0, 1.0, 0.5 * 0.9 ** 2, False, -0.9),    # inside the clip range: the two terms tie
]


@pytest.mark.parametrize("v,v_old,r,loss,clipped,grad", VALUE_CASES)
def test_value_loss_clip_cases(v, v_old, r, loss, clipped, grad):
    values = t([[v]]).requires_grad_()
    loss_sum, n, metrics = ppo_value_loss(values, t([[v_old]]), t([[r]]), torch.ones(1, 1, dtype=torch.bool),
                                          0.2)
    loss_sum.backward()
    assert loss_sum.item() == pytest.approx(loss, abs=1e-12)
    assert metrics["value/clipfrac"].item() == float(clipped)
    assert metrics["value/error"].item() == pytest.approx((v - r) ** 2, abs=1e-12)
    assert values.grad.item() == pytest.approx(grad, abs=1e-12)


def test_value_loss_matches_float64_formula_on_random_inputs():
    g = torch.Generator().manual_seed(7)
    B, T, clip = 4, 9, 0.2
    v_old = torch.randn(B, T, generator=g, dtype=D)
    values = (v_old + torch.randn(B, T, generator=g, dtype=D) * 0.4).requires_grad_()
    ret = torch.randn(B, T, generator=g, dtype=D)
    mask = ragged_mask([9, 5, 2, 7], T)
    ret_garbage = ret.clone()
    ret_garbage[~mask] = float("nan")
    loss_sum, n, metrics = ppo_value_loss(values, v_old, ret_garbage, mask, clip)
    v, vo, r, m = values.detach().numpy(), v_old.numpy(), ret.numpy(), mask.numpy()
    vc = np.clip(v, vo - clip, vo + clip)
    l1, l2 = (v - r) ** 2, (vc - r) ** 2
    assert n.item() == m.sum()
    assert loss_sum.item() == pytest.approx((0.5 * np.maximum(l1, l2))[m].sum(), rel=1e-12)
    assert metrics["value/clipfrac"].item() == (l2 > l1)[m].sum()
    assert 0 < metrics["value/clipfrac"].item() < m.sum()
    assert metrics["value/error"].item() == pytest.approx(l1[m].sum(), rel=1e-12)
    loss_sum.backward()
    assert torch.isfinite(values.grad).all() and torch.all(values.grad[~mask] == 0)


# ---- entropy and explained variance ---------------------------------------------------------------
def test_entropy_matches_float64_definition_and_is_chunk_safe():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(3, 5, 11, generator=g, dtype=D) * 4
    p = torch.softmax(logits, -1).numpy()
    expected = -(p * np.log(p)).sum(-1)
    for chunk in (1, 4, 128):   # 15 rows: chunks that do and do not divide it
        np.testing.assert_allclose(entropy_from_logits(logits, chunk_size=chunk).numpy(), expected,
                                   atol=1e-12)
    assert entropy_from_logits(t([[1000.0, 0.0, -1000.0]])).item() == pytest.approx(0.0, abs=1e-12)
    assert entropy_from_logits(torch.zeros(2, 7, dtype=D)).numpy() == pytest.approx(np.full(2, math.log(7)))
    half = entropy_from_logits(logits.to(torch.bfloat16))
    assert half.dtype == torch.float32 and torch.allclose(half.double(), torch.from_numpy(expected), atol=0.1)
    x = logits.clone().requires_grad_()
    entropy_from_logits(x, chunk_size=4).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_entropy_matches_trl():
    trl_utils = pytest.importorskip("trl.trainer.utils")
    g = torch.Generator().manual_seed(9)
    logits = torch.randn(2, 6, 13, generator=g, dtype=D)
    torch.testing.assert_close(entropy_from_logits(logits), trl_utils.entropy_from_logits(logits), rtol=0,
                               atol=1e-12)


def test_explained_variance():
    g = torch.Generator().manual_seed(10)
    ret = torch.randn(3, 6, generator=g, dtype=D)
    mask = ragged_mask([6, 4, 2], 6)
    values = ret.clone()
    values[~mask] = 1e6   # padding ignored
    assert explained_variance(values, ret, mask).item() == pytest.approx(1.0, abs=1e-12)
    const = torch.full_like(ret, ret[mask].mean().item())
    assert explained_variance(const, ret, mask).item() == pytest.approx(0.0, abs=1e-12)
    noisy = ret + torch.randn(3, 6, generator=g, dtype=D)
    r, v, m = ret.numpy(), noisy.numpy(), mask.numpy()
    expected = 1 - np.var((r - v)[m]) / np.var(r[m])
    assert explained_variance(noisy, ret, mask).item() == pytest.approx(expected, rel=1e-12)
    assert math.isnan(explained_variance(values, torch.ones_like(ret), mask).item())


# ---- KL controllers -------------------------------------------------------------------------------
def test_adaptive_kl_controller_hand_computed_updates():
    c = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    assert c.value == 0.2
    # KL 7 > target 6: error 1/6, mult = 1 + (1/6) * 16 / 10000
    c.update(7.0, 16)
    assert c.value == pytest.approx(0.2 * (1 + (1 / 6) * 16 / 10000), rel=1e-15)
    assert c.value > 0.2
    v = c.value
    # KL 60 = 10x target: error clipped to +0.2
    c.update(60.0, 16)
    assert c.value == pytest.approx(v * (1 + 0.2 * 16 / 10000), rel=1e-15)
    v = c.value
    # KL 0: error clipped to -0.2, beta falls
    c.update(0.0, 100)
    assert c.value == pytest.approx(v * (1 - 0.2 * 100 / 10000), rel=1e-15)
    v = c.value
    # KL at target: unchanged; a tensor KL is accepted
    c.update(torch.tensor(6.0), 16)
    assert c.value == pytest.approx(v, rel=1e-15)
    # KL 3 = half the target: error -0.5 clipped to -0.2
    c.update(3.0, 10000)
    assert c.value == pytest.approx(v * 0.8, rel=1e-15)


def test_kl_controllers_state_round_trip():
    c = AdaptiveKLController(0.2, 6.0, 10000)
    for kl in (9.0, 2.0, 12.0):
        c.update(kl, 16)
    state = json.loads(json.dumps(c.state_dict()))   # serialisable as plain JSON
    resumed = AdaptiveKLController(0.5, 1.0, 10)
    resumed.load_state_dict(state)
    assert resumed.value == c.value and resumed.target == 6.0 and resumed.horizon == 10000
    assert resumed.update(8.0, 16) == c.update(8.0, 16)

    f = FixedKLController(0.05)
    assert f.update(100.0, 16) == 0.05 and f.value == 0.05
    g = FixedKLController(1.0)
    g.load_state_dict(json.loads(json.dumps(f.state_dict())))
    assert g.value == 0.05
    with pytest.raises(ValueError, match="not an adaptive"):
        resumed.load_state_dict(f.state_dict())
    with pytest.raises(ValueError, match="not a fixed"):
        g.load_state_dict(c.state_dict())
