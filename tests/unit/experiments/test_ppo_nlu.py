"""The PPO-NLU report's statistics: per-condition means over seeds, paired ladder steps, seed-mean curves."""
import pytest

from experiments.ppo_nlu import mean_curves, summarize


def _row(task, seed, cond, acc, hist=None):
    r = {"task": task, "seed": seed, "condition": cond, "accuracy": acc, "invalid_rate": 0.0, "n": 200,
         "train_s": 10.0 if cond != "zero-shot" else None}
    if hist is not None:
        r["history"] = hist
    return r


def test_summarize_means_intervals_and_paired_steps():
    rows = [_row("sst2", 0, "zero-shot", 0.6), _row("sst2", 1, "zero-shot", 0.6),
            _row("sst2", 0, "SFT", 0.80), _row("sst2", 1, "SFT", 0.90),
            _row("sst2", 0, "PPO from SFT (ref SFT)", 0.85), _row("sst2", 1, "PPO from SFT (ref SFT)", 0.89)]
    cells, steps = summarize(rows)
    by = {c[1]: c for c in cells}
    assert by["zero-shot"][2] == "0.600 (equal on all 2 seeds)"
    # two seeds: t(1) = 12.706, sd = 0.0707 -> half-width 12.706 * 0.05 = 0.635
    assert by["SFT"][2] == "0.850 ± 0.635"
    assert by["SFT"][3] == "0.800 / 0.900"
    assert by["few-shot"][2] == "not run" and by["PPO from base"][2] == "not run"
    st = {s[1]: s for s in steps}
    # paired: +0.05 and -0.01 -> mean 0.02, one win of two
    assert st["PPO from SFT (ref SFT) − SFT"][2].startswith("0.020 ± ")
    assert st["PPO from SFT (ref SFT) − SFT"][3] == "1/2 (sign test p = 1.00)"
    assert "few-shot − zero-shot" not in st  # few-shot never ran


def test_summarize_single_seed_has_no_interval():
    cells, steps = summarize([_row("cb", 0, "SFT", 0.5), _row("cb", 0, "PPO from SFT (ref SFT)", 0.4)])
    assert [c for c in cells if c[1] == "SFT"][0][2] == "0.500"
    assert steps == [["cb", "PPO from SFT (ref SFT) − SFT", "-0.100", "0/1 (sign test p = 1.00)"]]


def test_mean_curves_average_seeds():
    h0 = [{"step": 8, "rollout/score": 0.0}, {"step": 16, "rollout/score": 1.0}, {"step": 16, "loss": 3.0}]
    h1 = [{"step": 8, "rollout/score": 0.5}, {"step": 16, "rollout/score": 0.0}]
    out = mean_curves([_row("sst2", 0, "PPO from SFT (ref SFT)", 0.8, h0), _row("sst2", 1,
                                                                                "PPO from SFT (ref SFT)", 0.8,
                                                                                h1),
                       _row("sst2", 0, "SFT", 0.8)], "rollout/score")
    assert list(out) == ["sst2 PPO from SFT (ref SFT)"]
    xs, ys = out["sst2 PPO from SFT (ref SFT)"]
    assert xs == [8, 16] and ys == pytest.approx([0.25, 0.5])
