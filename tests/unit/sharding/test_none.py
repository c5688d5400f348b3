"""The one-process strategy's vector norm is float64-accurate where torch's own is not."""
import math

import torch


def test_vector_norm_is_float64_accurate_where_torchs_own_is_not():
    from posttrain.sharding.none import vector_norm
    g = torch.Generator().manual_seed(0)
    # heavy-tailed like an embedding gradient (most rows near zero), 3M elements as in the tiny model's
    t = torch.randn(3_000_001, generator=g) * torch.rand(3_000_001, generator=g) ** 4
    exact = t.double().norm().item()
    assert abs(vector_norm(t).item() - exact) / exact < 1e-6
    for n in (0, 1, 4095, 4096, 8192 + 3):
        x = torch.randn(n, generator=g)
        assert math.isclose(vector_norm(x).item(), x.double().norm().item(), rel_tol=1e-6, abs_tol=1e-12)
