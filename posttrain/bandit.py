"""Noisy preferences in the log-linear bandit of the rDPO paper's theory (docs/methods.md "Preference
optimisation", claim (a)).

Setting (Chowdhury, Kini, Natarajan, ICML 2024, section on the log-linear policy class):
- contexts x, each with K actions y and features phi(x, y) in R^d (standard Gaussian, seeded);
- a true reward r*(x, y) = theta* . phi(x, y) with ||theta*|| fixed;
- the policy pi_theta(y|x) = exp(theta . phi(x, y)) / Z_theta(x); the reference is theta_0 = 0 (uniform);
- n pairs: x uniform over the training contexts, (y1, y2) two distinct actions drawn from the reference,
  labelled by Bradley-Terry-Luce, P(y1 > y2) = sigma(r*(x, y1) - r*(x, y2)); then every label is flipped
  independently with probability eps.

The DPO margin is h(theta) = theta . (phi(x, y_w) - phi(x, y_l)): log Z cancels. The losses of
posttrain.losses.preference are called on real log-probs (log pi_theta and log pi_0 = -log K), and theta
is fitted by full-batch L-BFGS (float64, strong-Wolfe line search) from theta_0 to a vanishing gradient.
cdpo and rdpo are given the TRUE flip rate.

What "right" means. On clean data the DPO loss is the logistic likelihood of the BTL model with
parameter beta*theta, so its population optimum is beta*theta = theta*: the KL-regularised optimal
policy pi* ∝ pi_0 exp(r*/beta) (the "target" below). Under flips, the population optimum of rDPO is still
beta*theta = theta* (its loss is unbiased); DPO's and cDPO's are not (they shrink the margin). IPO fits
h ≈ (2P - 1)/(2*tau) on a different scale, so for IPO we report only the error after the best scalar
rescale, min_c ||c*theta - theta*|| = ||theta*|| sin(angle), which is reported for every method as the
"direction error".

The empirical rDPO loss is convex but not bounded below: with few pairs for the noise level it can
decrease forever along some direction and has no minimiser. A fit whose iterate runs off (||beta*theta||
past `diverged_scale` * ||theta*||) is stopped, checked (`rdpo_recession_slope` < 0 certifies the loss is
unbounded along that direction), counted, and left out of the means, which the report says where it happens.
IPO's tau defaults to 0.075, which gives its clean-data fit about the target's scale, so rewards compare.

Reported per (method, eps), mean over seeds with 95% t-intervals:
- reward: the learned policy's expected true reward E_x sum_y pi_theta(y|x) r*(x, y) on held-out contexts,
  with the uniform reference, the target policy (beta*theta = theta*) and the best action as yardsticks.
  A greedier policy than the target (too large a scale) can score above the target: reward alone does
  not say the fit is right, the parameter error does;
- param_error = ||beta*theta - theta*|| (not for IPO), direction_error, and
  scale = beta * (theta . theta*) / ||theta*||^2 (1 = the right scale; below 1 = shrunk towards uniform).

The experiment that writes docs/results/noisy_preferences.md is experiments/noisy_bandit.py (run from a
checkout: `python -m experiments.noisy_bandit --seeds 20`); `posttrain demo` runs a small sweep of it.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from posttrain.errors import RecipeError
from posttrain.losses.preference import PREFERENCE_LOSSES, PairLogps
from posttrain.stats import mean_ci

METHODS = ("dpo", "cdpo", "rdpo", "ipo")
REPORT_NAME = "noisy_preferences.md"
PLOT_NAME = "noisy_preferences_bandit.png"
SECTION_B = "## (b) Embedded model (LoRA)"


@dataclass(frozen=True)
class BanditConfig:
    d: int = 10  # feature dimension
    n_actions: int = 6  # K actions per context
    n_pairs: int = 2000
    n_contexts: int = 200  # training contexts the pairs are drawn from
    n_test_contexts: int = 2000  # held-out contexts for the reward
    theta_norm: float = 1.5  # ||theta*||: rewards have standard deviation 1.5 per action
    beta: float = 0.5
    # IPO's tau (None = beta). IPO fits margins ~ (2P-1)/(2 tau), on its own scale; 0.075 gives its clean-data
    # fit about the target's scale here (measured: beta*theta.theta*/||theta*||^2 ~ 1.0 at eps = 0)
    tau: float | None = 0.075
    eps_values: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4)
    methods: tuple[str, ...] = METHODS
    seeds: int = 20
    first_seed: int = 0
    max_iter: int = 1000  # L-BFGS iterations per fit
    grad_tol: float = 1e-8  # a fit has converged when max |grad| of the mean loss is below this
    diverged_scale: float = 50.0  # ||beta*theta|| past this many ||theta*|| counts as diverged

    def __post_init__(self):
        for name in ("d", "n_pairs", "n_contexts", "n_test_contexts", "seeds", "max_iter"):
            if getattr(self, name) < 1:
                raise RecipeError(f"BanditConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_actions < 2:
            raise RecipeError(f"BanditConfig.n_actions must be >= 2 (a pair needs two actions), "
                              f"got {self.n_actions}")
        if not (self.beta > 0 and self.theta_norm > 0 and (self.tau is None or self.tau > 0)):
            raise RecipeError("BanditConfig: beta, tau and theta_norm must be > 0")
        bad = [e for e in self.eps_values if not 0 <= e < 0.5]
        if bad:
            raise RecipeError(f"BanditConfig.eps_values must lie in [0, 0.5) (0.5 = labels are coin flips), "
                              f"got {bad}")
        # the bandit sets beta, eps and tau; a loss with other parameters (hinge's gamma, rpo's eta) has no
        # meaning given here
        ok = [m for m, spec in PREFERENCE_LOSSES.items() if spec.needs_reference and
              set(spec.params) <= {"beta", "eps", "tau"}]
        unknown = [m for m in self.methods if m not in ok]
        if unknown:
            raise RecipeError(f"BanditConfig.methods: {unknown} not supported here; choose from {ok}")

    @property
    def ipo_tau(self) -> float:
        return self.beta if self.tau is None else self.tau


@dataclass
class BanditProblem:
    """One seed's world: the true parameter, the features, and the pairs with their clean labels."""

    theta_star: torch.Tensor  # [d]
    train_phi: torch.Tensor  # [C, K, d]
    test_phi: torch.Tensor  # [C_test, K, d]
    ctx: torch.Tensor  # [n] context index of each pair
    y1: torch.Tensor  # [n]
    y2: torch.Tensor  # [n]
    prefer1: torch.Tensor  # [n] bool, the clean BTL label: y1 preferred
    flip_u: torch.Tensor  # [n] uniforms; a pair is flipped at rate eps when flip_u < eps
    seed: int = 0


