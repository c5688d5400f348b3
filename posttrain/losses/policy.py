"""PPO building blocks as pure functions of per-token tensors: KL shaping, GAE, whitening, clipped losses.

Conventions (shared by every function here):
- Token tensors are [B, T]; `mask` is bool or 0/1 float [B, T], True on response (action) tokens.
  Rows are right-padded, so a row's response tokens are contiguous; functions that walk along a row
  (`shaped_rewards`, `gae`) check this and raise a ValueError otherwise.
- Positions outside the mask never influence a result (masked with `torch.where`, so even NaN or inf
  there does not leak) and are zero in every [B, T] output.
- Losses return `(loss_sum, n_tokens, metrics)` like `sft_loss`: the engine divides the sum by the
  token count of the whole optimisation step, which keeps gradient accumulation exact. Metrics are
  sums over response tokens too (the engine reports them as means over the same units).

The algorithm is PPO (Schulman et al. 2017) for language models as in Ziegler et al. 2019 / Stiennon
et al. 2020 and TRL's former PPOTrainer, which RL4GLUE (docs/methods.md "PPO") follows:

    r_t   = -beta * KL_t  (+ score on the last response token)            # KL-shaped reward
    A_t   = GAE(gamma, lambda) of r and V;  R_t = A_t + V_t                # Schulman et al. 2016, eq. 16
    L_pi  = -min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t),  rho_t = pi / pi_old   # PPO eq. 7
    L_V   = 0.5 * max((V - R)^2, (clip(V, V_old - eps_v, V_old + eps_v) - R)^2)
    beta  <- beta * (1 + clip(KL / KL_target - 1, -0.2, 0.2) * n / horizon)          # Ziegler eq. 2
"""
from __future__ import annotations

from typing import Literal

import torch

Metrics = dict[str, torch.Tensor]
KLKind = Literal["k1", "abs", "mse", "k3"]
KL_KINDS: tuple[str, ...] = ("k1", "abs", "mse", "k3")


# ---- helpers --------------------------------------------------------------------------------------
def _bool_mask(mask: torch.Tensor, like: torch.Tensor, name: str = "x") -> torch.Tensor:
    if mask.shape != like.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and {name} {tuple(like.shape)} differ")
    return mask if mask.dtype == torch.bool else mask != 0


def _same_shape(**tensors: torch.Tensor) -> None:
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.shape != first.shape:
            raise ValueError(f"{name} {tuple(t.shape)} and {first_name} {tuple(first.shape)} differ")


def _masked(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """x where m, else 0 (NaN-safe, unlike x * m)."""
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))


def _check_contiguous(m: torch.Tensor) -> None:
    """Each row's True entries must form one run (right-padded responses)."""
    if m.dim() != 2:
        raise ValueError(f"mask must be [B, T], got shape {tuple(m.shape)}")
    starts = m[:, 1:] & ~m[:, :-1]
    runs = starts.sum(-1) + m[:, 0].long()
    bad = (runs > 1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"response mask rows {bad} are not contiguous; this needs one run of response "
                         "tokens per row (right padding)")


def _last_index(m: torch.Tensor) -> torch.Tensor:
    """Index of the last True in each row of a [B, T] bool mask; ValueError naming rows without any."""
    empty = (~m.any(-1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty} have no response tokens, so there is no token to carry their score; "
                         "drop those samples (or give them at least one response token, e.g. EOS)")
    T = m.shape[-1]
    return T - 1 - m.flip(-1).long().argmax(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over all masked elements (a scalar)."""
    m = _bool_mask(mask, x)
    return _masked(x, m).sum() / m.sum().to(x.dtype)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over all masked elements; `unbiased` applies Bessel's n / (n - 1) as TRL's masked_var."""
    m = _bool_mask(mask, x)
    n = int(m.sum())
    if n < (2 if unbiased else 1):
        raise ValueError(f"masked variance needs at least {2 if unbiased else 1} masked element(s), got {n}")
    mean = _masked(x, m).sum() / n
    var = _masked((x - mean) ** 2, m).sum() / n
    return var * (n / (n - 1)) if unbiased else var


# ---- whitening ------------------------------------------------------------------------------------
def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
           unbiased: bool = True) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over all masked elements of the batch; zeros outside the mask.

    shift_mean=False adds the mean back (the whitened values keep the original mean), which is how
    TRL whitened rewards. The variance is the UNBIASED (Bessel-corrected) one by default, as TRL's
    `masked_var(unbiased=True)` used in `masked_whiten`, so the result matches TRL's to rounding and has
    unbiased variance 1 (biased variance (n-1)/n); pass unbiased=False for biased variance 1. Needs at
    least 2 masked elements (1 with unbiased=False), else ValueError.
    """
    m = _bool_mask(mask, x)
    mean = masked_mean(x, m)
    var = masked_var(x, m, unbiased=unbiased)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return _masked(out, m)


# ---- KL and reward shaping ------------------------------------------------------------------------
def kl_penalty(logp: torch.Tensor, logp_ref: torch.Tensor, kind: KLKind = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled token's log-probs (Schulman, "Approximating
    KL divergence", 2020). With d = logp - logp_ref:

    - "k1":  d                                 (unbiased, can be negative; TRL's "kl", RL4GLUE's choice)
    - "abs": |d|
    - "mse": 0.5 * d^2                          (k2)
    - "k3":  (exp(-d) - 1) + d                  (unbiased, always >= 0; verl's "low_var_kl" without clamp)
    """
    _same_shape(logp=logp, logp_ref=logp_ref)
    d = logp - logp_ref
    if kind == "k1":
        return d
    if kind == "abs":
        return d.abs()
    if kind == "mse":
        return 0.5 * d.square()
    if kind == "k3":
        return torch.expm1(-d) + d
    raise ValueError(f"kind must be one of {KL_KINDS}, got {kind!r}")


