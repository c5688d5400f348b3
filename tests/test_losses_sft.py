import numpy as np
import pytest
import torch

from posttrain.losses.sft import sft_loss


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
    assert float(sft_loss(logps, full)[0] / 8) == pytest.approx(float(sft_loss(logps, full,
                                                                               normalization="sequence")[0] / 2))


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
