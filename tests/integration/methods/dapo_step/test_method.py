"""Step-level DAPO end to end on the tiny model (METHODS.md section 5): the actor objective, the
advantages and critic stages, and the six-stage pipeline with resume."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from posttrain.data.template import encode_prompt
from posttrain.files import read_jsonl, write_jsonl
from posttrain.methods.dapo_step import data as dd
from posttrain.methods.dapo_step.method import DAPOStepObjective, collate_states
from tests.helpers import Killed, logged


def test_the_actor_objective_equals_the_formula_on_an_independent_forward():
    from posttrain.models import load_model
    model, tok = load_model("tiny-llama", seed=3)
    feats = [{"context": [5, 6, 7], "actions": [[8, 9], [10]], "adv": [0.3, -0.3], "logp_ref": [-20.0, -9.0]},
             {"context": [11, 12], "actions": [[13, 14, 15], [16, 17]], "adv": [0.05, -0.05],
              "logp_ref": [-30, -21]}]
    b = collate_states(feats, tok.pad_token_id)
    beta = 0.05
    loss, metrics = DAPOStepObjective(beta)(model, b)
    want = 0.0
    for f in feats:
        for a, adv, ref in zip(f["actions"], f["adv"], f["logp_ref"]):
            ids = torch.tensor([f["context"] + a])
            logp = torch.log_softmax(model(ids).logits[0].double(), -1)
            lp = sum(logp[len(f["context"]) + k - 1, t] for k, t in enumerate(a))
            want += 0.5 * (adv / beta - (lp.item() - ref)) ** 2
    assert loss.item() == pytest.approx(want, rel=1e-5)
    assert metrics["target_log_ratio"].item() == pytest.approx(sum(x for f in feats for x in f["adv"]) / beta)


# ---- the pipeline ---------------------------------------------------------------------------------
RECIPE = """
name: dapo-pipe
seed: 0
method:
  name: dapo_step
  beta: 0.05
  min_spread: 0.0
  keep: 2
  completions: 3
  sampling: {num_candidates: 4, temperature: 1.0, top_k: 0, max_new_tokens: 8, batch_size: 16}
  reward: {name: "tests.rso_helpers:EvenLetterReward"}
  critic: {lr: 1.0e-3, max_steps: 2, micro_batch_size: 4, heldout: 0.25}
model: {name: tiny-llama, lora: {r: 4, alpha: 8}}
data:
  train: {path: prompts.jsonl}
  max_length: 96
