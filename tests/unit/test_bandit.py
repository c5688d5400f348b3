"""The noisy-preference log-linear bandit (posttrain/bandit.py) and its experiment
(experiments/noisy_bandit.py): data, fits, the sweep and its report, the rDPO recession slope."""
import math

import pytest
import torch

from experiments.noisy_bandit import main
from experiments.noisy_bandit_report import write_report
from posttrain.bandit import (
    PLOT_NAME,
    REPORT_NAME,
    SECTION_B,
    BanditConfig,
    fit,
    make_problem,
    observed_pairs,
    rdpo_recession_slope,
    rdpo_vs_n,
    run_sweep,
    summarize,
)
from posttrain.errors import RecipeError
from posttrain.losses.preference import PairLogps
from posttrain.stats import mean_ci, t975

SMALL = BanditConfig(d=4, n_actions=4, n_pairs=400, n_contexts=50, n_test_contexts=200, seeds=2,
                     eps_values=(0.0, 0.3))


def test_data_generation_is_deterministic_per_seed():
    a, b, c = make_problem(SMALL, 3), make_problem(SMALL, 3), make_problem(SMALL, 4)
    for name in ("theta_star", "train_phi", "test_phi", "ctx", "y1", "y2", "prefer1", "flip_u"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.theta_star, c.theta_star)
    assert float(a.theta_star.norm()) == pytest.approx(SMALL.theta_norm)
    assert (a.y1 != a.y2).all()


def test_flip_rate_is_eps_and_flips_are_nested_across_eps():
    cfg = BanditConfig(n_pairs=20000, n_contexts=50, n_test_contexts=10)
    p = make_problem(cfg, 0)
    previous = torch.zeros(cfg.n_pairs, dtype=torch.bool)
    for eps in (0.0, 0.1, 0.2, 0.3, 0.4):
        yw, yl, flipped = observed_pairs(p, eps)
        rate = float(flipped.double().mean())
        assert abs(rate - eps) < 4 * math.sqrt(max(eps * (1 - eps), 1e-12) / cfg.n_pairs) + 1e-12
        assert (flipped | ~previous).all()  # a pair flipped at a lower eps stays flipped
        previous = flipped
        # a flipped pair has its winner and loser swapped relative to the clean label
        clean_w = torch.where(p.prefer1, p.y1, p.y2)
        assert torch.equal(yw == clean_w, ~flipped) and (yw != yl).all()


def test_at_eps_zero_dpo_cdpo_rdpo_fit_the_same_theta():
    p = make_problem(SMALL, 0)
    thetas = [fit(SMALL, p, m, 0.0)[0] for m in ("dpo", "cdpo", "rdpo")]
    for t in thetas[1:]:
        assert torch.allclose(t, thetas[0], rtol=0, atol=1e-10)


def test_many_clean_pairs_recover_theta_star():
    cfg = BanditConfig(d=4, n_actions=4, n_pairs=20000, n_contexts=400, n_test_contexts=100)
    p = make_problem(cfg, 1)
    theta, info = fit(cfg, p, "dpo", 0.0)
    assert info["converged"]
    err = float((cfg.beta * theta - p.theta_star).norm())
    assert err < 0.1 * cfg.theta_norm
    # and rDPO with the true flip rate recovers it from noisy labels too (it is unbiased), DPO does not
    theta_r, _ = fit(cfg, p, "rdpo", 0.3)
    theta_d, _ = fit(cfg, p, "dpo", 0.3)
    assert float((cfg.beta * theta_r - p.theta_star).norm()) < 0.2 * cfg.theta_norm
    assert float((cfg.beta * theta_d - p.theta_star).norm()) > 0.3 * cfg.theta_norm


def test_tiny_sweep_rows_summary_and_report(tmp_path):
    rows = run_sweep(SMALL)
    assert len(rows) == 2 * 2 * 4
    expected = {"method", "eps", "seed", "reward", "param_error", "direction_error", "scale", "flip_rate",
                "loss",
                "grad_max", "iterations", "converged", "diverged", "unbounded", "recession_slope",
                "reward_reference", "reward_target", "reward_best_action"}
    assert expected <= set(rows[0])
    assert all(r["param_error"] is None for r in rows if r["method"] == "ipo")
    assert all(math.isfinite(r["reward"]) for r in rows)
    summary = summarize(rows)
    assert {(s["method"], s["eps"]) for s in summary} == {(m,
                                                           e) for m in SMALL.methods
                                                          for e in SMALL.eps_values}
    s = next(s for s in summary if s["method"] == "rdpo" and s["eps"] == 0.3)
    assert s["n"] == 2 and s["reward_ci"] >= 0 and s["reward_minus_dpo_mean"] is not None
    # an existing section (b) survives a rewrite of section (a)
    (tmp_path / REPORT_NAME).write_text(f"old (a)\n\n{SECTION_B}\n\nLoRA results here\n")
    diag = rdpo_vs_n(SMALL, ns=(100, 400))
    assert {(r["n_pairs"], r["method"]) for r in diag} == {(n, m) for n in (100, 400) for m in ("dpo",
                                                                                                "rdpo")}
    path = write_report(rows, tmp_path, cfg=SMALL, wall_s=1.0, diagnostic=diag)
    text = path.read_text()
    assert "## (a) Log-linear bandit" in text and "old (a)" not in text and "as n grows" in text
    for line in text.splitlines():  # no stray '|' inside a table cell
        if line.startswith("| method"):
            assert line.count("|") == 2 + len(SMALL.eps_values)
    assert text.rstrip().endswith("LoRA results here") and text.count(SECTION_B) == 1
    assert (tmp_path / PLOT_NAME).stat().st_size > 1000
    fresh = write_report(rows, tmp_path / "fresh", cfg=SMALL)
    assert fresh.read_text().rstrip().endswith(f"{SECTION_B}\n\npending")


