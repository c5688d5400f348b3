"""The report of the noisy-preference bandit (section (a) of noisy_preferences.md): markdown tables,
observations read off the numbers, the plot, and the console summary.

The experiment itself (config, problem, fit, evaluate, run_sweep, summarize, main) is in
:mod:`posttrain.bandit`, which also re-exports ``write_report`` and ``format_summary``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from posttrain.bandit import PLOT_NAME, REPORT_NAME, SECTION_B, BanditConfig, _order, summarize, yardsticks
from posttrain.files import atomic_path, atomic_write_text
from posttrain.stats import mean_ci


# ---- report --------------------------------------------------------------------------------------
def _fmt(m, ci, digits=3) -> str:
    if m is None:
        return "n/a"
    return f"{m:.{digits}f} ± {ci:.{digits}f}" if ci == ci else f"{m:.{digits}f}"


def _cell(s: dict, metric: str) -> str:
    text = _fmt(s[f"{metric}_mean"], s[f"{metric}_ci"])
    if s["ran_off"] and s[f"{metric}_mean"] is not None:
        text += f" (over {s['used']}/{s['n']} seeds ‡)"
    elif s["ran_off"]:
        text = f"no minimiser in {s['ran_off']}/{s['n']} ‡"
    return text


def _table(summary: list[dict], metric: str) -> list[str]:
    eps_values = sorted({s["eps"] for s in summary})
    methods = sorted({s["method"] for s in summary}, key=_order)
    cell = {(s["method"], s["eps"]): s for s in summary}
    lines = ["| method | " + " | ".join(f"eps = {e:g}" for e in eps_values) + " |",
             "|---|" + "---|" * len(eps_values)]
    for m in methods:
        vals = [cell.get((m, e)) for e in eps_values]
        lines.append(f"| {m} | " + " | ".join(_cell(v, metric) if v else "" for v in vals) + " |")
    return lines


def _verdict(d: float, ci: float, lower_is_better: bool) -> str:
    if not ci == ci:
        return "one seed: no interval"
    good, bad = (d + ci < 0, d - ci > 0) if lower_is_better else (d - ci > 0, d + ci < 0)
    return "rDPO better" if good else "DPO better" if bad else "no significant difference"


def _observations(summary: list[dict]) -> list[str]:
    """Sentences read off the numbers, so the text never contradicts the tables."""
    out = []
    cell = {(s["method"], s["eps"]): s for s in summary}
    for eps in sorted({s["eps"] for s in summary}):
        here = [s for s in summary if s["eps"] == eps and s["reward_mean"] is not None]
        best = max(here, key=lambda s: s["reward_mean"])
        tied = " = ".join(s["method"] for s in here if abs(s["reward_mean"] - best["reward_mean"]) < 1e-9)
        parts = [f"eps = {eps:g}: highest mean reward {tied} ({best['reward_mean']:.3f}"
                 + (f", over {best['used']}/{best['n']} seeds" if best["used"] < best["n"] else "") + ")"]
        r = cell.get(("rdpo", eps))
        if r is not None and eps > 0 and r.get("reward_minus_dpo_mean") is not None:
            d, ci = r["reward_minus_dpo_mean"], r["reward_minus_dpo_ci"]
            seeds = f" over {r['used']} seeds" if r["used"] < r["n"] else ""
            parts.append(f"rDPO − DPO reward (paired{seeds}) {d:+.3f} ± {ci:.3f}: {_verdict(d, ci, False)}")
            if r.get("param_error_minus_dpo_mean") is not None:
                d, ci = r["param_error_minus_dpo_mean"], r["param_error_minus_dpo_ci"]
                parts.append(f"rDPO − DPO ‖β·θ − θ*‖ {d:+.3f} ± {ci:.3f}: {_verdict(d, ci, True)}")
        out.append("- " + "; ".join(parts) + ".")
    off = [s for s in summary if s["ran_off"]]
    for s in off:
        out.append(
            f"- ‡ {s['method']} at eps = {s['eps']:g}: in {s['ran_off']} of {s['n']} seeds the iterate ran "
            f"off (‖β·θ‖ grew past the cut-off); in {s['unbounded']} of them the empirical loss is certified "
            "unbounded below (negative recession slope along that direction), i.e. it has no minimiser to "
            "converge to. Those seeds are left out of the means above, which therefore describe the luckier "
            "draws.")
    over = [s for s in summary if s["method"] == "rdpo" and s["eps"] > 0 and s["scale_mean"] is not None
            and s["scale_ci"] == s["scale_ci"] and s["scale_mean"] - s["scale_ci"] > 1]
    if over:
        out.append(
            "- rDPO overshoots the scale (scale > 1 beyond its interval) at eps = "
            + ", ".join(f"{s['eps']:g} ({s['scale_mean']:.2f})" for s in over)
            + ". A greedier policy than the target gains reward from that, so rDPO's reward near or above "
            "the target's there is not by itself a better fit; its parameter error is the fairer measure.")
    slow = [s for s in summary if s["converged"] + s["ran_off"] < s["n"]]
    if slow:
        out.append("- Fits that stopped before the gradient tolerance (kept in the means): " + ", ".join(
            f"{s['method']} at eps = {s['eps']:g}: {s['n'] - s['converged'] - s['ran_off']}/{s['n']}"
            for s in slow) + ".")
    if not off and not slow:
        out.append("- Every fit converged (max |gradient| of the mean loss below the tolerance).")
    return out


def _diagnostic_lines(diag: list[dict], d: int) -> list[str]:
    if not diag:
        return []
    eps = diag[0]["eps"]
    lines = [f"### Diagnostic (outside the sweep): DPO and rDPO at eps = {eps:g} as n grows", "",
             "Everything else as above, same seeds. Mean ± 95% t half-width over the fits with a minimiser.",
             "",
             "| n pairs | rDPO: no minimiser | rDPO ‖β·θ − θ*‖ | DPO ‖β·θ − θ*‖ | "
             "1/(1-2eps)·sqrt(d/n) (the rate, constant omitted) |",
             "|---|---|---|---|---|"]
    for n in sorted({r["n_pairs"] for r in diag}):
        sel = {m: [r for r in diag if r["n_pairs"] == n and r["method"] == m] for m in ("dpo", "rdpo")}
        err = {m: [r["param_error"] for r in v if r["param_error"] is not None] for m, v in sel.items()}
        off = sum(r["diverged"] for r in sel["rdpo"])
        lines.append(f"| {n} | {off}/{len(sel['rdpo'])} "
                     f"| {_fmt(*mean_ci(err['rdpo'])) if err['rdpo'] else 'n/a'} "
                     f"| {_fmt(*mean_ci(err['dpo']))} | {math.sqrt(d / n) / (1 - 2 * eps):.3f} |")
    return lines + [""]


def _plot(rows: list[dict], summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = sorted({s["method"] for s in summary}, key=_order)
    for m in methods:
        pts = sorted((s for s in summary if s["method"] == m), key=lambda s: s["eps"])
        for a, metric in ((ax, "reward"), (ax2, "param_error" if m in ("dpo", "cdpo", "rdpo") else None)):
            if metric is None:
                continue
            shown = [p for p in pts if p[f"{metric}_mean"] is not None]
            x = [p["eps"] for p in shown]
            y = [p[f"{metric}_mean"] for p in shown]
            ci = [p[f"{metric}_ci"] if p[f"{metric}_ci"] == p[f"{metric}_ci"] else 0.0 for p in shown]
            line, = a.plot(x, y, marker="o", label=m)
            a.fill_between(x, [v - c for v, c in zip(y, ci)], [v + c for v, c in zip(y, ci)],
                           color=line.get_color(), alpha=0.2)
            for p in shown:
                if p["ran_off"]:
                    a.annotate(f"{p['used']}/{p['n']} seeds", (p["eps"], p[f"{metric}_mean"]), fontsize=7,
                               textcoords="offset points", xytext=(4, 6), color=line.get_color())
    yard = yardsticks(rows)
    for key, label, style in (("reward_best_action", "best action", ":"),
                              ("reward_target", "target β·θ = θ*", "--"),
                              ("reward_reference", "uniform reference", "-.")):
        ax.axhline(yard[key][0], color="gray", linestyle=style, linewidth=1, label=label)
    ax.set(xlabel="label flip rate eps", ylabel="expected true reward (held-out contexts)",
           title="Learned policy's true reward (mean, 95% CI)")
    ax2.set(xlabel="label flip rate eps", ylabel="‖β·θ − θ*‖", title="Parameter error (mean, 95% CI)")
    ax.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _section_b(existing: str | None) -> str:
    if existing and SECTION_B in existing:
        return existing[existing.index(SECTION_B):].rstrip() + "\n"
    return f"{SECTION_B}\n\npending\n"


def write_report(rows: list[dict], out_dir: str | os.PathLike = "docs/results", *,
                 cfg: BanditConfig | None = None,
                 wall_s: float | None = None, diagnostic: list[dict] | None = None) -> Path:
    """Write section (a) of noisy_preferences.md and its plot; an existing section (b) is kept as it is.

    `cfg` describes the setup in the text (default: BanditConfig()); `diagnostic` is the output of
    `rdpo_vs_n`, shown as its own table when given.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    path, plot = out / REPORT_NAME, out / PLOT_NAME
    _plot(rows, summary, plot)
    cfg = cfg or BanditConfig()
    seeds = sorted({r["seed"] for r in rows})
    yard = yardsticks(rows)
    iters = [r["iterations"] for r in rows]
    diag_lines = _diagnostic_lines(diagnostic or [], cfg.d)
    flip_rates = ", ".join(f"{e:g} → {mean_ci([r['flip_rate'] for r in rows if r['eps'] == e])[0]:.3f}"
                           for e in sorted({r["eps"] for r in rows}))
    lines = [
        "# Noisy preferences: DPO, cDPO, rDPO, IPO under label flips",
        "",
        "Claim (Chowdhury, Kini, Natarajan, *Provably Robust DPO*, ICML 2024; METHODS.md section 1): under "
        "random",
        "preference-label flips with rate eps, the rDPO policy stays close to the clean-data policy while "
        "DPO and",
        "cDPO degrade; for a log-linear policy of dimension d trained on n pairs its sub-optimality is",
        "O(1/(1-2eps) · sqrt(d/n)).",
        "",
        "## (a) Log-linear bandit",
        "",
        "The setting of the paper's theory. Features phi(x, y) ~ N(0, I_d) for K actions per context; true "
        "reward",
        "r* = θ*·phi with ‖θ*‖ fixed; policy pi_θ(y|x) ∝ exp(θ·phi(x, y)); reference θ_0 = 0 (uniform). Each "
        "pair:",
        "x uniform over the training contexts, two distinct actions from the reference, a Bradley-Terry-Luce "
        "label,",
        "then flipped with probability eps (one uniform per pair shared across eps, so a seed's data differ "
        "between",
        "eps only by the added flips). Each loss of `posttrain.losses.preference` is minimised on real "
        "log-probs by",
        "full-batch L-BFGS from θ_0; cdpo and rdpo get the true eps. On clean data DPO's population optimum "
        "is",
        "β·θ = θ*, the KL-regularised optimal policy pi* ∝ pi_0·exp(r*/β) (\"target\"); rDPO's loss is "
        "unbiased, so",
        "under flips its population optimum stays there. IPO (`ipo`, summed log-probs) fits margins",
        f"≈ (2P − 1)/(2·tau) on its own scale; tau = {cfg.ipo_tau:g} was chosen so that its clean-data fit "
        "has about",
        "the target's scale (with tau = β = 0.5 it points the same way but is ~7× flatter), which makes its "
        "reward",
        "comparable; its parameter error is reported only after the best rescaling (direction error).",
        "",
        f"- d = {cfg.d}, K = {cfg.n_actions}, n = {cfg.n_pairs} pairs over {cfg.n_contexts} training "
        f"contexts, reward on {cfg.n_test_contexts} held-out contexts, ‖θ*‖ = {cfg.theta_norm:g}, "
        f"β = {cfg.beta:g}",
        f"- seeds: {len(seeds)} ({seeds[0]}–{seeds[-1]}); each seed draws θ*, the features and the pairs",
        f"- optimiser: torch L-BFGS (strong Wolfe, history 20, float64) from θ = 0, at most {cfg.max_iter} "
        f"iterations, stop at max |grad| ≤ {cfg.grad_tol:g}; iterations used: "
        f"mean {sum(iters) / len(iters):.0f}, max {max(iters)}; a fit whose ‖β·θ‖ passes "
        f"{cfg.diverged_scale:g}·‖θ*‖ is stopped as run off",
        f"- realised flip rates: {flip_rates}",
        f"- wall time of the sweep: {wall_s:.1f} s (2 shared CPU cores, 1 torch thread)" if wall_s is not None
        else "- wall time: not measured",
        f"- command: `python -m experiments.noisy_bandit --seeds {len(seeds)} --out {out_dir}`",
        "",
        "All numbers: mean ± half-width of the 95% t-interval over seeds.",
        "",
        "### Expected true reward of the learned policy (higher is better)",
        "",
        *_table(summary, "reward"),
        "",
        f"Yardsticks: uniform reference {_fmt(*yard['reward_reference'])}, target policy (β·θ = θ*) "
        f"{_fmt(*yard['reward_target'])}, best action {_fmt(*yard['reward_best_action'])}. "
        "A policy greedier than",
        "the target (scale > 1) can score above it, so reward is read together with the parameter error.",
        "",
        "### Parameter error ‖β·θ − θ*‖ (lower is better; n/a for IPO, whose optimum is on another scale)",
        "",
        *_table(summary, "param_error"),
        "",
        "### Direction error min_c ‖c·θ − θ*‖ = ‖θ*‖·sin∠(θ, θ*) (lower is better; comparable across "
        "methods)",
        "",
        *_table(summary, "direction_error"),
        "",
        "### Scale β·(θ·θ*)/‖θ*‖² (1 = the target's scale; below 1 = shrunk towards the uniform reference)",
        "",
        *_table(summary, "scale"),
        "",
        f"![true reward and parameter error vs flip rate]({PLOT_NAME})",
        "",
        "### What the numbers say",
        "",
        *_observations(summary),
        "",
        *diag_lines,
        "What theory predicts, to read the numbers against. DPO fits a BTL model to the observed labels, "
        "whose",
        "preference probabilities (1-eps)·σ(Δr*) + eps·σ(−Δr*) are flatter than the clean ones: its θ keeps "
        "about",
        "the right direction but shrinks (scale < 1), so its policy drifts towards uniform and loses reward. "
        "cDPO is",
        "the DPO loss averaged over a second round of flips at rate eps, so it shrinks further (its margin "
        "is capped",
        "at log((1-eps)/eps)/β). IPO's fitted margins shrink by (1-2eps). rDPO's loss is unbiased, so its "
        "optimum",
        "stays at β·θ = θ*; the price is variance: its per-pair gradient weights reach (1-eps)/(1-2eps), its "
        "error",
        "grows like 1/(1-2eps)·sqrt(d/n) (×5 at eps = 0.4), and the empirical loss, which is not bounded "
        "below, can",
        "lose its minimiser altogether when n is small for the noise level. Label flips are symmetric, so "
        "all methods",
        "find nearly the same direction (see the direction errors): what separates them is the scale.",
        "",
    ]
    existing = path.read_text() if path.exists() else None
    text = "\n".join(lines) + "\n" + _section_b(existing)
    atomic_write_text(path, text)
    return path


def format_summary(summary: list[dict]) -> str:
    lines = [f"{'method':>6} {'eps':>4} {'reward':>16} {'||b*th-th*||':>16} {'dir err':>16} {'scale':>16} "
             "conv ran_off"]
    for s in summary:
        lines.append(f"{s['method']:>6} {s['eps']:>4g} {_fmt(s['reward_mean'], s['reward_ci']):>16} "
                     f"{_fmt(s['param_error_mean'], s['param_error_ci']):>16} "
                     f"{_fmt(s['direction_error_mean'], s['direction_error_ci']):>16} "
                     f"{_fmt(s['scale_mean'], s['scale_ci']):>16} {s['converged']}/{s['n']} {s['ran_off']}")
    return "\n".join(lines)
