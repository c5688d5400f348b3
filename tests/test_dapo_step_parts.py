"""Step-level DAPO's parts (METHODS.md section 5): token-level steps on the real tokenizer, Monte-Carlo
targets and the critic's soft-label BCE, advantages and the spread filter, and the actor loss with its
tabular minimiser."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from posttrain.files import read_jsonl
from posttrain.losses.advantage import advantages, critic_loss, dapo_step_loss, keeps_state, mc_target
from posttrain.methods.dapo_step.steps import newline_tokens, split_steps
from tests.data_helpers import load_smollm2_tokenizer

TEXTS = [
    "Step 1: 3 + 4 = 7.\nStep 2: 7 * 2 = 14.\nThe answer is 14.",
    "First, add.\n\nThen multiply:  \n 5 * 6 = 30\n\n\nThe answer is 30.\n",
    "no newline at all",
    "\nstarts with one\r\nand a windows line\n \n  indented last",
    "trailing spaces after the newline\n   ",
]


@pytest.mark.parametrize("text", TEXTS)
def test_steps_split_at_newline_tokens_and_reassemble_exactly(text):
    tok = load_smollm2_tokenizer()
    ids = tok.encode(text, add_special_tokens=False)
    nl = newline_tokens(tok)
    steps = split_steps(ids, nl)
    assert [t for s in steps for t in s] == ids  # exact round trip of the ids ...
    assert tok.decode([t for s in steps for t in s]) == text  # ... and of the text
    for s in steps[:-1]:
        assert "\n" in tok.decode([s[-1]])  # every step but the last ends with a newline token
        assert any(t not in nl for t in s)  # ... and holds more than newlines
    # a newline token is whitespace only: the cut never separates a newline from words
    assert all(tok.decode([t]).strip() == "" for t in nl if t < 1000)
    assert text.count("\n") >= len(steps) - 1


def test_steps_merge_runs_of_newlines_into_one_token_boundary():
    tok = load_smollm2_tokenizer()
    steps = split_steps(tok.encode("a\n\n\nb", add_special_tokens=False), newline_tokens(tok))
    assert [tok.decode(s) for s in steps] == ["a\n\n\n", "b"]
    assert split_steps([], newline_tokens(tok)) == []
    steps = split_steps(tok.encode("\n\nx\ny", add_special_tokens=False), newline_tokens(tok))
    assert [tok.decode(s) for s in steps] == ["\n\nx\n", "y"]  # leading newlines join the first step


def test_mc_target_and_soft_bce():
    assert mc_target([True, False, True, True]) == 0.75
    with pytest.raises(ValueError):
        mc_target([])
    logits = torch.tensor([-3.0, 0.0, 2.5, 40.0, -40.0], dtype=torch.float64)
    t = torch.tensor([0.25, 0.5, 1.0, 0.75, 0.0], dtype=torch.float64)
    got = critic_loss(logits, t)
    v = 1 / (1 + np.exp(-logits.numpy()))
    ref = [-(ti * math.log(vi) + (1 - ti) * math.log1p(-vi)) if 0 < vi < 1 else None for ti,
           vi in zip(t.numpy(), v)]
    np.testing.assert_allclose(got.numpy()[:3], ref[:3], rtol=1e-12)
    assert torch.isfinite(got).all()  # saturated logits stay finite
    np.testing.assert_allclose(got.numpy()[3], 0.25 * 40.0 + math.log1p(math.exp(-40.0)), rtol=1e-12)
    # soft labels: the gradient in the logit is V - t, so the loss is minimised at V = target
    z = torch.tensor([math.log(0.3 / 0.7), 0.0], dtype=torch.float64, requires_grad=True)
    critic_loss(z, torch.tensor([0.3, 0.3], dtype=torch.float64)).sum().backward()
    assert z.grad[0].item() == pytest.approx(0.0, abs=1e-12) and z.grad[1].item() == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        critic_loss(torch.zeros(1), torch.tensor([1.5]))


def test_advantages_and_the_spread_filter():
    assert advantages([0.2, 0.4, 0.9]) == pytest.approx([-0.3, -0.1, 0.4])
    assert keeps_state(advantages([0.5, 0.55, 0.6])) is True  # spread 0.1 exactly: kept
    assert keeps_state(advantages([0.5, 0.55, 0.59])) is False
    assert keeps_state(advantages([0.7])) is False  # one candidate: no spread


def test_actor_loss_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    lp, lr, a = (torch.randn(7, generator=g, dtype=torch.float64) for _ in range(3))
    got = dapo_step_loss(lp, lr, a, beta=0.01)
    torch.testing.assert_close(got, 0.5 * (a / 0.01 - (lp - lr)) ** 2, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="beta"):
        dapo_step_loss(lp, lr, a, beta=0.0)


@pytest.mark.parametrize("beta", [0.01, 0.5])
def test_actor_loss_minimiser_is_the_exponential_tilt_of_the_reference(beta):
    """Lemma 3.1: with each action's log-prob free, the minimiser is logp = logp_ref + A/beta, whose
    normalised form is pi_ref exp(A/beta) / Z; with a softmax policy and advantages for which Z = 1 the
    normalised tilt itself is the minimiser."""
    rng = np.random.default_rng(1)
    pi_ref = rng.dirichlet(np.ones(5))
    adv = torch.tensor(rng.normal(0, 0.05, 5))
    ref = torch.log(torch.tensor(pi_ref))
    free = ref.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([free], max_iter=2000, tolerance_grad=1e-15, tolerance_change=1e-30,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = dapo_step_loss(free, ref, adv, beta).sum()
        loss.backward()
        return loss
    opt.step(closure)
    tilt = pi_ref * np.exp(adv.numpy() / beta)
    np.testing.assert_allclose(torch.softmax(free.detach(), 0).numpy(), tilt / tilt.sum(), rtol=1e-6)
    # a softmax policy, advantages consistent with a normalised target pi* (A = beta log pi*/pi_ref)
    target = rng.dirichlet(np.ones(5))
    adv = torch.tensor(beta * np.log(target / pi_ref))
    theta = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=2000, tolerance_grad=1e-15, tolerance_change=1e-30,
                            line_search_fn="strong_wolfe")

    def closure2():
        opt.zero_grad()
        loss = (torch.tensor(pi_ref) * dapo_step_loss(torch.log_softmax(theta, 0), ref, adv, beta)).sum()
        loss.backward()
        return loss
    opt.step(closure2)
    np.testing.assert_allclose(torch.softmax(theta.detach(), 0).numpy(), target, rtol=1e-6)


# ---- the critic's calibration and its constant baselines (issue 32) --------------------------------


def test_calibration_compares_with_the_training_mean_and_reports_the_own_mean_as_a_lower_bound():
    from posttrain.methods.dapo_step import data as dd
    v, t = [0.05, 0.15, 0.95, 0.9], [0.0, 0.5, 1.0, 0.5]
    c = dd.calibration(v, t, train_mean=0.25)
    assert c["brier"] == pytest.approx((0.05 ** 2 + 0.35 ** 2 + 0.05 ** 2 + 0.4 ** 2) / 4)  # 0.071875
    assert c["mean_target"] == pytest.approx(0.5)
    # own mean 0.5: (0.25 + 0 + 0.25 + 0) / 4; the training mean 0.25: (0.0625 + 0.0625 + 0.5625 + 0.0625) / 4
    assert c["brier_of_own_mean"] == pytest.approx(0.125)
    assert c["train_mean"] == 0.25 and c["brier_of_the_train_mean"] == pytest.approx(0.1875)
    # the two differ by exactly (own mean - training mean)^2: the own mean is the best constant
    assert c["brier_of_the_train_mean"] - c["brier_of_own_mean"] == pytest.approx((0.5 - 0.25) ** 2)
    for m in (0.0, 0.3, 0.5, 0.8):
        assert dd.calibration(v, t, train_mean=m)["brier_of_the_train_mean"] >= c["brier_of_own_mean"] - 1e-12
    # a critic between the two: worse than the own mean (0.125), better than the training mean (0.1875)
    mid = dd.calibration([0.6, 0.6, 0.6, 0.6], t, train_mean=0.25)
    assert mid["brier"] == pytest.approx((0.36 + 0.01 + 0.16 + 0.01) / 4)  # 0.135
    assert mid["brier_of_own_mean"] < mid["brier"] < mid["brier_of_the_train_mean"]
    # when the training mean is the held-out mean the two baselines agree
    same = dd.calibration(v, t, train_mean=0.5)
    assert same["brier_of_the_train_mean"] == pytest.approx(same["brier_of_own_mean"])
    assert "brier_of_the_train_mean" not in dd.calibration(v, t)  # no baseline given, none reported
    assert dd.calibration([], [], train_mean=0.2) == {"states": 0}


def test_the_report_labels_both_baselines_and_reads_old_critic_files():
    from experiments.dapo_step import CALIBRATION_COLUMNS, calibration_row
    assert "training states' mean" in CALIBRATION_COLUMNS[0] and "own mean" in CALIBRATION_COLUMNS[1]
    new = {"heldout": {"states": 58, "brier": 0.11691, "brier_of_the_train_mean": 0.1052,
                       "brier_of_own_mean": 0.10081}, "train": {"brier": 0.11874}}
    assert calibration_row(new) == [58, "0.1169", "0.1052", "0.1008", "0.1187"]
    # a critic_eval.json from before issue 32: its own-mean Brier was `brier_of_the_mean`, no training mean
    old = {"heldout": {"states": 58, "brier": 0.11691, "brier_of_the_mean": 0.10081},
           "train": {"brier": 0.11874}}
    assert calibration_row(old) == [58, "0.1169", "n/a", "0.1008", "0.1187"]
    assert calibration_row({"heldout": {"states": 0}, "train": {"states": 0}}) == [0, "n/a", "n/a", "n/a",
                                                                                   "n/a"]


def test_the_critic_stage_compares_with_its_training_states_mean(tmp_path, monkeypatch):
    """The critic stage of a tiny run: critic_eval.json's baseline is the mean MC target of the states the
    critic trained on (those of the problems not held out), applied to the held-out states."""
    import json

    from posttrain.methods.dapo_step import data as dd
    from posttrain.runner import run_recipe
    from tests.test_dapo_step import setup_folder
    r = setup_folder(tmp_path, monkeypatch)("pipeline.iterations=1", name="calib")
    run_recipe(r, show_progress=False, until="critic")
    ev = json.loads((r.run_dir / "critic_eval.json").read_text())
    targets = read_jsonl(r.run_dir / "targets.jsonl")
    held = dd.heldout_problems(4, 0.25, r.seed, 0)  # 4 prompts, method.critic.heldout 0.25
    train = [t["mc"] for t in targets if t["prompt_id"] not in held]
    heldout = [t["mc"] for t in targets if t["prompt_id"] in held]
    assert train and heldout and ev["heldout"]["states"] == len(heldout) and ev["train"]["states"] == len(train)
    m = float(np.mean(train))
    assert ev["heldout"]["train_mean"] == pytest.approx(m) and ev["train"]["train_mean"] == pytest.approx(m)
    assert ev["heldout"]["brier_of_the_train_mean"] == pytest.approx(np.mean((m - np.asarray(heldout)) ** 2))
    assert ev["heldout"]["brier_of_own_mean"] == pytest.approx(np.var(heldout))
    assert ev["train"]["brier_of_the_train_mean"] == pytest.approx(ev["train"]["brier_of_own_mean"])
