"""INPO (METHODS.md section 3): the loss against IPO and its formula, the mirror-descent step it minimises,
the knockout, the cyclic oracle, and the online loop's stages with resume."""
from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
import torch

from experiments.inpo_tabular import md_step, preference_matrix, regularized_gap
from posttrain.generation.knockout import knockout
from posttrain.losses.preference import PairLogps, inpo, ipo
from posttrain.rewards.cyclic import MATRIX, CyclicPreference


def logps(seed=0, n=6):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64) * 5 for _ in range(6)]


def test_inpo_at_the_first_iteration_is_ipo_with_tau_eta():
    pc, pr, rc, rr, _, _ = logps()
    lp = PairLogps(pc, pr, rc, rr, prev_chosen=rc, prev_rejected=rr)  # pi_1 = pi_ref
    for tau in (0.005 / 3, 0.0, 0.005):
        loss, _ = inpo(lp, eta=0.005, tau=tau)
        torch.testing.assert_close(loss, ipo(PairLogps(pc, pr, rc, rr), tau=0.005)[0], rtol=1e-12, atol=1e-9)


def test_inpo_matches_its_formula_and_checks_tau():
    pc, pr, rc, rr, tc, tr = logps(1)
    eta, tau = 0.01, 0.004
    loss, m = inpo(PairLogps(pc, pr, rc, rr, prev_chosen=tc, prev_rejected=tr), eta=eta, tau=tau)
    h = (pc - pr) - (tau / eta) * (rc - rr) - (1 - tau / eta) * (tc - tr)
    torch.testing.assert_close(loss, (h - 1 / (2 * eta)) ** 2, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(m["rewards/margins"], eta * h, rtol=1e-12, atol=1e-12)
    # tau = 0: the reference does not enter
    a, _ = inpo(PairLogps(pc, pr, rc, rr, prev_chosen=tc, prev_rejected=tr), eta=eta, tau=0.0)
    b, _ = inpo(PairLogps(pc, pr, rc * 0, rr * 0, prev_chosen=tc, prev_rejected=tr), eta=eta, tau=0.0)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"tau must be in \[0, eta\]"):
        inpo(PairLogps(pc, pr, rc, rr, prev_chosen=tc, prev_rejected=tr), eta=0.005, tau=0.1)
    with pytest.raises(ValueError, match="previous iterate"):
        inpo(PairLogps(pc, pr, rc, rr), eta=0.005, tau=0.001)


@pytest.mark.parametrize("eta,tau", [(0.3, 0.1), (0.5, 0.0), (1.0, 1.0)])
def test_minimising_the_expected_inpo_loss_is_the_mirror_descent_step(eta, tau):
    """Over on-policy pairs y, y' ~ pi_t with the winner drawn from P, the expected loss's minimiser over
    tabular policies is pi_{t+1} ∝ pi_ref^(tau/eta) pi_t^(1 - tau/eta) exp(P(y > pi_t) / eta)."""
    rng = np.random.default_rng(0)
    n = 4
    A = rng.uniform(-1, 1, (n, n))
    P = 0.5 + (A - A.T) / 4  # a general (non-transitive) preference, P + P^T = 1
    pi_ref = rng.dirichlet(np.ones(n))
    pi_t = rng.dirichlet(np.ones(n))
    ys = [(a, b) for a, b in itertools.product(range(n), repeat=2) if a != b]
    w = torch.tensor([a for a, _ in ys])
    l_ = torch.tensor([b for _, b in ys])
    # weight of (y_w = a, y_l = b): pi_t(a) pi_t(b) P(a > b)
    weight = torch.tensor([pi_t[a] * pi_t[b] * P[a, b] for a, b in ys])
    ref, prev = torch.log(torch.tensor(pi_ref)), torch.log(torch.tensor(pi_t))
    theta = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logp = torch.log_softmax(theta, 0)
        loss, _ = inpo(PairLogps(logp[w], logp[l_], ref[w], ref[l_], prev_chosen=prev[w],
                                 prev_rejected=prev[l_]),
                       eta=eta, tau=tau)
        total = (loss * weight).sum()
        total.backward()
        return total
    opt.step(closure)
    got = torch.softmax(theta.detach(), 0).numpy()
    np.testing.assert_allclose(got, md_step(pi_t, pi_ref, P, eta, tau), rtol=1e-6, atol=1e-8)


