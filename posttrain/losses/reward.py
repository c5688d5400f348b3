"""Bradley-Terry reward-model loss: -log sigma(r(x, y_w) - r(x, y_l) - margin).

`center_coef` adds coef * (r_w + r_l)^2, which pins the rewards' mean near zero (the BT likelihood is
invariant to a shared offset, so without it the offset drifts freely; TRL's `center_rewards_coefficient`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry(r_chosen: torch.Tensor, r_rejected: torch.Tensor, *, margin: torch.Tensor | float = 0.0,
                  center_coef: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair losses and metrics (reward/chosen, reward/rejected, reward/margin, reward/accuracy)."""
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"r_chosen {tuple(r_chosen.shape)} and r_rejected {tuple(r_rejected.shape)} differ")
    diff = r_chosen - r_rejected
    losses = -F.logsigmoid(diff - margin)
    if center_coef:
        losses = losses + center_coef * (r_chosen + r_rejected) ** 2
    metrics = {"reward/chosen": r_chosen.detach(), "reward/rejected": r_rejected.detach(),
               "reward/margin": diff.detach(), "reward/accuracy": (diff > 0).float().detach()}
    return losses, metrics