pipeline: {iterations: 2}
train: {lr: 1e-3, micro_batch_size: 2, max_steps: 2, warmup_steps: 0, save_every: 1}
"""
OUTPUTS = ("samples.jsonl", "states.jsonl", "rollouts.jsonl", "targets.jsonl", "actions.jsonl")


def setup_folder(folder, monkeypatch):
    from posttrain.config import load_recipe
    monkeypatch.setenv("POSTTRAIN_CACHE", str(folder / "cache"))
    monkeypatch.chdir(folder)
    words = ["cats", "dogs", "rain", "tea"]
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"Tell me about {w}.", "answer": "1"})
                                                  + "\n" for w in words))
    (folder / "dapo.yaml").write_text(RECIPE)
    # the tiny random model rarely samples a newline: treat every third token id as one, so responses have
    # several steps and states have depth > 0
    monkeypatch.setattr(dd, "newline_tokens", lambda tok: frozenset(range(0, len(tok), 3)))

    def make(*overrides, name="dapo-pipe"):
        return load_recipe(folder / "dapo.yaml", [f"output_dir={folder / 'runs'}", f"name={name}",
                                                  *overrides])
    return make


@pytest.fixture
def make(tmp_path, monkeypatch):
    return setup_folder(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """One uninterrupted two-iteration run, shared by the resume tests."""
    from posttrain.runner import run_recipe
    with pytest.MonkeyPatch.context() as m:
        r = setup_folder(tmp_path_factory.mktemp("straight"), m)(name="straight")
        run_recipe(r, show_progress=False)
    return r


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_dapo_step_pipeline_states_are_exact_prefixes_and_rollouts_continue_them(make):
    from posttrain.runner import run_recipe
    r = make("pipeline.iterations=1")
    s = run_recipe(r, show_progress=False)
    d = r.run_dir
    samples = {(x["prompt_id"], x["sample_index"]): x["token_ids"] for x in rows(d / "samples.jsonl")}
    states = rows(d / "states.jsonl")
    assert states and {x["depth"] for x in states} >= {0, 1, 2}
    for st in states:  # a state is the first `depth` steps of a kept response, as its exact ids
        resp = samples[(st["prompt_id"], st["response"])]
        assert resp[:len(st["prefix_ids"])] == st["prefix_ids"]
    # every problem contributes one k = 0 state, shared by its responses
    assert sorted(x["prompt_id"] for x in states if x["depth"] == 0) == [0, 1, 2, 3]
    by_state = {x["state_id"]: x for x in states}
    for x in rows(d / "rollouts.jsonl"):  # a rollout's prompt id is its state's id
        assert x.get("prefix_ids", []) == by_state[x["prompt_id"]]["prefix_ids"]
    targets = rows(d / "targets.jsonl")
    assert len(targets) == len(states) and all(0 <= t["mc"] <= 1 for t in targets)
    acts = rows(d / "actions.jsonl")
    stats = json.loads((d / "dapo_stats.json").read_text())
    assert stats["states_kept"] == len(acts) and sum(len(a["actions"]) for a in acts) == stats["actions"]
    median, p90, top = stats["spread_quantiles"]  # the critic's within-state discrimination is reported
    assert 0 <= median <= p90 <= top
    critic = json.loads((d / "critic_eval.json").read_text())
    assert critic["heldout"]["states"] > 0 and critic["train"]["states"] > 0
    assert (d / "critic" / "checkpoints").is_dir()
    first = logged(d)[0]
    # the actor starts at pi_ref, so the log-ratio is 0 and the loss is 1/2 (A/beta)^2 per candidate
    assert first["log_ratio"] == pytest.approx(0.0, abs=1e-4)
    assert s["data"]["actions"] > 0


class SpyCritic(torch.nn.Module):
    """A critic that records every sequence it is given (unpadded) and whose logit is a known function of
    the sequence: its length and its last token, so the state alone is valued differently from the state
    followed by a candidate."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # critic_values reads the device from a parameter
        self.seen: list[list[int]] = []

    @staticmethod
    def logit(seq):
        return 0.05 * len(seq) + 0.1 * (seq[-1] % 7) - 2.0

    def forward(self, input_ids, attention_mask, output):
        assert output == "last_values"
        rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids, attention_mask)]
        self.seen += rows
        return torch.tensor([self.logit(r) for r in rows])