def test_the_regularised_gap_is_zero_at_the_fixed_point_and_positive_elsewhere():
    P = preference_matrix()
    pi_ref = np.array([0.5, 0.3, 0.2])
    pi = pi_ref.copy()
    for _ in range(300):
        pi = md_step(pi, pi_ref, P, 0.3, 0.1)
    assert abs(regularized_gap(pi, P, pi_ref, 0.1)) < 1e-9
    assert regularized_gap(pi_ref, P, pi_ref, 0.1) > 1e-3


@pytest.mark.parametrize("k", [2, 3, 5, 7, 8, 16])
def test_knockout_finds_the_true_best_and_worst_under_a_transitive_oracle_in_o_k_calls(k):
    for trial in range(50):
        rnd = random.Random(trial)
        scores = [rnd.random() for _ in range(k)]
        seen = []

        def beats(pairs):
            seen.extend(pairs)
            return [scores[a] > scores[b] for a, b in pairs]
        res = knockout(k, beats)
        assert res.best == int(np.argmax(scores)) and res.worst == int(np.argmin(scores))
        assert res.kept and res.calls == len(seen) <= 1.5 * k
        if k == 8:
            assert res.calls == 11  # 4 first-round, 3 winners, 3 losers, 1 final


def test_knockout_keeps_a_pair_only_if_the_winner_wins_the_final():
    # a 3-cycle: 0 beats 1, 1 beats 2, 2 beats 0 -> first round 0 > 1; winners {0, 2}: 2 wins; losers {1, 2}:
    # 2 loses; best = worst = 2 -> dropped
    cyc = {(0, 1): True, (1, 0): False, (1, 2): True, (2, 1): False, (2, 0): True, (0, 2): False}
    res = knockout(3, lambda pairs: [cyc[p] for p in pairs])
    assert not res.kept
    ties = knockout(4, lambda pairs: [False] * len(pairs))  # an indifferent oracle: no win, no pair
    assert not ties.kept


def test_cyclic_oracle_is_the_documented_rock_paper_scissors():
    o = CyclicPreference(bounds=[3, 6])
    short, medium, long = "a b", "a b c d", "a b c d e f g"
    texts = [short, medium, long]
    got = [[o.compare(["q"], [x], [y])[0] for y in texts] for x in texts]
    assert got == [list(r) for r in MATRIX]
    assert all(MATRIX[i][j] + MATRIX[j][i] == 1 for i in range(3) for j in range(3))
    with pytest.raises(ValueError, match="pairwise only"):
        o.score(["q"], [short])
    with pytest.raises(ValueError, match="bounds"):
        CyclicPreference(bounds=[5, 2])


# ---- the online loop ----------------------------------------------------------------------------
RECIPE = """
name: inpo-pipe
seed: 0
method:
  name: inpo
  eta: 0.05
  tau: 0.0167
  prompts_per_iteration: 3
  sampling: {num_candidates: 4, temperature: 1.0, top_k: 0, max_new_tokens: 10, batch_size: 12}
  oracle: {kind: pairwise, name: "tests.rso_helpers:LetterPreference"}
model: {name: tiny-llama, lora: {r: 4, alpha: 8}}
data:
  train: {path: prompts.jsonl}
  max_length: 64
pipeline: {iterations: 2}
train: {lr: 1e-3, micro_batch_size: 2, max_steps: 2, warmup_steps: 0, save_every: 1}
"""
TIMING = ("tokens_per_s", "step_time", "elapsed")


@pytest.fixture
def make(tmp_path, monkeypatch):
    from posttrain.config import load_recipe
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    words = ["cats", "dogs", "rain", "tea", "snow", "maps"]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"Tell me about {w}."}) + "\n"
                                                    for w in words))
    (tmp_path / "inpo.yaml").write_text(RECIPE)

    def make(*overrides, name="inpo-pipe"):
        return load_recipe(tmp_path / "inpo.yaml", [f"output_dir={tmp_path / 'runs'}", f"name={name}",
                                                    *overrides])
    return make


def logged(run_dir):
    from posttrain.runner import read_history
    return [{k: v for k, v in h.items() if k not in TIMING} for h in read_history(run_dir)]


class Killed(Exception):
    pass


