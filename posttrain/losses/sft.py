"""Supervised fine-tuning: negative log-likelihood of the supervised (assistant) tokens."""
from __future__ import annotations

from typing import Literal

import torch

Normalization = Literal["token", "sequence", "weights"]


def sft_loss(token_logps: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None,
             normalization: Normalization = "token") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """NLL of supervised tokens, returned as (loss_sum, units, metrics); the mean loss is loss_sum / units.

    token_logps, mask, weights: [batch, length]. The loss is split into a sum and its normaliser so
    the engine can divide by the normaliser of the WHOLE optimisation step (all micro-batches, all
    processes): that makes gradient accumulation exact, which a per-micro-batch mean is not.

    - "token": sum_i sum_t w_it m_it (-logp_it) / sum_i sum_t m_it   (every token counts the same)
    - "sequence": mean_i [ sum_t w_it m_it (-logp_it) / sum_t m_it ]  (every sequence counts the same)
    - "weights": sum_i sum_t w_it m_it (-logp_it) / sum_i sum_t w_it m_it  (a weighted mean over tokens:
      TL-Training's key-token loss; weights of 1 give "token")

    Under "token" and "sequence" the weights scale each token's NLL but not the normaliser, so weights of 1
    give the plain loss and a method that down-weights tokens (IFT) lowers the loss rather than
    re-normalising it; "weights" re-normalises by them.
    """
    if token_logps.shape != mask.shape:
        raise ValueError(f"token_logps {tuple(token_logps.shape)} and mask {tuple(mask.shape)} differ")
    m = mask.to(token_logps.dtype)
    nll = -token_logps * m
    if weights is not None:
        nll = nll * weights.to(token_logps.dtype)
    tokens = m.sum()
    seq_tokens = m.sum(-1)
    if normalization == "token":
        loss_sum, units = nll.sum(), tokens
    elif normalization == "weights":
        if weights is None:
            raise ValueError("normalization 'weights' needs weights")
        loss_sum, units = nll.sum(), (weights.to(token_logps.dtype) * m).sum()
    elif normalization == "sequence":
        # a sequence with no supervised token contributes nothing and is not counted
        has = seq_tokens > 0
        loss_sum = (nll.sum(-1)[has] / seq_tokens[has]).sum()
        units = has.sum().to(token_logps.dtype)
    else:
        raise ValueError(f"normalization must be 'token', 'sequence' or 'weights', got {normalization!r}")
    metrics = {"supervised_tokens_count": tokens.detach()}
    return loss_sum, units, metrics


def discounted_suffix_sum(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """S[..., t] = sum_{j >= t} gamma^(j - t) x[..., j], differentiable in x.

    As one matmul with the [T, T] upper-triangular matrix of gamma powers: exact at any length (the
    gamma^-t rescaling trick overflows float32 past ~1,700 positions at gamma 0.95) and one kernel
    instead of a T-step Python scan in the autograd graph."""
    length = x.shape[-1]
    pos = torch.arange(length, device=x.device)
    gap = (pos[None, :] - pos[:, None]).to(x.dtype)  # gap[t, j] = j - t
    powers = torch.where(gap >= 0, torch.as_tensor(gamma, dtype=x.dtype, device=x.device) ** gap.clamp(min=0),
                         torch.zeros((), dtype=x.dtype, device=x.device))
    return x @ powers.T


def ift_token_weights(token_nll: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """IFT's discounted-suffix token weights [B, T] (Hua et al., "Intuitive Fine-Tuning", ACL 2025),
    as the official code computes them (TsinghuaC3I/Intuitive-Fine-Tuning, src/trainers.py,
    `get_cumsum_weight` with propagation_type "loss", side "left", norm "L1"), not eq. 21 of the paper:

        c_t = m_t l_t / N,   S_t = sum_{j >= t} gamma^(j - t) c_j,   w_t = m_t S_t N / sum_k m_k S_k

    with l_t the token NLL, m the response mask and N = sum_t m_t per sequence, so the weights of a
    sequence sum to N. The gradient flows through the weights (the official code does not detach them).
    gamma = 0 gives weights of 1, as in the official code (the formula would give N l_t / sum l), so
    lambda = 0, gamma = 0 is per-sequence-mean SFT exactly. A sequence without response tokens, or
    whose suffix sums are all 0, gets weights of 0."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    m = mask.to(token_nll.dtype)
    if gamma == 0:
        return m
    n = m.sum(-1, keepdim=True)
    c = token_nll * m / n.clamp(min=1)
    s = discounted_suffix_sum(c, gamma) * m
    total = s.sum(-1, keepdim=True)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, s * n / safe, torch.zeros_like(s))