@pytest.mark.parametrize("terminal_value", ["reward", "critic"])
def test_the_advantages_stage_values_each_candidate_on_the_state_followed_by_the_candidate(
        make, monkeypatch, tmp_path, terminal_value):
    """A(s, a_i) = V(s∘a_i) - mean_j V(s∘a_j): the critic is given prompt + state prefix + candidate step,
    never the state alone; a terminal candidate is valued by its reward under `terminal_value: reward`."""
    from types import SimpleNamespace

    from posttrain.config import validate_section
    from posttrain.methods import get_method
    from posttrain.methods.base import recipe_records
    from posttrain.methods.dapo_step import method as ds
    from posttrain.models import load_model
    # 2: padded batches
    recipe = make("method.critic.batch_size=2", f"method.terminal_value={terminal_value}")
    params = validate_section(get_method("dapo_step").params, recipe.method, "method")
    model, tok = load_model("tiny-llama", seed=5)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    states = [{"state_id": 0, "prompt_id": 0, "prefix_ids": []},
              {"state_id": 1, "prompt_id": 1, "prefix_ids": [301, 302]},
              {"state_id": 2, "prompt_id": 2, "prefix_ids": [401]},
              {"state_id": 3, "prompt_id": 0, "prefix_ids": [201, 202]}]  # prompt 0 again, one step deeper

    def act(ids, terminal=False, reward=None):
        return {"ids": ids, "terminal": terminal, "reward": reward, "count": 1, "correct": int(reward == 1.0)}
    targets = [{"state_id": 0, "prompt_id": 0, "mc": 0.5, "actions": [act([201, 202]), act([203]), act([204,
                                                                                                        205,
                                                                                                        206])]},
               {"state_id": 1, "prompt_id": 1, "mc": 0.5, "actions": [act([303, 304]), act([305, end], True,
                                                                                           1.0)]},
               # one candidate: never valued
               {"state_id": 2, "prompt_id": 2, "mc": 0.0, "actions": [act([402])]},
               {"state_id": 3, "prompt_id": 0, "mc": 1.0, "actions": [act([501]), act([502, 503])]}]
    folder = tmp_path / "iter"
    folder.mkdir()
    write_jsonl(folder / "states.jsonl", states)
    write_jsonl(folder / "targets.jsonl", targets)
    spy = SpyCritic()
    monkeypatch.setattr(ds, "load_critic", lambda recipe, params, ctx: (spy, tok))
    ctx = SimpleNamespace(dir=folder, iteration=0, policy=lambda: (model, tok), progress=False)
    out = ds.make_advantages(recipe, params, ctx)

    records = recipe_records(recipe)
    prompt = {pid: encode_prompt(tok, records[pid].prompt) for pid in range(3)}
    assert tok.decode(prompt[0]).endswith("Tell me about cats.<|im_end|>\n<|im_start|>assistant\n")
    by_state = {s["state_id"]: s for s in states}

    def context(t):
        return prompt[t["prompt_id"]] + by_state[t["state_id"]]["prefix_ids"]
    critic_valued = [(t, j) for t in targets if len(t["actions"]) >= 2 for j, a in enumerate(t["actions"])
                     if not (a["terminal"] and terminal_value == "reward")]
    expected = [context(t) + t["actions"][j]["ids"] for t, j in critic_valued]
    assert len(expected) == (6 if terminal_value == "reward" else 7)
    # the critic saw exactly prompt + state prefix + candidate step, in order, nothing else (not the states)
    assert spy.seen == expected
    assert out["critic_values"] == len(expected)

    def v(seq):
        return 1 / (1 + np.exp(-SpyCritic.logit(seq)))
    kept = {r["state_id"]: r for r in rows(folder / "actions.jsonl")}
    assert sorted(kept) == [0, 1, 3]  # state 2 (one candidate) dropped; min_spread 0 keeps the rest
    for t in targets:
        if t["state_id"] not in kept:
            continue
        want = [a["reward"] if (a["terminal"] and terminal_value == "reward") else v(context(t) + a["ids"])
                for a in t["actions"]]
        got = kept[t["state_id"]]["actions"]
        assert [a["ids"] for a in got] == [a["ids"] for a in t["actions"]]
        assert [a["value"] for a in got] == pytest.approx(want, abs=1e-6)  # float32 sigmoid
        assert [a["adv"] for a in got] == pytest.approx([w - np.mean(want) for w in want], abs=1e-6)
        for a, val in zip(t["actions"], want):  # the state alone would have been valued otherwise
            assert abs(val - v(context(t))) > 1e-3
        # pi_ref's log-prob of each candidate is conditioned on the same context
        for a, g in zip(t["actions"], got):
            ids = context(t) + a["ids"]
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            n = len(context(t))
            assert g["logp_ref"] == pytest.approx(sum(logp[n + k - 1, x].item() for k,
                                                      x in enumerate(a["ids"])),
                                                  rel=1e-4)
    terminal = kept[1]["actions"][1]
    if terminal_value == "reward":
        assert terminal["value"] == 1.0  # its own 0/1 reward, whatever the critic would say
    else:
        assert terminal["value"] == pytest.approx(v(prompt[1] + [301, 302, 305, end]), abs=1e-6)


