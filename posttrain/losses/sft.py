"""Supervised fine-tuning: negative log-likelihood of the supervised (assistant) tokens."""
from __future__ import annotations

from typing import Literal

import torch

Normalization = Literal["token", "sequence"]


def sft_loss(token_logps: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None,
             normalization: Normalization = "token") -> tuple[torch.Tensor, torch.Tensor, dict]:
    """NLL of supervised tokens, returned as (loss_sum, units, metrics); the mean loss is loss_sum / units.

    token_logps, mask, weights: [batch, length]. The loss is split into a sum and its normaliser so
    the engine can divide by the normaliser of the WHOLE optimisation step (all micro-batches, all
    processes): that makes gradient accumulation exact, which a per-micro-batch mean is not.

    - "token": sum_i sum_t w_it m_it (-logp_it) / sum_i sum_t m_it   (every token counts the same)
    - "sequence": mean_i [ sum_t w_it m_it (-logp_it) / sum_t m_it ]  (every sequence counts the same)

    Weights scale each token's NLL but not the normaliser, so weights of 1 give the plain loss and a
    method that down-weights tokens (key-token weighting, IFT) lowers the loss rather than re-normalising it.
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
    elif normalization == "sequence":
        # a sequence with no supervised token contributes nothing and is not counted
        has = seq_tokens > 0
        loss_sum = (nll.sum(-1)[has] / seq_tokens[has]).sum()
        units = has.sum().to(token_logps.dtype)
    else:
        raise ValueError(f"normalization must be 'token' or 'sequence', got {normalization!r}")
    metrics = {"supervised_tokens_count": tokens.detach()}
    return loss_sum, units, metrics
