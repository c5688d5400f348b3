"""Multi-stage runs (posttrain/pipeline.py) on RSO with a tiny model: stages resume without redoing finished
work, a recipe change that invalidates a finished stage is refused by name, and iterations continue."""
import json

import pytest

from posttrain.config import load_recipe
from posttrain.errors import RecipeError
from posttrain.runner import read_history, run_recipe
from tests.helpers import Killed, logged

RECIPE = """
name: rso-pipe
seed: 0
method:
  name: rso
  num_samples: 4
  loss: dpo
  sampling: {num_candidates: 6, temperature: 1.0, top_k: 0, max_new_tokens: 10, batch_size: 12}
  reward: {name: "tests.rso_helpers:LetterReward"}
model: {name: tiny-llama, lora: {r: 4, alpha: 8}}
data:
  train: {path: prompts.jsonl}
  max_length: 64
train: {lr: 1e-3, micro_batch_size: 4, max_steps: 3, warmup_steps: 0, save_every: 1}
"""


@pytest.fixture
def make(tmp_path, in_tmp_path):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"Say something about {w}."}) + "\n"
                                                    for w in ["cats", "dogs", "rain", "tea", "snow", "maps"]))
    (tmp_path / "rso.yaml").write_text(RECIPE)

    def make(*overrides, name="rso-pipe"):
        return load_recipe(tmp_path / "rso.yaml", [f"output_dir={tmp_path / 'runs'}", f"name={name}",
                                                   *overrides])
    return make


@pytest.fixture
def sampler_calls(monkeypatch):
    """Counts the prompts the sampler decodes (one entry per call, the prompt ids it was given)."""
    from posttrain.generation import to_file
    calls = []
    real = to_file.sample

    def counting(model, tok, prompts, params, *, prompt_ids=None, **kw):
        calls.append(list(prompt_ids))
        return real(model, tok, prompts, params, prompt_ids=prompt_ids, **kw)
    monkeypatch.setattr(to_file, "sample", counting)
    return calls


@pytest.fixture
def stage_calls(monkeypatch):
    """Counts the runs of the pairs stage (make_pairs) and of the training stage (an engine built)."""
    from posttrain import runner
    from posttrain.methods import rso
    calls = {"pairs": 0, "train": 0}
    real_pairs, real_engine = rso.make_pairs, runner.make_engine

    def pairs(*a, **kw):
        calls["pairs"] += 1
        return real_pairs(*a, **kw)

    def engine(*a, **kw):
        calls["train"] += 1
        return real_engine(*a, **kw)
    monkeypatch.setattr(rso, "make_pairs", pairs)
    monkeypatch.setattr(runner, "make_engine", engine)
    return calls


def test_rerun_skips_finished_stages(make, sampler_calls, stage_calls):
    r = make()
    run_recipe(r, show_progress=False)
    assert sum(map(len, sampler_calls)) == 6
    assert stage_calls == {"pairs": 1, "train": 1}  # the spies see the stages run
    state = json.loads((r.run_dir / "pipeline.json").read_text())["stages"]
    assert {k: v["status"] for k, v in state.items()} == {"sample": "done", "pairs": "done", "train": "done"}
    assert all(v["wall_time_s"] >= 0 for v in state.values())  # each stage's time is recorded
    sampler_calls.clear()
    pairs = (r.run_dir / "pairs.jsonl").read_text()
    s = run_recipe(make(), show_progress=False)
    assert sampler_calls == [] and s["stages"]["pairs"]["pairs"] > 0
    assert (r.run_dir / "pairs.jsonl").read_text() == pairs
    # every stage was skipped, not redone: a rerun of the (deterministic) pairs stage would rewrite the
    # same file, and a rerun of training would resume its last checkpoint and step no more, so neither
    # the file nor the history tells; the calls do
    assert stage_calls == {"pairs": 1, "train": 1}


def test_killed_inside_sampling_resumes_only_the_missing_prompts(make, monkeypatch):
    from posttrain.generation import to_file
    from posttrain.generation.sampler import sample as real_sample
    straight = make(name="straight")
    run_recipe(straight, show_progress=False)

    def dying(model, tok, prompts, params, *, on_batch=None, **kw):
        def write(batch):  # the kill comes right after the first prompt's 6 samples are on disk
            on_batch(batch)
            raise Killed
        return real_sample(model, tok, prompts, params, on_batch=write, **kw)
    monkeypatch.setattr(to_file, "sample", dying)
    cut = make(name="cut")
    with pytest.raises(Killed):
        run_recipe(cut, show_progress=False)
    state = json.loads((cut.run_dir / "pipeline.json").read_text())["stages"]
    assert state["sample"]["status"] == "running" and "pairs" not in state
    counted = []

    def counting(model, tok, prompts, params, *, prompt_ids=None, **kw):
        counted.append(list(prompt_ids))
        return real_sample(model, tok, prompts, params, prompt_ids=prompt_ids, **kw)
    monkeypatch.setattr(to_file, "sample", counting)
    run_recipe(cut, show_progress=False)
    assert counted == [[1, 2, 3, 4, 5]]  # prompt 0 was on disk
    assert (cut.run_dir / "pairs.jsonl").read_text() == (straight.run_dir / "pairs.jsonl").read_text()
    assert logged(cut.run_dir) == logged(straight.run_dir)