@pytest.mark.parametrize("where", ["sample", "states", "rollouts", "critic", "advantages", "train"])
def test_dapo_step_resumes_inside_any_stage_with_identical_outputs(straight, make, monkeypatch, where):
    from posttrain.runner import run_recipe
    cut = make(name="cut")
    it2 = "iter-2"
    with monkeypatch.context() as m:
        kill(m, where, it2)
        with pytest.raises(Killed):
            run_recipe(cut, show_progress=False)
    partial = {"sample": "samples.jsonl", "rollouts": "rollouts.jsonl",
               "critic": "critic/checkpoints"}.get(where)
    if partial:  # the kill left work behind that the rerun resumes
        assert (cut.run_dir / it2 / partial).exists()
    run_recipe(cut, show_progress=False)
    for sub in ("", it2):
        for name in OUTPUTS:
            assert ((cut.run_dir / sub / name).read_text()
                    == (straight.run_dir / sub / name).read_text()), (sub, name)
        assert logged(cut.run_dir / sub) == logged(straight.run_dir / sub)
        assert logged(cut.run_dir / sub / "critic") == logged(straight.run_dir / sub / "critic")


def kill(monkeypatch, where, it2):
    """Make the run die in iteration 2, inside stage `where`."""
    from posttrain.engine import Engine
    from posttrain.methods.dapo_step import method as ds
    if where in ("sample", "rollouts"):
        import posttrain.generation.to_file as tf
        real = tf.sample
        calls = Counter()

        def dying(*a, **k):
            on_batch = k["on_batch"]

            def cb(batch):
                calls["n"] += 1
                on_batch(batch)
                if calls["n"] == 2:  # after the second prompt's samples reach the file
                    raise Killed
            k["on_batch"] = cb
            return real(*a, **k)
        target = ds if where == "sample" else dd
        fn = "sample_candidates" if where == "sample" else "make_rollouts"
        real_stage = getattr(target, fn)

        def stage(*a, **k):
            if a[2].iteration == 1:
                monkeypatch.setattr(tf, "sample", dying)
            return real_stage(*a, **k)
        monkeypatch.setattr(target, fn, stage)
    elif where == "states":
        real = dd.make_states

        def dying(recipe, params, ctx, f):
            if ctx.iteration == 1:
                write_jsonl(ctx.dir / "states.jsonl", [{"torn": True}])
                raise Killed
            return real(recipe, params, ctx, f)
        monkeypatch.setattr(dd, "make_states", dying)
    elif where == "advantages":
        real = dd.score_states

        def dying(*a):
            if dying.n == 1:  # the second call: iteration 2
                raise Killed
            dying.n += 1
            return real(*a)
        dying.n = 0
        monkeypatch.setattr(dd, "score_states", dying)
    else:
        real_step = Engine.train_step
        folder = "critic" if where == "critic" else None

        def dying(self, batches):
            here = str(self.run_dir)
            if self.step == 1 and it2 in here and (folder is None) == ("critic" not in here):
                raise Killed
            return real_step(self, batches)
        monkeypatch.setattr(Engine, "train_step", dying)


# ---- the critic's calibration and its constant baselines (issue 32) --------------------------------


def test_the_critic_stage_compares_with_its_training_states_mean(tmp_path, monkeypatch):
    """The critic stage of a tiny run: critic_eval.json's baseline is the mean MC target of the states the
    critic trained on (those of the problems not held out), applied to the held-out states."""
    import json

    from posttrain.methods.dapo_step import data as dd
    from posttrain.runner import run_recipe
    r = setup_folder(tmp_path, monkeypatch)("pipeline.iterations=1", name="calib")
    run_recipe(r, show_progress=False, until="critic")
    ev = json.loads((r.run_dir / "critic_eval.json").read_text())
    targets = read_jsonl(r.run_dir / "targets.jsonl")
    held = dd.heldout_problems(4, 0.25, r.seed, 0)  # 4 prompts, method.critic.heldout 0.25
    train = [t["mc"] for t in targets if t["prompt_id"] not in held]
    heldout = [t["mc"] for t in targets if t["prompt_id"] in held]
    assert (train and heldout and ev["heldout"]["states"] == len(heldout)
            and ev["train"]["states"] == len(train))
    m = float(np.mean(train))
    assert ev["heldout"]["train_mean"] == pytest.approx(m) and ev["train"]["train_mean"] == pytest.approx(m)
    assert ev["heldout"]["brier_of_the_train_mean"] == pytest.approx(np.mean((m - np.asarray(heldout)) ** 2))
    assert ev["heldout"]["brier_of_own_mean"] == pytest.approx(np.var(heldout))
    assert ev["train"]["brier_of_the_train_mean"] == pytest.approx(ev["train"]["brier_of_own_mean"])
