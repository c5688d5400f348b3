"""INPO's online loop on the tiny model (METHODS.md section 3): its stages with resume, iterative DPO in
the same loop, a pointwise reward as the oracle."""
from __future__ import annotations

import json

import pytest

from tests.helpers import Killed, logged

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


@pytest.fixture
def make(tmp_path, in_tmp_path):
    from posttrain.config import load_recipe
    words = ["cats", "dogs", "rain", "tea", "snow", "maps"]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"Tell me about {w}."}) + "\n"
                                                    for w in words))
    (tmp_path / "inpo.yaml").write_text(RECIPE)

    def make(*overrides, name="inpo-pipe"):
        return load_recipe(tmp_path / "inpo.yaml", [f"output_dir={tmp_path / 'runs'}", f"name={name}",
                                                    *overrides])
    return make


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
        assert ((cut.run_dir / sub / "pairs.jsonl").read_text()
                == (straight.run_dir / sub / "pairs.jsonl").read_text())
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
