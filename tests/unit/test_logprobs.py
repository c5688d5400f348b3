"""gather_logprobs against log_softmax: values chunk by chunk, its hand-written gradient, gradcheck."""
import pytest
import torch

from posttrain.logprobs import gather_logprobs


def test_gather_logprobs_matches_log_softmax_chunked():
    torch.manual_seed(0)
    logits = torch.randn(7, 13, 50) * 5
    targets = torch.randint(0, 50, (7, 13))
    ref = torch.log_softmax(logits.double(), -1).gather(-1, targets[..., None]).squeeze(-1)
    for chunk in (1, 5, 1024):
        assert torch.allclose(gather_logprobs(logits, targets, chunk=chunk).double(), ref, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gather_logprobs_gradient_is_autograds_of_log_softmax(dtype):
    # the hand-written backward (g * (onehot - softmax), chunk by chunk) against autograd through log_softmax
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 37, generator=g).to(dtype).requires_grad_()
    targets = torch.randint(0, 37, (3, 5), generator=g)
    weights = torch.randn(3, 5, generator=g)
    (gather_logprobs(logits, targets, chunk=4) * weights).sum().backward()
    ours, logits.grad = logits.grad.clone(), None
    ref = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)
    (ref * weights).sum().backward()
    tol = 1e-6 if dtype == torch.float32 else 2e-2  # bf16: one rounding of the gradient
    assert ours.dtype == dtype and torch.allclose(ours.float(), logits.grad.float(), atol=tol, rtol=tol)


def test_gather_logprobs_passes_gradcheck_in_float64():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 11, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 11, (7,), generator=g)
    assert torch.autograd.gradcheck(lambda x: gather_logprobs(x, targets, chunk=3), (logits,))
