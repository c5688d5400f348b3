"""The sampler's parts without a model: the top-p filter, parameter checks, and the counter-based draw."""
from __future__ import annotations

import pytest
import torch

from posttrain.errors import RecipeError
from posttrain.generation.sampler import SamplingParams, _filter_logits, draw, uniform


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(_filter_logits(logits, SamplingParams(top_p=0.75)))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(_filter_logits(logits, SamplingParams(top_p=0.8)))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 + 0.3 reaches 0.8
    kept = torch.isfinite(_filter_logits(logits, SamplingParams(top_p=0.81)))
    assert kept.tolist() == [[True, True, True, False]]
    kept = torch.isfinite(_filter_logits(logits, SamplingParams(top_k=3)))
    assert kept.tolist() == [[True, True, True, False]]


def test_bad_sampling_params():
    for kw in ({"n": 0}, {"temperature": -1}, {"top_p": 0}, {"top_k": -2}, {"stop": ("",)}):
        with pytest.raises(RecipeError):
            SamplingParams(**kw)


# ---------------------------------------------------------------- the HF backend


def test_draw_is_the_inverse_cdf_of_a_counter_based_uniform():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]] * 3))
    p = SamplingParams(temperature=1.0)
    streams, steps = [5, 5, 9], [0, 1, 0]
    tok, logp = draw(logits, p, streams, steps)
    cdf = [0.1, 0.3, 0.6, 1.0]
    expect = [next(i for i, c in enumerate(cdf) if uniform(s, t) <= c + 1e-7) for s, t in zip(streams, steps)]
    assert tok.tolist() == expect
    assert torch.allclose(logp, torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4]))[tok])
    # the same stream and step give the same draw in any row and any batch
    assert draw(logits[:1], p, [9], [0])[0].item() == tok[2].item()
    # frequencies follow the distribution (6000 draws of one stream)
    many = draw(logits[:1].expand(6000, 4), p, [3] * 6000, list(range(6000)))[0]
    freq = torch.bincount(many, minlength=4).double() / 6000
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.double), atol=0.025)
    assert all(0 < uniform(s, t) <= 1 for s in range(50) for t in range(50))
