"""Preference losses (DPO family, IPO, SLiC/RSO hinge, RPO, INPO) as pure functions of per-sequence log-probs.

Every loss takes a `PairLogps` (tensors [B]: summed completion log-probs under the policy and the
reference, and the completion lengths) and returns `(losses [B], metrics)`; metrics are per-pair
tensors [B] that the caller sums (the engine reports their means):

    rewards/chosen   = scale * (logp_policy(y_w) - logp_ref(y_w))
    rewards/rejected = scale * (logp_policy(y_l) - logp_ref(y_l))
    rewards/margins  = rewards/chosen - rewards/rejected
    rewards/accuracy = (margin > 0) as float
    logps/chosen, logps/rejected = the policy's summed log-probs

`scale` is the loss's own temperature (beta for the DPO family and RPO, tau for IPO, gamma for the
hinges), so the margin reported is the one the loss acts on. With `h` the DPO margin

    h = [logp_policy(y_w) - logp_ref(y_w)] - [logp_policy(y_l) - logp_ref(y_l)]

the losses are written with logsigmoid / relu, which stay finite at |beta*h| = 50 and beyond (a plain
log(sigmoid(x)) underflows to log(0) near x = -100 in float32).

Naming traps in other libraries, which this module does not repeat:
- TRL's `sigmoid_norm` divides log-probs by length; RSO's "sigmoid-norm" is plain DPO (`dpo` here).
- TRL's `rpo_alpha` (now `loss_type=["sigmoid", "sft"]`) is Pang et al.'s token-mean NLL
  (`rpo_token_mean` here), not Liu et al.'s RPO with a summed NLL (`rpo` here).
- TRL's `ipo` divides log-probs by length (`ipo_length_norm` here); the IPO formula on summed
  log-probs is `ipo`.
- TRL 1.16's `sigmoid` ignores `label_smoothing`, so it has no cDPO; `cdpo` here is the
  label-smoothed loss of Mitchell (2023).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

Metrics = dict[str, torch.Tensor]


@dataclass(frozen=True)
class PairLogps:
    """Per-pair summed log-probs [B]; the reference pair may be absent (reference-free losses)."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None
    chosen_tokens: torch.Tensor | None = None
    rejected_tokens: torch.Tensor | None = None
    # the previous iterate pi_t (INPO), carried next to the reference's
    prev_chosen: torch.Tensor | None = None
    prev_rejected: torch.Tensor | None = None

    def __post_init__(self):
        shape = self.policy_chosen.shape
        if len(shape) != 1:
            raise ValueError(f"per-sequence log-probs must be 1-D [B], got shape {tuple(shape)}")
        for name in ("policy_rejected", "ref_chosen", "ref_rejected", "chosen_tokens", "rejected_tokens",
                     "prev_chosen", "prev_rejected"):
            t = getattr(self, name)
            if t is not None and t.shape != shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, policy_chosen has {tuple(shape)}")
        if (self.ref_chosen is None) != (self.ref_rejected is None):
            raise ValueError("give both ref_chosen and ref_rejected, or neither")
        if (self.chosen_tokens is None) != (self.rejected_tokens is None):
            raise ValueError("give both chosen_tokens and rejected_tokens, or neither")
        if (self.prev_chosen is None) != (self.prev_rejected is None):
            raise ValueError("give both prev_chosen and prev_rejected, or neither")

    def _ref(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.ref_chosen is None:
            raise ValueError("this loss needs reference log-probs (ref_chosen, ref_rejected)")
        return self.ref_chosen, self.ref_rejected

    def _lengths(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.chosen_tokens is None:
            raise ValueError("this loss needs completion lengths (chosen_tokens, rejected_tokens)")
        return self.chosen_tokens, self.rejected_tokens

    def logratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(logp_policy - logp_ref) for the chosen and the rejected completion."""
        rc, rr = self._ref()
        return self.policy_chosen - rc, self.policy_rejected - rr

    def margin(self) -> torch.Tensor:
        """The DPO margin h on summed log-probs."""
        c, r = self.logratios()
        return c - r


def _metrics(lp: PairLogps, chosen: torch.Tensor, rejected: torch.Tensor, scale: float) -> Metrics:
    rc, rr = (scale * chosen).detach(), (scale * rejected).detach()
    margins = rc - rr
    return {"rewards/chosen": rc, "rewards/rejected": rr, "rewards/margins": margins,
            "rewards/accuracy": (margins > 0).to(rc.dtype),
            "logps/chosen": lp.policy_chosen.detach(), "logps/rejected": lp.policy_rejected.detach()}


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _check_eps(eps: float, loss: str) -> None:
    if not 0.0 <= eps < 0.5:
        raise ValueError(
            f"{loss}: eps (the assumed label-flip rate) must be in [0, 0.5), got {eps}. At eps = 0.5 a label "
            "carries no information (a pure coin flip), past it the labels are more often wrong than right, "
            "and rdpo divides by 1 - 2*eps.")


# ---- DPO family ----------------------------------------------------------------------------------
def dpo(lp: PairLogps, *, beta: float = 0.1) -> tuple[torch.Tensor, Metrics]:
    """DPO: -log sigma(beta*h)  (Rafailov et al. 2023, eq. 7; = RSO's "sigmoid-norm", Liu et al. 2024
    eq. 8)."""
    _positive("beta", beta)
    c, r = lp.logratios()
    return -F.logsigmoid(beta * (c - r)), _metrics(lp, c, r, beta)


def cdpo(lp: PairLogps, *, beta: float = 0.1, eps: float) -> tuple[torch.Tensor, Metrics]:
    """Conservative DPO (label smoothing, Mitchell 2023): -(1-eps) log sigma(beta*h) - eps log sigma(-beta*h).

    The gradient weight sigma(-beta*h) - eps turns negative past beta*h* = log((1-eps)/eps): the loss caps
    the margin there rather than de-biasing the noisy labels (compare `rdpo`).
    """
    _positive("beta", beta)
    _check_eps(eps, "cdpo")
    c, r = lp.logratios()
    z = beta * (c - r)
    return -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z), _metrics(lp, c, r, beta)


def rdpo(lp: PairLogps, *, beta: float = 0.1, eps: float) -> tuple[torch.Tensor, Metrics]:
    """Robust DPO (Chowdhury, Kini, Natarajan, "Provably robust DPO", ICML 2024; the rDPO loss):

        [-(1-eps) log sigma(beta*h) + eps log sigma(-beta*h)] / (1 - 2*eps)

    eps is the assumed label-flip rate, in [0, 0.5). Unbiased: the expectation over flips of the loss on
    the observed pair equals the clean DPO loss for every theta. Its gradient is -beta*zeta*grad(h) with
    zeta = `rdpo_zeta` > 0 (reported as metric `zeta`). The per-pair loss has no lower bound (it
    decreases linearly in h with slope -beta*eps/(1-2eps)), so negative batch losses are expected.
    """
    _positive("beta", beta)
    _check_eps(eps, "rdpo")
    c, r = lp.logratios()
    h = c - r
    z = beta * h
    losses = (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
    metrics = _metrics(lp, c, r, beta)
    metrics["zeta"] = rdpo_zeta(h.detach(), beta, eps)
    return losses, metrics


def rdpo_zeta(h: torch.Tensor, beta: float, eps: float) -> torch.Tensor:
    """rDPO's gradient weight (Chowdhury et al. 2024, the rDPO gradient):

        zeta = [(1-eps) sigma(-beta*h) + eps sigma(beta*h)] / (1 - 2*eps),   d loss_rdpo / dh = -beta*zeta

    Always > 0: every pair pushes its observed winner up, harder where the model disagrees with the label.
    """
    _check_eps(eps, "rdpo")
    z = beta * h
    return ((1 - eps) * torch.sigmoid(-z) + eps * torch.sigmoid(z)) / (1 - 2 * eps)


# ---- IPO -----------------------------------------------------------------------------------------
def ipo(lp: PairLogps, *, tau: float = 0.1) -> tuple[torch.Tensor, Metrics]:
    """IPO (Azar et al. 2024, eq. 17): (h - 1/(2*tau))^2 with h on SUMMED log-probs, as the paper writes it.

    TRL's loss_type="ipo" divides each log-ratio by its completion length first; that is
    `ipo_length_norm`, not this.
    """
    _positive("tau", tau)
    c, r = lp.logratios()
    return (c - r - 1 / (2 * tau)) ** 2, _metrics(lp, c, r, tau)


def ipo_length_norm(lp: PairLogps, *, tau: float = 0.1) -> tuple[torch.Tensor, Metrics]:
    """IPO on length-normalised log-ratios: (h_n - 1/(2*tau))^2,
    h_n = (logratio_w / |y_w|) - (logratio_l / |y_l|).

    What TRL's loss_type="ipo" computes (its beta is tau). Unlike `ipo` the target margin does not grow
    with completion length. The reported rewards use the normalised log-ratios, the margin this loss acts on.
    """
    _positive("tau", tau)
    c, r = lp.logratios()
    nc, nr = lp._lengths()
    # an empty completion would divide by zero; count it as one token, as TRL does
    c, r = c / nc.clamp(min=1), r / nr.clamp(min=1)
    return (c - r - 1 / (2 * tau)) ** 2, _metrics(lp, c, r, tau)


# ---- hinge (SLiC / RSO) --------------------------------------------------------------------------
def hinge(lp: PairLogps, *, gamma: float = 0.05) -> tuple[torch.Tensor, Metrics]:
    """SLiC hinge (Zhao et al. 2023; RSO, Liu et al. 2024 eq. 9): max(0, 1 - gamma*[logp(y_w) - logp(y_l)]).

    No reference model: rewards are gamma * policy log-probs. TRL's loss_type="hinge" is `hinge_norm`.
    """
    _positive("gamma", gamma)
    c, r = lp.policy_chosen, lp.policy_rejected
    return torch.relu(1 - gamma * (c - r)), _metrics(lp, c, r, gamma)


def hinge_norm(lp: PairLogps, *, gamma: float = 0.05) -> tuple[torch.Tensor, Metrics]:
    """RSO's normalised hinge (Liu et al. 2024, eq. 10): max(0, 1 - gamma*h); = TRL's "hinge" with
    beta = gamma."""
    _positive("gamma", gamma)
    c, r = lp.logratios()
    return torch.relu(1 - gamma * (c - r)), _metrics(lp, c, r, gamma)


# ---- RPO -----------------------------------------------------------------------------------------
def rpo(lp: PairLogps, *, beta: float = 0.1, eta: float = 0.005) -> tuple[torch.Tensor, Metrics]:
    """RPO (Liu et al. 2024, "Provably mitigating overoptimization in RLHF: your SFT loss is implicitly an
    adversarial regularizer", NeurIPS 2024; the RPO objective of paper and official code):

        dpo + eta*beta*(-logp_policy(y_w))

    The NLL is SUMMED over the chosen completion and its coefficient is eta*beta (eta 0.005 in the paper).
    Not TRL's `rpo_alpha` / "sft" loss, which is Pang et al.'s token-mean NLL: see `rpo_token_mean`.
    """
    _non_negative("eta", eta)
    losses, metrics = dpo(lp, beta=beta)
    nll = -lp.policy_chosen
    metrics["nll"] = nll.detach()
    return losses + eta * beta * nll, metrics


def rpo_token_mean(lp: PairLogps, *, beta: float = 0.1, alpha: float = 0.2) -> tuple[torch.Tensor, Metrics]:
    """DPO + alpha * token-mean NLL of the chosen completion: dpo + alpha*(-logp_policy(y_w) / |y_w|).

    The variant of OpenRLHF (coefficient 0.2) and of TRL's `rpo_alpha` (Pang et al. 2024, iterative RPO).
    Unlike `rpo`, the NLL term does not grow with completion length and its weight does not scale with beta.
    Per pair, so a batch mean weights every pair equally (TRL's "sft" term averages over all tokens of the
    batch). """
    _non_negative("alpha", alpha)
    losses, metrics = dpo(lp, beta=beta)
    nc, _ = lp._lengths()
    nll = -lp.policy_chosen / nc.clamp(min=1)
    metrics["nll"] = nll.detach()
    return losses + alpha * nll, metrics


# ---- INPO ----------------------------------------------------------------------------------------
def inpo(lp: PairLogps, *, eta: float = 0.005, tau: float = 0.005 / 3) -> tuple[torch.Tensor, Metrics]:
    """INPO (Zhang et al., "Iterative Nash Policy Optimization", ICLR 2025; docs/methods.md
    "INPO and iterative DPO"):

        h_t = D_theta - (tau/eta) D_ref - (1 - tau/eta) D_t,   loss = (h_t - 1/(2 eta))^2

    with D = logp(y_w) - logp(y_l) SUMMED over each completion, under the policy, the reference pi_ref and
    the previous iterate pi_t (`prev_chosen`, `prev_rejected`). Its minimiser over on-policy pairs is the
    mirror-descent step pi_{t+1} ∝ pi_ref^(tau/eta) pi_t^(1 - tau/eta) exp(P(y > pi_t) / eta); at t = 1
    (pi_t = pi_ref) it is IPO with tau_IPO = eta. tau in [0, eta]: tau = 0 drops the KL to pi_ref.
    The rewards reported are eta * (logp_policy - the mixed anchor), the log-ratios the loss acts on.
    """
    _positive("eta", eta)
    if not 0.0 <= tau <= eta:
        raise ValueError(f"inpo: tau must be in [0, eta] = [0, {eta}] (the anchor mixes pi_ref^(tau/eta) and "
                         f"pi_t^(1 - tau/eta)), got {tau}")
    if lp.prev_chosen is None:
        raise ValueError("inpo needs the previous iterate's log-probs (prev_chosen, prev_rejected)")
    rc, rr = lp._ref()
    a = tau / eta
    c = lp.policy_chosen - a * rc - (1 - a) * lp.prev_chosen
    r = lp.policy_rejected - a * rr - (1 - a) * lp.prev_rejected
    return (c - r - 1 / (2 * eta)) ** 2, _metrics(lp, c, r, eta)


# ---- registry ------------------------------------------------------------------------------------
class LossSpec(NamedTuple):
    """A loss picked by name: the function, whether it reads reference log-probs, its parameter names."""

    fn: Callable[..., tuple[torch.Tensor, Metrics]]
    needs_reference: bool
    params: tuple[str, ...]


PREFERENCE_LOSSES: dict[str, LossSpec] = {
    "dpo": LossSpec(dpo, True, ("beta",)),
    "cdpo": LossSpec(cdpo, True, ("beta", "eps")),
    "rdpo": LossSpec(rdpo, True, ("beta", "eps")),
    "ipo": LossSpec(ipo, True, ("tau",)),
    "ipo_length_norm": LossSpec(ipo_length_norm, True, ("tau",)),
    "hinge": LossSpec(hinge, False, ("gamma",)),
    "hinge_norm": LossSpec(hinge_norm, True, ("gamma",)),
    "rpo": LossSpec(rpo, True, ("beta", "eta")),
    "rpo_token_mean": LossSpec(rpo_token_mean, True, ("beta", "alpha")),
    "inpo": LossSpec(inpo, True, ("eta", "tau")),
}
# losses that also read the previous iterate's log-probs (precomputed like the reference's)
NEEDS_PREVIOUS = frozenset({"inpo"})