def test_inpo_loop_uses_fresh_prompts_and_both_anchors(make):
    from posttrain.runner import run_recipe
    r = make()
    s = run_recipe(r, show_progress=False)
    it1, it2 = r.run_dir, r.run_dir / "iter-2"
    p1 = [json.loads(x)["prompt"] for x in (it1 / "pairs.jsonl").read_text().splitlines()]
    p2 = [json.loads(x)["prompt"] for x in (it2 / "pairs.jsonl").read_text().splitlines()]
    assert not set(map(str, p1)) & set(map(str, p2))  # fresh prompts per iteration
    stats = json.loads((it2 / "inpo_stats.json").read_text())
    assert stats["prompts"] == 3 and stats["oracle_calls"] <= 3 * 1.5 * 4
    first, second = (it["train"]["data"] for it in s["iterations"])
    # iteration 1: pi_t is pi_ref, the same weights, so the second precompute is a cache hit
    assert (first["reference_cache"], first["previous_cache"]) == ("computed", "hit")
    assert second["previous_cache"] == "computed"
    # iteration 1: pi_t = pi_ref and the policy starts there, so h = 0 and the loss is (1/(2 eta))^2
    assert logged(it1)[0]["loss"] == pytest.approx((1 / (2 * 0.05)) ** 2, rel=1e-5)


def test_not_enough_prompts_is_a_clear_error(make):
    from posttrain.errors import DataError
    from posttrain.runner import run_recipe
    with pytest.raises(DataError, match="iteration 3 needs prompts 6..8"):
        run_recipe(make("pipeline.iterations=3"), show_progress=False)


@pytest.mark.parametrize("where", ["sample", "pairs", "train"])
def test_inpo_resumes_inside_any_stage_with_the_same_numbers(make, monkeypatch, where):
    from posttrain.engine import Engine
    from posttrain.methods import inpo as inpo_method
    from posttrain.runner import run_recipe
    straight = make(name="straight")
    run_recipe(straight, show_progress=False)
    cut = make(name="cut")
    # the kill comes in iteration 2, inside the named stage
    if where == "sample":
        real = inpo_method.sample_candidates

        def dying(recipe, params, ctx, records=None):
            if ctx.iteration == 1:
                raise Killed
            return real(recipe, params, ctx, records)
        patched = (inpo_method, "sample_candidates", real)
        monkeypatch.setattr(inpo_method, "sample_candidates", dying)
    elif where == "pairs":
        real = inpo_method.choose_pair
        calls = []

        def dying(*a):
            calls.append(1)
            if len(calls) == 5:  # iteration 2's second prompt
                raise Killed
            return real(*a)
        patched = (inpo_method, "choose_pair", real)
        monkeypatch.setattr(inpo_method, "choose_pair", dying)
    else:
        real_step = Engine.train_step

        def dying(self, batches):
            if self.step == 1 and "iter-2" in str(self.run_dir):
                raise Killed
            return real_step(self, batches)
        patched = (Engine, "train_step", real_step)
        monkeypatch.setattr(Engine, "train_step", dying)
    with pytest.raises(Killed):
        run_recipe(cut, show_progress=False)
    # only the kill is undone: the fixture's cache folder and working directory stay (an undo of
    # everything sent the resumed run to the user's own cache)
    monkeypatch.setattr(*patched)
    first = (cut.run_dir / "samples.jsonl").stat().st_mtime_ns
    run_recipe(cut, show_progress=False)
    assert (cut.run_dir / "samples.jsonl").stat().st_mtime_ns == first  # iteration 1 was not redone
    for sub in ("", "iter-2"):
        assert (cut.run_dir / sub / "pairs.jsonl").read_text() == (straight.run_dir / sub / "pairs.jsonl").read_text()
        assert logged(cut.run_dir / sub) == logged(straight.run_dir / sub)


def test_iterative_dpo_runs_in_the_same_loop(make):
    from posttrain.runner import run_recipe
    r = make("method.name=iterative_dpo", "method.reference=previous", "method.beta=0.1", name="idpo")
    run_recipe(r, show_progress=False)
    import math
    assert logged(r.run_dir / "iter-2")[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_a_pointwise_reward_oracle_pairs_best_against_worst(make):
    from posttrain.runner import run_recipe
    from tests.rso_helpers import LetterReward
    r = make('method.oracle={kind: reward, name: "tests.rso_helpers:LetterReward"}', "pipeline.iterations=1",
             name="bt")
    run_recipe(r, show_progress=False)
    samples = [json.loads(x) for x in (r.run_dir / "samples.jsonl").read_text().splitlines()]
    for row in (json.loads(x) for x in (r.run_dir / "pairs.jsonl").read_text().splitlines()):
        texts = [s["text"] for s in samples if s["prompt_id"] == row["meta"]["prompt_id"]]
        scores = LetterReward().score([""] * len(texts), texts)
        assert row["meta"]["r_chosen"] == max(scores) and row["meta"]["r_rejected"] == min(scores)