def make_problem(cfg: BanditConfig, seed: int) -> BanditProblem:
    """Draw theta*, features and labelled pairs; deterministic in (cfg, seed).

    The flips share one uniform per pair across eps (common random numbers): the pairs flipped at eps = 0.1
    are also flipped at 0.2, so the eps curve of one seed is smooth and differences between eps are not noise.
    """
    g = torch.Generator().manual_seed(int(seed))
    f64 = torch.float64
    theta_star = torch.randn(cfg.d, generator=g, dtype=f64)
    theta_star = theta_star * (cfg.theta_norm / theta_star.norm())
    train_phi = torch.randn(cfg.n_contexts, cfg.n_actions, cfg.d, generator=g, dtype=f64)
    test_phi = torch.randn(cfg.n_test_contexts, cfg.n_actions, cfg.d, generator=g, dtype=f64)
    n, k = cfg.n_pairs, cfg.n_actions
    ctx = torch.randint(cfg.n_contexts, (n,), generator=g)
    y1 = torch.randint(k, (n,), generator=g)
    y2 = (y1 + torch.randint(1, k, (n,), generator=g)) % k  # uniform over the other K-1 actions
    r = train_phi @ theta_star  # [C, K]
    p1 = torch.sigmoid(r[ctx, y1] - r[ctx, y2])
    prefer1 = torch.rand(n, generator=g, dtype=f64) < p1
    flip_u = torch.rand(n, generator=g, dtype=f64)
    return BanditProblem(theta_star, train_phi, test_phi, ctx, y1, y2, prefer1, flip_u, seed=int(seed))


