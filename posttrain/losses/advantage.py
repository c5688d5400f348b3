"""Step-level DAPO, Direct Advantage Policy Optimization (Liu et al., NeurIPS 2025; docs/methods.md "Direct
Advantage Policy Optimization"), as pure functions: the critic's soft-label BCE, the advantages of a state's
candidate steps, the spread filter and the actor's advantage-regression loss. (Not ByteDance's GRPO-style
"DAPO".)

    critic:  BCE(MC_N(s), V_phi(s)),  V = sigmoid(head), MC_N(s) = correct completions / N (soft labels)
    A(s, a_i) = V(s∘a_i) - mean_j V(s∘a_j)      over the state's deduplicated candidate steps
    actor:   1/2 (A(s, a)/beta - [logp_theta(a|s) - logp_ref(a|s)])^2,
             log-probs summed over the step's tokens
States whose advantage spread max - min is below a threshold (0.1) carry no signal and are dropped.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def mc_target(correct: Sequence[bool]) -> float:
    """MC_N(s): the fraction of the N completions from s that reach the correct answer."""
    if not correct:
        raise ValueError("a Monte-Carlo target needs at least one completion")
    return sum(bool(c) for c in correct) / len(correct)


def critic_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-state BCE of V = sigmoid(logits) against soft targets in [0, 1]:
    -[t log V + (1 - t) log(1 - V)], computed from the logits (finite at any logit)."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    if ((targets < 0) | (targets > 1)).any():
        raise ValueError("critic targets must lie in [0, 1]")
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")


def advantages(values: Sequence[float]) -> list[float]:
    """A(s, a_i) = V(s∘a_i) - mean_j V(s∘a_j) over one state's deduplicated candidates."""
    if not values:
        raise ValueError("a state needs at least one candidate step")
    mean = sum(values) / len(values)
    return [v - mean for v in values]


def keeps_state(adv: Sequence[float], min_spread: float = 0.1) -> bool:
    """Whether a state's advantages spread (max - min) by at least `min_spread` (to 1e-12, so that values
    0.5 and 0.6, whose float difference is 0.0999..., count as a spread of 0.1)."""
    return max(adv) - min(adv) >= min_spread - 1e-12


def dapo_step_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, adv: torch.Tensor,
                   beta: float = 0.01) -> torch.Tensor:
    """Per-action 1/2 (A/beta - (logp_theta - logp_ref))^2 on summed step log-probs [B]. No clipping and no
    separate KL term: beta ties the log-ratio to the advantage. Its minimiser over a state's actions, with
    the log-probs free, is logp_theta = logp_ref + A/beta, i.e. pi_ref(a|s) exp(A(s,a)/beta) up to the
    normaliser (the paper's Lemma 3.1)."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not (policy_logps.shape == ref_logps.shape == adv.shape):
        raise ValueError(f"shapes differ: policy {tuple(policy_logps.shape)}, ref {tuple(ref_logps.shape)}, "
                         f"advantages {tuple(adv.shape)}")
    return 0.5 * (adv / beta - (policy_logps - ref_logps)) ** 2
