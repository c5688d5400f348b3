"""Bradley-Terry reward models on the tiny model: the scalar head, training on a separable set,
save/load, and the reward / pairwise interfaces built on them."""
import math

import pytest
import torch

from posttrain.config import load_recipe
from posttrain.data.collate import pad_collate
from posttrain.errors import ModelError
from posttrain.models.value_head import ScalarHeadModel, find_scalar_head_folder, load_scalar_head_model
from posttrain.rewards import get_reward
from posttrain.rewards.pairwise import PairwiseReward
from posttrain.rewards.reward_model import RewardModelReward
from posttrain.runner import read_history, run_recipe
from tests.helpers import THINGS, random_features, tiny_llama, write_pairs


def test_last_values_reads_the_last_real_token_and_ignores_padding():
    model = ScalarHeadModel(tiny_llama()).eval()
    feats = random_features(5, seed=4)
    batch = pad_collate(feats, 0)
    with torch.no_grad():
        batched = model.last_values(batch["input_ids"], batch["attention_mask"])
        alone = torch.cat([model.last_values(*(lambda b: (b["input_ids"],
                                                          b["attention_mask"]))(pad_collate([f], 0)))
                           for f in feats])
        per_pos = model.values(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(batched, alone, atol=1e-5)
    last = batch["attention_mask"].sum(-1) - 1
    assert torch.allclose(batched, per_pos[torch.arange(5), last], atol=1e-6)


RECIPE = """
name: rm
seed: 0
method: {{name: reward_model}}
model: {{name: tiny-llama{lora}}}
data:
  train: {{path: train.jsonl}}
  eval: {{path: eval.jsonl}}
  max_length: 96
train: {{lr: 3e-3, micro_batch_size: 8, max_steps: {steps}, warmup_steps: 0, schedule: constant,
        eval_every: {steps}, save_every: {steps}}}
"""


@pytest.mark.parametrize("lora", [False, True])
def test_reward_model_learns_a_separable_preference_and_reloads(tmp_path, monkeypatch, lora):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    write_pairs(tmp_path / "train.jsonl", THINGS[:16])
    write_pairs(tmp_path / "eval.jsonl", THINGS[16:])
    p = tmp_path / "rm.yaml"
    p.write_text(RECIPE.format(steps=30,
                               lora=", lora: {r: 8, alpha: 16, targets: all-linear}" if lora else ""))
    monkeypatch.chdir(tmp_path)
    r = load_recipe(p, [f"output_dir={tmp_path / 'runs'}"])
    run_recipe(r, show_progress=False)
    hist = read_history(r.run_dir)
    evals = [h for h in hist if "eval/reward/accuracy" in h]
    assert evals and evals[-1]["eval/reward/accuracy"] > 0.9, evals
    assert hist[-1]["loss"] < hist[0]["loss"]
    # load by the run folder; the loaded model scores held-out pairs the right way round
    rm = get_reward("reward_model", path=str(r.run_dir))
    prompts = [f"Tell me how you feel about {t}." for t in THINGS[16:]]
    good = rm.score(prompts, [f"I really like {t}." for t in THINGS[16:]])
    bad = rm.score(prompts, [f"I hate {t}, sadly." for t in THINGS[16:]])
    assert sum(g > b for g, b in zip(good, bad)) >= 3
    # pairwise oracle from that reward model: P = sigma(r1 - r2); RSO's pointwise reward = r - r_baseline
    pw = PairwiseReward(oracle=rm)
    probs = pw.compare(prompts, [f"I really like {t}." for t in THINGS[16:]],
                       [f"I hate {t}, sadly." for t in THINGS[16:]])
    assert probs == pytest.approx([1 / (1 + math.exp(b - g)) for g, b in zip(good, bad)], rel=1e-5)
    logits = pw.score(prompts, [f"I really like {t}." for t in THINGS[16:]],
                      [{"baseline": f"I hate {t}, sadly."} for t in THINGS[16:]])
    assert logits == pytest.approx([max(min(g - b, 10), -10) for g, b in zip(good, bad)], abs=1e-4)


def test_loading_errors(tmp_path):
    with pytest.raises(ModelError, match="no reward/value model"):
        find_scalar_head_folder(tmp_path)
    model = ScalarHeadModel(tiny_llama())
    model.save_pretrained(tmp_path)  # no base_model in its info
    with pytest.raises(ModelError, match="base_model"):
        load_scalar_head_model(tmp_path)


def test_judge_is_order_symmetric(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    from posttrain.models import load_model
    judge, tok = load_model("tiny-llama")
    pw = PairwiseReward(judge_model=judge.eval(), judge_tokenizer=tok)
    prompts, a, b = ["What is 2+2?"] * 2, ["4", "five"], ["five", "4"]
    p_ab = pw.compare(prompts, a, b)
    p_ba = pw.compare(prompts, b, a)
    # averaging both orders makes P(a > b) + P(b > a) = 1 exactly, whatever the judge's position bias
    assert [x + y for x, y in zip(p_ab, p_ba)] == pytest.approx([1.0, 1.0], abs=1e-6)
    assert all(0 < x < 1 for x in p_ab)
    with pytest.raises(ValueError, match="exactly one"):
        PairwiseReward()
    with pytest.raises(Exception, match="baseline"):
        pw.score(prompts, a, [{}, {}])


def test_reward_model_reward_uses_prompt_messages(tmp_path):
    from posttrain.models import load_model
    lm, tok = load_model("tiny-llama")
    rm = RewardModelReward(path=None, model=ScalarHeadModel(lm), tokenizer=tok)
    plain = rm.score(["hi"], ["hello"])
    with_system = rm.score(["hi"], ["hello"], [{"prompt_messages": [{"role": "system",
                                                                     "content": "Be terse."},
                                                                    {"role": "user", "content": "hi"}]}])
    assert plain != with_system
