"""The SFT losses (posttrain/losses/sft.py): token / sequence / weighted normalisation against float64,
the weighted normaliser of tool_sft, and IFT's token weights against a float64 implementation written here
from the formula (METHODS.md section 6)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posttrain.losses.sft import discounted_suffix_sum, ift_token_weights, sft_loss


def reference(logps, mask, weights, normalization):
    logps, mask = np.asarray(logps, np.float64), np.asarray(mask, np.float64)
    w = np.ones_like(logps) if weights is None else np.asarray(weights, np.float64)
    nll = -logps * mask * w
    if normalization == "token":
        return nll.sum() / mask.sum()
    per_seq = [nll[i].sum() / mask[i].sum() for i in range(len(mask)) if mask[i].sum() > 0]
    return float(np.mean(per_seq))


@pytest.mark.parametrize("normalization", ["token", "sequence"])
@pytest.mark.parametrize("weighted", [False, True])
def test_sft_loss_matches_float64_reference(normalization, weighted):
    g = torch.Generator().manual_seed(0)
    logps = -torch.rand(4, 9, generator=g) * 5
    mask = torch.rand(4, 9, generator=g) > 0.4
    mask[3] = False  # a sequence with nothing supervised
    weights = torch.rand(4, 9, generator=g) if weighted else None
    loss_sum, units, _ = sft_loss(logps, mask, weights, normalization)
    expected = reference(logps.numpy(), mask.numpy(), None if weights is None else weights.numpy(),
                         normalization)
    assert float(loss_sum / units) == pytest.approx(expected, rel=1e-6)


def test_normalisations_differ_on_unequal_lengths_and_agree_on_equal():
    logps = torch.tensor([[-1.0, -1.0, -1.0, -1.0], [-3.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]]).bool()
    tok = sft_loss(logps, mask, normalization="token")
    seq = sft_loss(logps, mask, normalization="sequence")
    assert float(tok[0] / tok[1]) == pytest.approx(7 / 5)
    assert float(seq[0] / seq[1]) == pytest.approx((1 + 3) / 2)
    full = torch.ones_like(mask)
    assert (float(sft_loss(logps, full)[0] / 8)
            == pytest.approx(float(sft_loss(logps, full, normalization="sequence")[0] / 2)))


def test_unit_weights_equal_no_weights_and_zero_weights_remove_tokens():
    logps = -torch.rand(3, 5)
    mask = torch.ones(3, 5, dtype=torch.bool)
    plain = sft_loss(logps, mask)[0]
    assert torch.allclose(sft_loss(logps, mask, torch.ones(3, 5))[0], plain)
    w = torch.ones(3, 5)
    w[:, 0] = 0
    assert torch.allclose(sft_loss(logps, mask, w)[0], plain + logps[:, 0].sum())


def test_bad_normalization_and_shapes():
    with pytest.raises(ValueError, match="normalization"):
        sft_loss(torch.zeros(1, 2), torch.ones(1, 2), normalization="mean")
    with pytest.raises(ValueError, match="differ"):
        sft_loss(torch.zeros(1, 2), torch.ones(1, 3))


def reference_weights(nll: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """METHODS.md 6.4 position by position, float64: c_t = m_t l_t / N, S_t = sum_{j>=t} gamma^(j-t) c_j,
    w_t = m_t S_t N / sum_k m_k S_k."""
    out = torch.zeros_like(nll)
    for b in range(nll.shape[0]):
        m = mask[b].double()
        n = m.sum()
        c = [m[t] * nll[b, t] / n for t in range(nll.shape[1])]
        s = [sum(gamma ** (j - t) * c[j] for j in range(t, len(c))) for t in range(len(c))]
        total = sum(m[k] * s[k] for k in range(len(c)))
        out[b] = torch.stack([m[t] * s[t] * n / total for t in range(len(c))])
    return out


def batch(seed=0):
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[0, 2:9] = True
    mask[1, 4:7] = True  # padding after
    mask[2, [1, 2, 5, 6, 7]] = True  # two assistant turns with a gap
    g = torch.Generator().manual_seed(seed)
    nll = (torch.rand(3, 9, generator=g, dtype=torch.float64) * 3 + 0.01) * mask
    return nll, mask


@pytest.mark.parametrize("gamma", [0.95, 0.5, 1.0])
def test_ift_weights_and_their_gradient_match_the_formula(gamma):
    nll, mask = batch()
    a = nll.clone().requires_grad_(True)
    b = nll.clone().requires_grad_(True)
    w = ift_token_weights(a, mask, gamma)
    ref = reference_weights(b, mask, gamma)
    torch.testing.assert_close(w, ref, rtol=1e-12, atol=1e-12)
    # the weights of a sequence sum to its response length N
    torch.testing.assert_close(w.sum(-1), mask.double().sum(-1), rtol=1e-12, atol=1e-12)
    assert (w[~mask] == 0).all()
    # L = mean_seq (1/N) sum_t w_t l_t, with the gradient flowing through the weights
    n = mask.double().sum(-1)
    ((w * a).sum(-1) / n).mean().backward()
    ((ref * b).sum(-1) / n).mean().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    detached = torch.autograd.grad(((w.detach() * a).sum(-1) / n).mean(), a)[0]
    assert not torch.allclose(detached, a.grad)  # the weights' own gradient is there and counts


def test_gamma_zero_gives_unit_weights_and_a_suffix_sum_is_exact_at_length():
    nll, mask = batch()
    assert torch.equal(ift_token_weights(nll, mask, 0.0), mask.double())
    x = torch.rand(2, 3000, dtype=torch.float64)
    s = discounted_suffix_sum(x, 0.95)
    loop = torch.zeros_like(x)
    acc = torch.zeros(2, dtype=torch.float64)
    for t in range(2999, -1, -1):
        acc = x[:, t] + 0.95 * acc
        loop[:, t] = acc
    torch.testing.assert_close(s, loop, rtol=1e-10, atol=1e-10)  # no overflow past ~1,700 positions
    assert torch.equal(ift_token_weights(torch.zeros(1, 4), torch.zeros(1, 4, dtype=torch.bool), 0.95),
                       torch.zeros(1, 4))


def test_weighted_normaliser_is_the_sum_of_weights():
    logps = -torch.tensor([[0.5, 1.0, 2.0, 0.0], [1.5, 0.5, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]).bool()
    w = torch.tensor([[1.0, 9.0, 1.0, 5.0], [2.0, 1.0, 7.0, 7.0]])
    loss, units, _ = sft_loss(logps, mask, w, "weights")
    assert units.item() == pytest.approx(1 + 9 + 1 + 2 + 1)
    assert (loss / units).item() == pytest.approx((0.5 + 9 * 1.0 + 2.0 + 2 * 1.5 + 0.5) / 14)
    ones, units1, _ = sft_loss(logps, mask, torch.ones_like(w), "weights")
    plain, tokens, _ = sft_loss(logps, mask, None, "token")
    assert (ones / units1).item() == pytest.approx((plain / tokens).item())
    with pytest.raises(ValueError, match="needs weights"):
        sft_loss(logps, mask, None, "weights")