def test_killed_inside_training_resumes_from_its_checkpoint(make, sampler_calls, monkeypatch):
    from posttrain.engine import Engine
    straight = make(name="straight")
    run_recipe(straight, show_progress=False)
    sampler_calls.clear()
    cut = make(name="cut")
    real_step = Engine.train_step

    def dying_step(self, batches):
        if self.step == 2:
            raise Killed
        return real_step(self, batches)
    monkeypatch.setattr(Engine, "train_step", dying_step)
    with pytest.raises(Killed):
        run_recipe(cut, show_progress=False)
    assert sum(map(len, sampler_calls)) == 6
    stepped = []

    def counting_step(self, batches):
        stepped.append(self.step + 1)
        return real_step(self, batches)
    monkeypatch.setattr(Engine, "train_step", counting_step)
    run_recipe(cut, show_progress=False)
    assert sum(map(len, sampler_calls)) == 6  # the finished data stages were not redone
    # training went on from its step-2 checkpoint: only step 3 ran (a restart from step 0 would log the
    # same numbers, the run being deterministic, so the comparison below alone could not tell)
    assert stepped == [3]
    assert logged(cut.run_dir) == logged(straight.run_dir)


def test_an_invalidating_change_names_the_stage_and_key(make, sampler_calls):
    run_recipe(make(), show_progress=False)
    with pytest.raises(RecipeError, match=r"stage 'sample' finished with method.sampling.temperature=1.0.*"
                                          r"0.7.*--restart-from sample"):
        run_recipe(make("method.sampling.temperature=0.7"), show_progress=False)
    with pytest.raises(RecipeError, match=r"stage 'pairs' finished with method.num_samples=4"):
        run_recipe(make("method.num_samples=3"), show_progress=False)
    with pytest.raises(RecipeError, match=r"stage 'train' finished with train.lr"):
        run_recipe(make("train.lr=0.01"), show_progress=False)
    sampler_calls.clear()
    run_recipe(make("train.save_every=2"), show_progress=False)  # watching keys do not invalidate
    s = run_recipe(make("method.num_samples=3"), restart_from="pairs", show_progress=False)
    assert sampler_calls == []  # samples kept, pairs and training redone
    assert s["stages"]["pairs"]["accepted"] <= 6 * 3
    with pytest.raises(RecipeError, match="no such stage"):
        run_recipe(make("method.num_samples=3"), restart_from="scoring", show_progress=False)


def test_two_iterations_equal_one_iteration_then_a_second(make, sampler_calls):
    """Iteration 2 samples from iteration 1's final model (its adapter merged, a fresh one on top)."""
    both = make("pipeline.iterations=2", name="both")
    s = run_recipe(both, show_progress=False)
    assert len(s["iterations"]) == 2 and (both.run_dir / "iter-2" / "pairs.jsonl").is_file()
    one = make(name="stepwise")
    run_recipe(one, show_progress=False)
    sampler_calls.clear()
    run_recipe(make("pipeline.iterations=2", name="stepwise"), show_progress=False)
    assert sum(map(len, sampler_calls)) == 6  # only iteration 2 sampled
    for sub in ("", "iter-2"):
        assert ((one.run_dir / sub / "pairs.jsonl").read_text()
                == (both.run_dir / sub / "pairs.jsonl").read_text())
        assert logged(one.run_dir / sub) == logged(both.run_dir / sub)
    # iteration 2's samples come from another model than iteration 1's
    src = [json.loads((both.run_dir / sub / "samples.jsonl.source.json").read_text())["weights"]
           for sub in ("", "iter-2")]
    assert src[0] != src[1]


@pytest.mark.parametrize("optimizer", ["fresh", "carry"])
def test_iteration_optimizer_and_reference_previous(make, optimizer):
    """fresh: iteration 2 restarts the schedule; carry: it goes on with the same schedule (and moments).
    DPO against `previous` (iteration 2's start) starts at log 2; against `start` (the run's) it does not."""
    import math

    from posttrain.schedule import lr_lambda
    r = make("pipeline.iterations=2", f"pipeline.optimizer={optimizer}", "method.reference=previous",
             "train.schedule=cosine", name=optimizer)
    run_recipe(r, show_progress=False)
    one, two = read_history(r.run_dir), read_history(r.run_dir / "iter-2")
    if optimizer == "fresh":
        assert two[0]["lr"] == one[0]["lr"]
    else:
        f = lr_lambda(r.train, 6, 0)
        assert [h["lr"] for h in one + two] == pytest.approx([1e-3 * f(k) for k in range(1, 7)])
    assert two[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at the start
    if optimizer == "carry":
        return
    start = make("pipeline.iterations=2", "method.reference=start", name=f"{optimizer}-start")
    run_recipe(start, show_progress=False)
    assert abs(read_history(start.run_dir / "iter-2")[0]["loss"] - math.log(2)) > 1e-4


def test_export_of_an_iterated_run_is_its_last_iteration(make, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from posttrain.export import export_run
    from posttrain.models import reference_model
    from posttrain.models.start import load_iteration
    r = make("pipeline.iterations=2", name="two")
    run_recipe(r, show_progress=False)
    out = export_run(r.run_dir, tmp_path / "export", merge=True)
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    # the start of a (would-be) third iteration: both adapters merged, a fresh one on top, switched off
    nxt, _ = load_iteration(r, 2)
    first, _ = load_iteration(r, 0)
    ids = torch.tensor([[1, 5, 9, 13, 2, 40, 7]])
    with torch.no_grad(), reference_model(nxt) as ref, reference_model(first) as base:
        want, got, start = (ref(input_ids=ids).logits, exported(input_ids=ids).logits,
                            base(input_ids=ids).logits)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, start, atol=1e-3)  # two iterations of training are in it
