"""The throughput benchmarks' shared measures: fixed-length text, parameter counts, model FLOPs, the matmul
ceiling (benchmarks/common.py)."""
import numpy as np
import pytest
import torch

from benchmarks.common import fixed_length_text, gemm_flops_per_s, param_counts, train_flops
from posttrain.models import load_model


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-llama")


@pytest.mark.parametrize("n", [1, 7, 256])
def test_fixed_length_text_has_exactly_n_tokens(tiny, n):
    _, tok = tiny
    rng = np.random.default_rng(n)
    text = fixed_length_text(tok, n, rng)
    assert len(tok.encode(text, add_special_tokens=False)) == n
    assert text != fixed_length_text(tok, n, rng)  # drawn, not a fixed string


def test_param_counts_split_body_and_tied_head(tiny):
    model, tok = tiny
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied
    vd = model.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())  # parameters() yields a tied tensor once
    assert param_counts(model) == (total - vd, vd)


def test_train_flops_counts_body_on_tokens_and_head_on_its_positions():
    assert train_flops((10, 3), tokens=100, head_positions=40) == 6 * (10 * 100 + 3 * 40)
    assert train_flops((10, 3), 100, 40, passes=2) == 2 * (10 * 100 + 3 * 40)


def test_gemm_rate_is_a_positive_rate():
    torch.set_num_threads(1)
    rate = gemm_flops_per_s("cpu", "float32", n=128, reps=2)
    assert np.isfinite(rate) and rate > 1e6
