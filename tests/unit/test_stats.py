"""Intervals and tests over seeds and eval sets (posttrain/stats.py)."""
import math

import pytest

from posttrain.stats import sign_test_p, wilson_interval


def test_wilson_interval_known_values_and_edges():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    lo, hi = wilson_interval(0, 10)  # unlike the normal approximation, never a zero-width interval
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.7225, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_sign_test_p():
    assert sign_test_p(16, 7) == pytest.approx(0.0931, abs=1e-4)  # RSO's 16 wins / 7 losses
    assert sign_test_p(3, 0) == pytest.approx(0.25)
    assert sign_test_p(2, 2) == 1.0 and sign_test_p(0, 0) == 1.0