def shaped_rewards(score: torch.Tensor, logp_old: torch.Tensor, logp_ref: torch.Tensor, mask: torch.Tensor,
                   beta: float, kind: KLKind = "k1") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards r_t = -beta * KL_t on every response token, plus score[b] on the LAST response
    token of row b only (Ziegler et al. 2019 eq. 2; docs/methods.md "PPO"). Returns (rewards, kl), both
    [B, T], detached, zero outside the mask. A row with no response token has nowhere to put its score:
    ValueError naming the rows.
    """
    m = _bool_mask(mask, logp_old, "logp_old")
    _check_contiguous(m)
    if score.shape != (m.shape[0],):
        raise ValueError(f"score must be [B] = [{m.shape[0]}], got shape {tuple(score.shape)}")
    last = _last_index(m)
    with torch.no_grad():
        kl = _masked(kl_penalty(logp_old.detach(), logp_ref.detach(), kind), m)
        rewards = -beta * kl
        rows = torch.arange(m.shape[0], device=m.device)
        rewards[rows, last] += score.detach().to(rewards.dtype)
    return rewards, kl


# ---- advantages -----------------------------------------------------------------------------------
def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16), backwards over each row's
    response tokens:

        delta_t = r_t + gamma * V_{t+1} - V_t     (V after the last response token = 0: the episode ends)
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t

    Returns (advantages, returns) [B, T], detached, zero outside the mask; rewards and values outside
    the mask are ignored.
    """
    _same_shape(rewards=rewards, values=values)
    m = _bool_mask(mask, rewards, "rewards")
    _check_contiguous(m)
    with torch.no_grad():
        r, v = _masked(rewards.detach(), m), _masked(values.detach(), m)
        adv = torch.zeros_like(r)
        next_v = torch.zeros_like(r[:, 0])
        running = torch.zeros_like(r[:, 0])
        for t in range(r.shape[1] - 1, -1, -1):
            mt = m[:, t]
            delta = r[:, t] + gamma * next_v - v[:, t]
            # outside the mask (padding after the response) everything resets to 0, so the last response
            # token bootstraps from V = 0 and nothing flows backwards from padding
            running = torch.where(mt, delta + gamma * lam * running, torch.zeros_like(running))
            next_v = v[:, t]
            adv[:, t] = running
        returns = _masked(adv + v, m)
    return adv, returns


