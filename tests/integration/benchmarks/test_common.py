"""The throughput benchmarks' shared measures on the tiny model (benchmarks/common.py): fixed-length
text, parameter counts."""
import numpy as np
import pytest

from benchmarks.common import fixed_length_text, param_counts


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