def observed_pairs(problem: BanditProblem, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y_w, y_l, flipped) after flipping each clean label with probability eps."""
    flipped = problem.flip_u < eps
    first_wins = problem.prefer1 ^ flipped
    yw = torch.where(first_wins, problem.y1, problem.y2)
    yl = torch.where(first_wins, problem.y2, problem.y1)
    return yw, yl, flipped


def loss_params(cfg: BanditConfig, method: str, eps: float) -> dict:
    names = PREFERENCE_LOSSES[method].params
    values = {"beta": cfg.beta, "eps": eps, "tau": cfg.ipo_tau}
    return {k: values[k] for k in names}


def pair_logps(theta: torch.Tensor, phi: torch.Tensor, ctx, yw, yl) -> PairLogps:
    """Real log-probs of the observed pairs under pi_theta and under the uniform reference."""
    logits = phi @ theta  # [C, K]
    logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    pc, pr = logp[ctx, yw], logp[ctx, yl]
    ref = torch.full_like(pc, -math.log(phi.shape[1]))
    one = torch.ones_like(pc)  # a bandit action is one "token"
    return PairLogps(pc, pr, ref, ref, one, one)


class _RanOff(Exception):
    """The iterate left every sensible scale: the objective is (most likely) unbounded below."""


def rdpo_recession_slope(cfg: BanditConfig, problem: BanditProblem, eps: float, u: torch.Tensor) -> float:
    """lim_{t->inf} d/dt of the mean rDPO loss at theta = t*u (exact, from the loss's linear tails).

    A pair with a = beta*u.(phi_w - phi_l) contributes -eps*a/(1-2eps) if a > 0 and (1-eps)*|a|/(1-2eps) if
    a < 0. The loss is convex in theta, so a negative slope certifies that it decreases without bound along u:
    the empirical rDPO objective then has no minimiser. (DPO, cDPO and IPO losses are >= 0: always bounded.)
    """
    yw, yl, _ = observed_pairs(problem, eps)
    z = problem.train_phi[problem.ctx, yw] - problem.train_phi[problem.ctx, yl]
    a = cfg.beta * (z @ u)
    return float((-eps * a.clamp(min=0) + (1 - eps) * (-a).clamp(min=0)).mean() / (1 - 2 * eps))


def fit(cfg: BanditConfig, problem: BanditProblem, method: str,
        eps: float) -> tuple[torch.Tensor | None, dict]:
    """Minimise the mean loss over the observed pairs with full-batch L-BFGS from theta_0 = 0.

    Returns (theta, info); theta is None when the iterate ran off (||beta*theta|| past `diverged_scale`
    times ||theta*||, or a non-finite loss), which happens when rDPO's empirical loss is unbounded below.
    info["unbounded"] then says whether that is certified (`rdpo_recession_slope` < 0 along the run-off
    direction).
    """
    yw, yl, _ = observed_pairs(problem, eps)
    fn, params = PREFERENCE_LOSSES[method].fn, loss_params(cfg, method, eps)
    theta = torch.zeros(cfg.d, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1.0, max_iter=cfg.max_iter, max_eval=cfg.max_iter * 2,
                            tolerance_grad=cfg.grad_tol, tolerance_change=1e-15, history_size=20,
                            line_search_fn="strong_wolfe")
    limit = cfg.diverged_scale * cfg.theta_norm

    def closure():
        t = theta.detach()
        if not bool(torch.isfinite(t).all()) or float((cfg.beta * t).norm()) > limit:
            raise _RanOff
        opt.zero_grad()
        losses, _ = fn(pair_logps(theta, problem.train_phi, problem.ctx, yw, yl), **params)
        loss = losses.mean()
        loss.backward()
        return loss

    t0 = time.perf_counter()
    info = {"loss": None, "grad_max": None, "diverged": False, "unbounded": False, "recession_slope": None}
    try:
        opt.step(closure)
        loss = float(closure().detach())
        if not math.isfinite(loss):
            raise _RanOff
        info.update(loss=loss, grad_max=float(theta.grad.abs().max()))
    except _RanOff:
        info["diverged"] = True
    state = opt.state[theta]
    info["iterations"] = int(state.get("n_iter", 0))
    info["converged"] = bool(not info["diverged"] and info["grad_max"] <= cfg.grad_tol * 10)
    theta = theta.detach()
    if info["diverged"]:
        if method == "rdpo" and bool(torch.isfinite(theta).all()) and float(theta.norm()) > 0:
            slope = rdpo_recession_slope(cfg, problem, eps, theta / theta.norm())
            info.update(recession_slope=slope, unbounded=slope < 0)
        theta = None
    info["fit_s"] = time.perf_counter() - t0
    return theta, info


def expected_reward(theta: torch.Tensor, phi: torch.Tensor, theta_star: torch.Tensor) -> float:
    """E_x sum_y pi_theta(y|x) r*(x, y) over the contexts of phi."""
    pi = torch.softmax(phi @ theta, dim=-1)
    return float((pi * (phi @ theta_star)).sum(-1).mean())


def evaluate(cfg: BanditConfig, problem: BanditProblem, theta: torch.Tensor | None, method: str) -> dict:
    """Metrics of a fitted theta; all None for a fit that ran off (it has no theta to judge)."""
    if theta is None:
        return dict.fromkeys(("reward", "param_error", "direction_error", "scale", "theta_norm"))
    ts = problem.theta_star
    # min_c ||c*theta - theta*||^2 = ||theta*||^2 - (theta.theta*)^2 / ||theta||^2
    direction = (float(ts @ ts - (theta @ ts) ** 2 / (theta @ theta)) if float(theta.norm()) > 0
                 else float(ts @ ts))
    return {
        "reward": expected_reward(theta, problem.test_phi, ts),
        # IPO's population optimum is not beta*theta = theta*: its raw error would only measure tau
        "param_error": None if method.startswith("ipo") else float((cfg.beta * theta - ts).norm()),
        "direction_error": math.sqrt(max(direction, 0.0)),
        "scale": float(cfg.beta * (theta @ ts) / (ts @ ts)),
        "theta_norm": float(theta.norm()),
    }


def bounds(cfg: BanditConfig, problem: BanditProblem) -> dict:
    r = problem.test_phi @ problem.theta_star
    return {"reward_reference": float(r.mean()),
            "reward_target": expected_reward(problem.theta_star / cfg.beta, problem.test_phi,
                                             problem.theta_star),
            "reward_best_action": float(r.max(-1).values.mean())}


def run_sweep(cfg: BanditConfig, progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per (seed, eps, method): the fit's metrics, its optimiser info and the seed's yardsticks."""
    rows = []
    for s in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
        t0 = time.perf_counter()
        problem = make_problem(cfg, s)
        yard = bounds(cfg, problem)
        for eps in cfg.eps_values:
            flip_rate = float(observed_pairs(problem, eps)[2].double().mean())
            for method in cfg.methods:
                theta, info = fit(cfg, problem, method, eps)
                rows.append({"method": method, "eps": eps, "seed": s, **evaluate(cfg, problem, theta, method),
                             "flip_rate": flip_rate, **info, **yard})
        if progress is not None:
            progress(f"seed {s - cfg.first_seed + 1}/{cfg.seeds}: {time.perf_counter() - t0:.1f} s")
    return rows


# ---- statistics ----------------------------------------------------------------------------------
METRICS = ("reward", "param_error", "direction_error", "scale")


def summarize(rows: list[dict]) -> list[dict]:
    """Per (method, eps): `n` seeds, `converged`, `ran_off` (fits whose iterate ran off, theta = None) and
    `unbounded` (of those, certified unbounded below), `used` (seeds in the means), and `<metric>_mean`,
    `<metric>_ci` (95% t half-width) over the fits that did not run off, for reward, param_error,
    direction_error and scale; plus `reward_minus_dpo_*` and `param_error_minus_dpo_*`: the paired
    (same seed, same data) difference to DPO, over the seeds where both have a value."""
    keys = sorted({(r["method"], r["eps"]) for r in rows}, key=lambda k: (k[1], _order(k[0])))
    by = {(r["method"], r["eps"], r["seed"]): r for r in rows}
    out = []
    for method, eps in keys:
        sel = [r for r in rows if r["method"] == method and r["eps"] == eps]
        row = {"method": method, "eps": eps, "n": len(sel), "converged": sum(r["converged"] for r in sel),
               "ran_off": sum(r["diverged"] for r in sel), "unbounded": sum(r["unbounded"] for r in sel),
               "used": sum(r["reward"] is not None for r in sel),
               "flip_rate_mean": mean_ci([r["flip_rate"] for r in sel])[0]}
        for m in METRICS:
            vals = [r[m] for r in sel if r[m] is not None]
            row[f"{m}_mean"], row[f"{m}_ci"] = mean_ci(vals) if vals else (None, None)
        for m in ("reward", "param_error"):
            base = {r["seed"]: by.get(("dpo", eps, r["seed"]), {}).get(m) for r in sel}
            diffs = [r[m] - base[r["seed"]] for r in sel if r[m] is not None and base[r["seed"]] is not None]
            row[f"{m}_minus_dpo_mean"], row[f"{m}_minus_dpo_ci"] = mean_ci(diffs) if diffs else (None, None)
        out.append(row)
    return out


def _order(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


def yardsticks(rows: list[dict]) -> dict[str, tuple[float, float]]:
    """Mean and CI over seeds of the reference, target and best-action rewards."""
    per_seed = {r["seed"]: r for r in rows}
    return {k: mean_ci([r[k] for r in per_seed.values()])
            for k in ("reward_reference", "reward_target", "reward_best_action")}


def rdpo_vs_n(cfg: BanditConfig, ns: tuple[int, ...] = (2000, 5000, 20000),
              eps: float | None = None) -> list[dict]:
    """Diagnostic outside the sweep: DPO and rDPO at one flip rate (default the largest) as the number of
    pairs grows, everything else as in `cfg`. Shows whether rDPO's trouble at high eps is finite-sample
    variance."""
    eps = max(cfg.eps_values) if eps is None else eps
    rows = []
    for n in ns:
        c = BanditConfig(**{**asdict(cfg), "n_pairs": n})
        for s in range(c.first_seed, c.first_seed + c.seeds):
            problem = make_problem(c, s)
            for method in ("dpo", "rdpo"):
                theta, info = fit(c, problem, method, eps)
                rows.append({"n_pairs": n, "eps": eps, "method": method, "seed": s,
                             **evaluate(c, problem, theta, method), "diverged": info["diverged"],
                             "unbounded": info["unbounded"]})
    return rows
