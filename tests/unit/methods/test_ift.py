"""IFT's lambda schedule (METHODS.md section 6)."""
from __future__ import annotations

import pytest

from posttrain.methods.ift import IFTParams, lambda_at


def test_lambda_schedule_is_the_official_linear_warmup():
    p = IFTParams(lam=0.4, lam_start=0.0, lam_warmup_steps=4)
    assert [lambda_at(p, s) for s in range(6)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])
    assert lambda_at(IFTParams(lam=0.3), 100) == 0.3