def test_main_runs(tmp_path, monkeypatch, capsys):
    import experiments.noisy_bandit as nb

    real = nb.run_sweep
    monkeypatch.setattr(nb, "run_sweep", lambda cfg, progress=None: real(SMALL, progress))
    assert main(["--seeds", "2", "--out", str(tmp_path), "--no-diagnostic"]) == 0
    assert "rdpo" in capsys.readouterr().out and (tmp_path / REPORT_NAME).exists()


def test_config_errors_and_statistics():
    with pytest.raises(RecipeError, match=r"\[0, 0\.5\)"):
        BanditConfig(eps_values=(0.0, 0.5))
    with pytest.raises(RecipeError, match="hinge"):
        BanditConfig(methods=("dpo", "hinge"))
    assert t975(9) == pytest.approx(2.262) and t975(30) == pytest.approx(2.042)
    assert t975(60) == pytest.approx(2.000, abs=2e-3) and t975(1000) == pytest.approx(1.962, abs=1e-3)
    m, ci = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and ci == pytest.approx(4.303 * 1.0 / math.sqrt(3))


def test_rdpo_without_a_minimiser_is_caught_and_certified():
    cfg = BanditConfig(d=4, n_actions=4, n_pairs=60, n_contexts=20, n_test_contexts=20, eps_values=(0.45,))
    ran_off = 0
    for seed in range(8):
        p = make_problem(cfg, seed)
        theta, info = fit(cfg, p, "rdpo", 0.45)
        if theta is None:
            ran_off += 1
            assert info["diverged"] and info["unbounded"] and info["recession_slope"] < 0
        else:
            # a convex loss with a minimiser rises along every direction, this one included
            assert info["converged"] and rdpo_recession_slope(cfg, p, 0.45, theta / theta.norm()) > 0
        # losses >= 0 always have a minimiser (data not separable)
        assert fit(cfg, p, "dpo", 0.45)[0] is not None
    assert ran_off > 0


def test_rdpo_recession_slope_by_hand_and_against_the_loss_itself():
    """The slope is only ever checked for its sign above; a slope off by a positive factor (e.g. without
    its 1 / (1 - 2 eps)) or with eps and 1 - eps swapped on one side would keep many signs. Here its value:

    one context, actions with features 1 and 0 (d = 1), beta = 0.5, eps = 0.25 (1 - 2 eps = 0.5), u = +1.
    A pair won by action 0 has z = phi_w - phi_l = +1, a = beta z u = 0.5 > 0: -eps a / (1 - 2eps) = -0.25;
    one won by action 1 has a = -0.5:  (1 - eps) |a| / (1 - 2eps) = 0.75.
    - 2 wins of action 0, 1 of action 1:  (-0.25 - 0.25 + 0.75) / 3 = 1/12; along u = -1: (0.75 + 0.75 - 0.25)
      / 3 = 5/12
    - 4 wins of action 0, 1 of action 1:  (4 * -0.25 + 0.75) / 5 = -1/20 (no minimiser along u = +1)"""
    from posttrain.bandit import BanditProblem
    from posttrain.losses.preference import rdpo
    cfg = BanditConfig(d=1, n_actions=2, beta=0.5)
    f64 = torch.float64

    def problem(prefer1):
        n = len(prefer1)
        return BanditProblem(theta_star=torch.ones(1, dtype=f64), train_phi=torch.tensor([[[1.0], [0.0]]],
                                                                                         dtype=f64),
                             test_phi=torch.zeros(1, 2, 1, dtype=f64), ctx=torch.zeros(n, dtype=torch.long),
                             y1=torch.zeros(n, dtype=torch.long), y2=torch.ones(n, dtype=torch.long),
                             prefer1=torch.tensor(prefer1), flip_u=torch.full((n,), 0.9, dtype=f64))
    up, down = torch.tensor([1.0], dtype=f64), torch.tensor([-1.0], dtype=f64)
    three = problem([True, True, False])
    assert rdpo_recession_slope(cfg, three, 0.25, up) == pytest.approx(1 / 12, rel=1e-12)
    assert rdpo_recession_slope(cfg, three, 0.25, down) == pytest.approx(5 / 12, rel=1e-12)
    assert rdpo_recession_slope(cfg, problem([True] * 4 + [False]), 0.25, up) == pytest.approx(-1 / 20,
                                                                                               rel=1e-12)

    # and on a random problem, the slope is d/dt of the mean rDPO loss at theta = t u far out (t = 1e5 to
    # 2e5): each pair's loss is linear there to within e^-(beta |z.u| t), below the difference's rounding
    cfg = BanditConfig(d=4, n_actions=4, n_pairs=60, n_contexts=20, n_test_contexts=20)
    p = make_problem(cfg, 3)
    yw, yl, _ = observed_pairs(p, 0.3)
    z = p.train_phi[p.ctx, yw] - p.train_phi[p.ctx, yl]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        u = torch.randn(4, generator=g, dtype=f64)
        u = u / u.norm()

        def mean_loss(t):
            h = z @ (t * u)   # the DPO margin: logp(y_w) - logp(y_l) under a uniform reference
            zeros = torch.zeros_like(h)
            return rdpo(PairLogps(h, zeros, zeros, zeros), beta=cfg.beta, eps=0.3)[0].mean().item()
        slope = rdpo_recession_slope(cfg, p, 0.3, u)
        assert (mean_loss(2e5) - mean_loss(1e5)) / 1e5 == pytest.approx(slope, rel=1e-6, abs=1e-9)
