"""The Bradley-Terry loss against its float64 formula."""
import pytest
import torch

from posttrain.losses.reward import bradley_terry


def test_bradley_terry_matches_float64_formula():
    g = torch.Generator().manual_seed(0)
    rc, rr = torch.randn(64, generator=g) * 20, torch.randn(64, generator=g) * 20
    losses, m = bradley_terry(rc, rr, center_coef=0.01)
    d = (rc - rr).double()
    ref = torch.log1p(torch.exp(-d.abs())) + torch.clamp(-d, min=0) + 0.01 * (rc + rr).double() ** 2
    assert torch.isfinite(losses).all()
    assert torch.allclose(losses.double(), ref, atol=1e-5)
    assert m["reward/accuracy"].tolist() == (rc > rr).float().tolist()
    # with margin m the loss equals the plain loss at (diff - m)
    l_m, _ = bradley_terry(rc, rr, margin=1.5)
    l_0, _ = bradley_terry(rc - 1.5, rr)
    assert torch.allclose(l_m, l_0)
    with pytest.raises(ValueError):
        bradley_terry(rc, rr[:3])