# ---- losses ---------------------------------------------------------------------------------------
def ppo_policy_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), per token, returned as
    (loss_sum, n_tokens, metrics):

        rho_t = exp(logp_t - logp_old_t)
        l_t   = max(-A_t * rho_t, -A_t * clip(rho_t, 1 - clip, 1 + clip))  = -min(rho A, clip(rho) A)

    loss_sum sums l_t over masked tokens; n_tokens counts them. Metrics (sums over masked tokens, as TRL):
    "policy/clipfrac" = (clipped term > unclipped term), i.e. the tokens whose gradient is zeroed;
    "policy/approx_kl" = 0.5 * (logp - logp_old)^2; "policy/ratio" = rho. At rho exactly 1 +/- clip the
    two terms tie, the token counts as unclipped and keeps its gradient.
    """
    _same_shape(logp=logp, logp_old=logp_old, advantages=advantages)
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    m = _bool_mask(mask, logp, "logp")
    diff = _masked(logp - logp_old.detach(), m)
    adv = _masked(advantages.detach(), m)
    ratio = torch.exp(diff)
    pg_losses = -adv * ratio
    pg_losses2 = -adv * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    per_token = torch.maximum(pg_losses, pg_losses2)
    loss_sum = _masked(per_token, m).sum()
    n_tokens = m.sum().to(logp.dtype)
    with torch.no_grad():
        metrics = {"policy/clipfrac": _masked((pg_losses2 > pg_losses).to(logp.dtype), m).sum(),
                   "policy/approx_kl": _masked(0.5 * diff.square(), m).sum(),
                   "policy/ratio": _masked(ratio, m).sum()}
    return loss_sum, n_tokens, metrics


def ppo_value_loss(values: torch.Tensor, values_old: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
    """Clipped value loss (as in PPO's baselines / TRL), per token, returned as (loss_sum, n_tokens, metrics):

        V_clip = clip(V, V_old - clip, V_old + clip)
        l_t    = 0.5 * max((V - R)^2, (V_clip - R)^2)

    Metrics (sums over masked tokens): "value/clipfrac" = ((V_clip - R)^2 > (V - R)^2), the tokens whose
    gradient is zeroed; "value/error" = (V - R)^2.
    """
    _same_shape(values=values, values_old=values_old, returns=returns)
    if not clip > 0:
        raise ValueError(f"clip must be > 0, got {clip}")
    m = _bool_mask(mask, values, "values")
    v = _masked(values, m)
    v_old = _masked(values_old.detach(), m)
    ret = _masked(returns.detach(), m)
    v_clipped = torch.clamp(v, v_old - clip, v_old + clip)
    vf1 = (v - ret).square()
    vf2 = (v_clipped - ret).square()
    loss_sum = _masked(0.5 * torch.maximum(vf1, vf2), m).sum()
    n_tokens = m.sum().to(values.dtype)
    with torch.no_grad():
        metrics = {"value/clipfrac": _masked((vf2 > vf1).to(values.dtype), m).sum(),
                   "value/error": _masked(vf1, m).sum()}
    return loss_sum, n_tokens, metrics


# ---- diagnostics ----------------------------------------------------------------------------------
def entropy_from_logits(logits: torch.Tensor, chunk_size: int = 128) -> torch.Tensor:
    """Entropy (nats) of softmax(logits) along the last axis: logsumexp(z) - sum softmax(z) * z.

    Rows are processed `chunk_size` at a time so only one chunk's softmax is materialised; half
    precision is computed in float32 (and returned in float32). Differentiable. Shape logits.shape[:-1].
    """
    lead, vocab = logits.shape[:-1], logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    out_dtype = torch.float32 if flat.dtype in (torch.float16, torch.bfloat16) else flat.dtype
    parts = []
    for chunk in flat.split(max(1, chunk_size), dim=0):
        z = chunk.to(out_dtype)
        parts.append(torch.logsumexp(z, -1) - (torch.softmax(z, -1) * z).sum(-1))
    if not parts:
        return flat.new_zeros(lead, dtype=out_dtype)
    return torch.cat(parts).reshape(lead)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(R - V) / Var(R) over masked elements (biased variances; the correction cancels).
    1 for perfect values, 0 for the constant mean, negative for worse; NaN when Var(R) = 0."""
    _same_shape(values=values, returns=returns)
    m = _bool_mask(mask, values, "values")
    with torch.no_grad():
        var_r = masked_var(returns.detach(), m, unbiased=False)
        var_err = masked_var((returns - values).detach(), m, unbiased=False)
        if var_r == 0:
            return torch.full((), float("nan"), dtype=values.dtype, device=values.device)
        return 1.0 - var_err / var_r


# ---- KL coefficient controllers -------------------------------------------------------------------
class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, eq. 2; TRL's AdaptiveKLController):

        e    = clip(KL_current / KL_target - 1, -0.2, 0.2)
        beta <- beta * (1 + e * n_steps / horizon)

    KL above target raises beta, below lowers it. `state_dict` / `load_state_dict` carry beta across a
    resume, so a resumed run continues with the same coefficient.
    """

    def __init__(self, init_kl_coef: float = 0.2, target: float = 6.0, horizon: int = 10000):
        if not init_kl_coef >= 0:
            raise ValueError(f"init_kl_coef must be >= 0, got {init_kl_coef}")
        if not target > 0:
            raise ValueError(f"target must be > 0, got {target}")
        if not horizon > 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        """Update beta from the observed KL over `n_steps` samples; returns the new value."""
        err = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + err * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"kind": "adaptive", "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "adaptive":
            raise ValueError(f"not an adaptive KL controller state: kind={state.get('kind')!r}")
        self.value, self.target, self.horizon = (float(state["value"]), float(state["target"]),
                                                 state["horizon"])


class FixedKLController:
    """Constant KL coefficient; `update` does nothing."""

    def __init__(self, kl_coef: float):
        if not kl_coef >= 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"kind": "fixed", "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "fixed":
            raise ValueError(f"not a fixed KL controller state: kind={state.get('kind')!r}")
        self.value = float(state["value"])
