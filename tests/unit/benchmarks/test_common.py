"""The throughput benchmarks' shared measures without a model (benchmarks/common.py): model FLOPs, the
matmul ceiling."""
import numpy as np
import torch

from benchmarks.common import gemm_flops_per_s, train_flops


def test_train_flops_counts_body_on_tokens_and_head_on_its_positions():
    assert train_flops((10, 3), tokens=100, head_positions=40) == 6 * (10 * 100 + 3 * 40)
    assert train_flops((10, 3), 100, 40, passes=2) == 2 * (10 * 100 + 3 * 40)


def test_gemm_rate_is_a_positive_rate():
    torch.set_num_threads(1)
    rate = gemm_flops_per_s("cpu", "float32", n=128, reps=2)
    assert np.isfinite(rate) and rate > 1e6
