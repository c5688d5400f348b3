"""PPO on a tiny model: the reward goes up, LoRA leaves the base untouched, the reference is the
adapter-disabled model, and the rollout buffer is laid out as the objective expects."""
import json

import pytest
import torch

from posttrain.checkpoints import latest_checkpoint
from posttrain.config import load_recipe
from posttrain.errors import RecipeError
from posttrain.runner import read_history
from tests.helpers import engine_for
from tests.helpers import logged as _logged

RECIPE = """
name: ppo
seed: 0
method:
  name: ppo
  reward: {{name: "tests.rso_helpers:VowelReward"}}
  rollout_batch: 8
  ppo_epochs: 2
  max_new_tokens: 8
  kl_coef: {kl}
  vf_coef: 0.1
model: {{name: tiny-llama, lora: {{r: 8, alpha: 16, targets: all-linear}}}}
data:
  train: {{path: prompts.jsonl}}
  max_length: 64
train: {{lr: {lr}, micro_batch_size: 4, max_steps: {steps}, warmup_steps: 0, schedule: constant,
        save_every: {steps}}}
"""


@pytest.fixture
def recipe(tmp_path, in_tmp_path):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"Say a word about {w}."}) + "\n"
                                                    for w in ["cats", "dogs", "rain", "tea", "snow", "maps",
                                                              "bees", "owls", "figs", "jam"]))

    def make(steps=4, lr=1e-2, kl=0.05, extra=()):
        p = tmp_path / "ppo.yaml"
        p.write_text(RECIPE.format(steps=steps, lr=lr, kl=kl))
        return load_recipe(p, [f"output_dir={tmp_path / 'runs'}", *extra])
    return make


def vowel_structured_(lm, tok, scale: float = 2.0) -> None:
    """Give the random tiny model's (tied) embeddings the structure a pretrained model has: tokens that
    spell with many vowels share a direction. Then "more vowels" is one direction of the hidden state
    away, as a reward should be for a real model; in a purely random model no reward on text is
    learnable from a few hundred samples (each of the 49k tokens would have to be found one by one)."""
    with torch.no_grad():
        emb = lm.get_input_embeddings().weight
        pieces = tok.convert_ids_to_tokens(list(range(emb.shape[0])))
        f = torch.tensor([sum(c in "aeiou" for c in (t or "")) / max(len(t or ""), 1) for t in pieces])
        v = torch.randn(emb.shape[1], generator=torch.Generator().manual_seed(0))
        emb.add_(scale * (f - f.mean())[:, None] * (v / v.norm())[None, :])


def test_ppo_raises_a_learnable_reward(recipe):
    from posttrain.checkpoints import latest_checkpoint
    from posttrain.config import validate_section
    from posttrain.methods import get_method
    from posttrain.models.start import load_policy
    from posttrain.runner import make_engine
    from posttrain.seeding import seed_everything
    # a two-token contextual bandit: trivially learnable, and it still runs GAE across tokens
    r = recipe(steps=80, lr=5e-3, extra=["method.max_new_tokens=2"])
    spec = get_method("ppo")
    seed_everything(0)  # the LoRA init draws from the global RNG
    lm, tok = load_policy(r)
    vowel_structured_(lm, tok, scale=3.0)
    built = spec.build(r, validate_section(spec.params, r.method, "method"), lm, tok)
    make_engine(r, built, lm, tok, show_progress=False).train()
    hist = read_history(r.run_dir)
    scores = [h["rollout/score"] for h in hist]
    # each iteration's 4 steps log the same rollout score; small-model PPO is noisy (rises, then
    # wanders), so compare the first rollout with the mean of all later ones (+0.1 to +0.2 over the
    # seeds 0, 1, 3, 4 tried)
    first, later = scores[0], sum(scores[4:]) / len(scores[4:])
    assert later > first + 0.05, ([round(x, 3) for x in scores[::4]], hist[-1]["rollout/kl"])
    for key in ("policy/clipfrac", "policy/approx_kl", "value/error", "policy/entropy", "rollout/kl",
                "rollout/beta", "rollout/response_length", "rollout/explained_variance"):
        assert key in hist[-1], key
    state = torch.load(latest_checkpoint(r.run_dir) / "rollout.pt", weights_only=True)["hook"]
    assert state["iteration"] == 19 and state["kl"]["kind"] == "adaptive"
    assert not (r.run_dir / "kl_controller.json").exists()  # no state outside the checkpoint


def test_lora_ppo_keeps_the_base_and_the_reference_is_the_adapter_off_model(recipe):
    from posttrain.config import validate_section
    from posttrain.methods import get_method
    from posttrain.models import reference_model
    from posttrain.models.start import load_policy
    from posttrain.runner import make_engine
    r = recipe(steps=4, lr=5e-2)
    spec = get_method("ppo")
    params = validate_section(spec.params, r.method, "method")
    lm, tok = load_policy(r)
    base = {k: v.clone() for k, v in lm.named_parameters() if "lora_" not in k}
    built = spec.build(r, params, lm, tok)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        before = built.model.lm(input_ids=ids).logits
    make_engine(r, built, lm, tok, show_progress=False).train()
    after_base = dict(lm.named_parameters())
    assert all(torch.equal(after_base[k], v) for k, v in base.items())  # base never updated
    assert any(not torch.equal(p, torch.zeros_like(p)) for k, p in lm.named_parameters() if "lora_B" in k)
    with torch.no_grad():
        trained = built.model.lm(input_ids=ids).logits
        with reference_model(built.model.lm) as ref:
            reference = ref(input_ids=ids).logits
    assert not torch.allclose(trained, before, atol=1e-4)  # the policy moved
    assert torch.allclose(reference, before, atol=1e-6)  # the reference is the starting model


def test_buffer_layout(recipe):
    from posttrain.config import validate_section
    from posttrain.methods import get_method
    from posttrain.models.start import load_policy
    r = recipe()
    spec = get_method("ppo")
    lm, tok = load_policy(r)
    built = spec.build(r, validate_section(spec.params, r.method, "method"), lm, tok)
    buf, _ = built.rollout.rollout(built.model, 0)
    assert len(buf) == 8
    for f in buf:
        n = len(f["input_ids"])
        resp = [i for i, lab in enumerate(f["labels"]) if lab != -100]
        assert all(len(f[k]) == n for k in ("old_logps", "old_values", "advantages", "returns"))
        assert resp and resp == list(range(resp[0], n))  # the response is the tail
        assert all(f["old_logps"][i] == 0 for i in range(resp[0]))  # nothing before the response
        assert all(f["old_logps"][i] < 0 for i in resp)
    batch = built.collate(buf[:4])
    loss, metrics = built.objective(built.model, batch)
    assert built.objective.units(batch) == sum(lab != -100 for f in buf[:4] for lab in f["labels"])
    assert torch.isfinite(loss)


class RecordingReward:
    """Wraps a reward and keeps the scores it gave, in row order."""

    def __init__(self, inner):
        self.inner, self.name, self.scores = inner, inner.name, []

    def score(self, prompts, completions, meta=None):
        out = self.inner.score(prompts, completions, meta)
        self.scores.extend(out)
        return out


def test_rollout_wiring_matches_an_independent_recomputation(recipe):
    """The buffer's old log-probs, KL, values, returns and advantages, recomputed here from plain forwards
    of the policy and of the reference (adapter off) and a GAE loop written out: they match, and the two
    wirings that are easy to get wrong (old and reference log-probs swapped; values one position late)
    do not, so the check can tell them apart."""
    from posttrain.config import validate_section
    from posttrain.methods import get_method
    from posttrain.models import reference_model
    from posttrain.models.start import load_policy
    from posttrain.seeding import seed_everything
    r = recipe(extra=["method.kl_control=fixed", "method.kl_coef=0.3"])
    spec = get_method("ppo")
    params = validate_section(spec.params, r.method, "method")
    seed_everything(0)  # the LoRA init draws from the global RNG
    lm, tok = load_policy(r)
    with torch.no_grad():  # a policy that differs from its reference (the adapter-off model)
        g = torch.Generator().manual_seed(0)
        for n, w in lm.named_parameters():
            if "lora_B" in n:
                w.copy_(torch.randn(w.shape, generator=g) * 0.05)
    built = spec.build(r, params, lm, tok)
    reward = built.rollout.reward = RecordingReward(built.rollout.reward)
    buf, stats = built.rollout.rollout(built.model, 0)
    assert len(reward.scores) == len(buf) == 8

    policy = built.model.eval()
    kl_rows, kl_swapped_rows, old_err, old_is_ref_err, value_err, value_late_err = [], [], 0.0, [], 0.0, []
    returns_err, raw_adv, adv_got = 0.0, [], []
    with torch.no_grad():
        for f, score in zip(buf, reward.scores):
            ids = torch.tensor([f["input_ids"]])
            resp = [t for t, lab in enumerate(f["labels"]) if lab != -100]
            logp = torch.log_softmax(policy.lm(input_ids=ids).logits[0].double(), -1)
            with reference_model(policy.lm) as ref:
                logp_ref = torch.log_softmax(ref(input_ids=ids).logits[0].double(), -1)
            values = policy.values(ids)[0].double()
            old = [float(logp[t - 1, ids[0, t]]) for t in resp]  # token t is predicted at position t-1
            refp = [float(logp_ref[t - 1, ids[0, t]]) for t in resp]
            old_err = max(old_err, max(abs(a - f["old_logps"][t]) for a, t in zip(old, resp)))
            old_is_ref_err.append(max(abs(b - f["old_logps"][t]) for b, t in zip(refp, resp)))
            kl = [a - b for a, b in zip(old, refp)]
            kl_rows.append(sum(kl))
            kl_swapped_rows.append(sum(b - a for a, b in zip(old, refp)))
            v = [float(values[t - 1]) for t in resp]  # V(state before token t), read where t is predicted
            value_err = max(value_err, max(abs(a - f["old_values"][t]) for a, t in zip(v, resp)))
            value_late_err.append(max(abs(float(values[t]) - f["old_values"][t]) for t in resp))
            # GAE written out: r_t = -beta * kl_t, plus the score on the last token; V after the end = 0
            rew = [-params.kl_coef * k for k in kl]  # a fixed beta
            rew[-1] += score
            adv, nxt_v, run = [0.0] * len(resp), 0.0, 0.0
            for k in reversed(range(len(resp))):
                run = rew[k] + params.gamma * nxt_v - v[k] + params.gamma * params.lam * run
                adv[k], nxt_v = run, v[k]
            returns_err = max(returns_err, max(abs(a + b - f["returns"][t]) for a, b, t in zip(adv, v, resp)))
            raw_adv += adv
            adv_got += [f["advantages"][t] for t in resp]
    assert old_err < 1e-5  # old log-probs are the policy's own
    assert stats["kl"] == pytest.approx(sum(kl_rows) / 8, abs=1e-5)  # KL = old - reference
    assert value_err < 1e-5  # the value of token t is read at position t-1
    assert returns_err < 1e-4
    a = torch.tensor(raw_adv, dtype=torch.float64)
    whitened = (a - a.mean()) / torch.sqrt(a.var(unbiased=True) + 1e-8)
    assert torch.allclose(torch.tensor(adv_got, dtype=torch.float64), whitened, atol=1e-4)
    # ... and the wrong wirings are told apart: the reference differs from the policy, the values vary
    assert min(old_is_ref_err) > 1e-3  # the buffer does not hold the reference's log-probs
    assert abs(sum(kl_rows) / 8) > 1e-3 and stats["kl"] != pytest.approx(sum(kl_swapped_rows) / 8, abs=1e-4)
    assert min(value_late_err) > 1e-3  # not V at position t


def test_minibatch_must_divide_the_rollout(recipe):
    from posttrain.config import validate_section
    from posttrain.methods import get_method
    from posttrain.models.start import load_policy
    r = recipe(extra=["train.micro_batch_size=3"])
    spec = get_method("ppo")
    lm, tok = load_policy(r)
    with pytest.raises(RecipeError, match="multiple"):
        spec.build(r, validate_section(spec.params, r.method, "method"), lm, tok)


@pytest.mark.parametrize("stop", [6, 4], ids=["inside-iteration", "at-iteration-boundary"])
def test_ppo_resumes_exactly(recipe, stop):
    """2 iterations of 4 steps, killed after `stop` steps and resumed from the checkpoint there, log the
    same numbers at every step as the uninterrupted run (the buffer, KL controller and iteration are
    restored from the checkpoint; nothing is redrawn)."""
    straight = recipe(steps=8, extra=["name=straight", "train.save_every=1"])
    engine_for(straight).train()
    cut = recipe(steps=8, extra=["name=cut", "train.save_every=1"])
    engine_for(cut).train(stop_after=stop)
    assert len(read_history(cut.run_dir)) == stop
    resumed = engine_for(cut)
    calls = []
    rollout = resumed.rollout.rollout
    resumed.rollout.rollout = lambda *a: calls.append(a[1]) or rollout(*a)
    resumed.train()
    assert calls == ([] if stop == 6 else [1])  # inside an iteration the saved buffer is trained on
    a, b = _logged(straight), _logged(cut)
    assert [h["step"] for h in b] == list(range(1, 9))
    assert a == b  # exact, every metric at every step
    assert a[4]["rollout/beta"] != a[0]["rollout/beta"]  # the adaptive controller moved and was restored


def test_a_checkpoint_written_before_the_rollout_hook_rename_resumes_the_same(recipe):
    """Checkpoints of earlier versions hold the hook's state as stage.pt under "stage": resuming one of
    them goes on exactly as from rollout.pt."""
    straight = recipe(steps=8, extra=["name=straight", "train.save_every=1"])
    engine_for(straight).train()
    cut = recipe(steps=8, extra=["name=cut", "train.save_every=1"])
    engine_for(cut).train(stop_after=5)
    ckpt = latest_checkpoint(cut.run_dir)
    saved = torch.load(ckpt / "rollout.pt", weights_only=True)
    torch.save({"stage": saved["hook"], "data": saved["data"], "metrics": saved["metrics"]},
               ckpt / "stage.pt")
    (ckpt / "rollout.pt").unlink()
    resumed, calls = engine_for(cut), []
    rollout = resumed.rollout.rollout
    resumed.rollout.rollout = lambda *a: calls.append(a[1]) or rollout(*a)
    resumed.train()
    assert calls == []  # resumed inside iteration 2 on the buffer read from stage.pt, nothing redrawn
    assert _logged(straight) == _logged(cut)


def test_reference_start_from_an_sft_adapter_has_zero_kl_before_any_update(recipe, tmp_path):
    """PPO from an SFT adapter: the adapter is merged into the start, a fresh LoRA trains on top, and the
    default reference (start) is the SFT model, so the first rollout's KL is 0; against the base it is not."""
    from posttrain.config import validate_section
    from posttrain.methods import get_method
    from posttrain.models import apply_lora, load_model, save_weights
    from posttrain.models.start import load_policy
    sft, tok = load_model("tiny-llama")
    sft = apply_lora(sft, r=4, alpha=8, targets="all-linear")
    with torch.no_grad():
        for n, p in sft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    save_weights(sft, tmp_path / "sft-adapter")
    kls = {}
    for ref in ("start", "base"):
        r = recipe(extra=[f"model.adapter={tmp_path / 'sft-adapter'}", f"method.reference={ref}"])
        spec = get_method("ppo")
        lm, tok = load_policy(r)
        built = spec.build(r, validate_section(spec.params, r.method, "method"), lm, tok)
        _, stats = built.rollout.rollout(built.model, 0)
        kls[ref] = stats["kl"]
    assert kls["start"] == 0.0
    assert abs(kls["base"]) > 1e-3


def test_rollout_split_over_two_emulated_ranks_gives_the_one_process_buffer(recipe, monkeypatch):
    """Two ranks emulated one after the other: each samples, scores and evaluates its half of the prompts
    (with the global prompt ids, so the one-process samples), the halves are gathered, and each rank then
    holds the one-process buffer, stats and KL controller. A first pass per rank records its half (the
    gather stops the rollout there); the second pass gathers both recorded halves."""
    import copy

    from posttrain import distributed
    from posttrain.config import validate_section
    from posttrain.methods import get_method, ppo
    from posttrain.models.start import load_policy
    from posttrain.seeding import seed_everything
    r = recipe()
    spec = get_method("ppo")
    seed_everything(0)
    lm, tok = load_policy(r)
    with torch.no_grad():  # a policy away from its reference, so the KL terms are not all 0
        g = torch.Generator().manual_seed(0)
        for n, w in lm.named_parameters():
            if "lora_B" in n:
                w.copy_(torch.randn(w.shape, generator=g) * 0.05)
    built = spec.build(r, validate_section(spec.params, r.method, "method"), lm, tok)
    stage, it = built.rollout, 1  # iteration 1: the global prompt ids do not start at 0
    start = copy.deepcopy(stage.state_dict())
    one_buf, one_stats = stage.rollout(built.model, it)
    one_state = copy.deepcopy(stage.state_dict())

    sampled_ids, real_sample = [], ppo.sample

    def recorded_sample(*a, **k):
        sampled_ids.append(list(k["prompt_ids"]))
        return real_sample(*a, **k)
    monkeypatch.setattr(ppo, "sample", recorded_sample)
    rank = {"r": 0}
    monkeypatch.setattr(distributed, "world", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: rank["r"])  # the real `shard` reads these two

    class Gathered(Exception):
        pass

    halves = {}

    def record(local):
        halves[rank["r"]] = list(local)
        raise Gathered
    monkeypatch.setattr(distributed, "gather_shards", record)
    for r_ in (0, 1):
        rank["r"] = r_
        with pytest.raises(Gathered):
            stage.rollout(built.model, it)
    assert [len(halves[0]), len(halves[1])] == [4, 4]
    assert sampled_ids == [[8, 9, 10, 11], [12, 13, 14, 15]]  # each rank sampled its half, global ids

    def gather(local):
        assert local == halves[rank["r"]]  # the rollout's own half, as recorded
        return halves[0] + halves[1]
    monkeypatch.setattr(distributed, "gather_shards", gather)
    per_rank = []
    for r_ in (0, 1):
        rank["r"] = r_
        stage.load_state_dict(copy.deepcopy(start))
        buf, stats = stage.rollout(built.model, it)
        per_rank.append((buf, stats, copy.deepcopy(stage.state_dict())))
    assert per_rank[0] == per_rank[1]  # every rank holds the same buffer, stats and state, exactly
    buf, stats, state = per_rank[0]
    assert state["kl"] == pytest.approx(one_state["kl"], abs=1e-5)  # the controller saw the whole batch
    assert stats == pytest.approx(one_stats, abs=1e-5)
    assert len(buf) == len(one_buf) == 8
    for got, want in zip(buf, one_buf):
        assert got["input_ids"] == want["input_ids"] and got["labels"] == want["labels"]
        for k in ("old_logps", "old_values", "advantages", "returns"):
            assert got[k] == pytest.approx(want[k], abs=1e-5), k


def test_eval_fn_split_into_parts_gives_the_one_process_numbers(monkeypatch):
    """The eval prompts split into parts (one per rank, one of them empty, as with more ranks than prompts)
    give the one-process accuracy, invalid rate and mean reward. The completions are scripted from each
    prompt alone, so any difference would come from how the parts are combined."""
    from types import SimpleNamespace

    from posttrain import distributed
    from posttrain.data.records import PromptRecord
    from posttrain.eval import nlu
    from posttrain.generation.sampler import SamplingStats
    from posttrain.methods import ppo
    from posttrain.models import load_model
    from tests.rso_helpers import VowelReward
    _, tok = load_model("tiny-llama")
    labels = ["Yes", "No"]
    records = [PromptRecord([{"role": "user", "content": f"Is {w} a word?"}], assistant_prefix="<Judgement>",
                            meta={"label": labels[i % 2], "labels": labels})
               for i, w in enumerate(["cat", "dog", "tea", "jam", "owl", "fig", "bee"])]

    def scripted(model, tokenizer, prompts, params, **kw):
        texts = [["Yes</Judgement>", "No</Judgement>", "Yes or No</Judgement>"][sum(p) % 3] for p in prompts]
        return [[SimpleNamespace(text=t)] for t in texts], SamplingStats()
    monkeypatch.setattr(nlu, "sample", scripted)
    monkeypatch.setattr(ppo, "sample", scripted)
    params = ppo.PPOParams(name="ppo")
    model = SimpleNamespace(lm=None)
    by_label = ppo._eval_fn(params, records, tok, None, None)
    by_reward = ppo._eval_fn(params, [PromptRecord(r.prompt) for r in records], tok, VowelReward(), None)
    one = by_label(model), by_reward(model)
    want = nlu.nlu_eval(None, tok, records)
    assert one[0] == {"accuracy": want["accuracy"], "invalid_rate": want["invalid_rate"]}
    assert 0 < want["accuracy"] < 1 and 0 < want["invalid_rate"] < 1  # the scripted grades are mixed

    calls = []

    def split(fn, items):  # three emulated ranks, the first with nothing to do
        calls.append(len(items))
        return fn(items[:0]) + fn(items[:3]) + fn(items[3:])
    monkeypatch.setattr(distributed, "map_sharded", split)
    assert (by_label(model), by_reward(model)) == one
    assert calls == [7, 7]


def test_objective_uses_its_own_clip_value_clip_and_vf_coef():
    """The objective's loss is ppo_policy_loss(clip) + vf_coef * ppo_value_loss(value_clip) with the
    RECIPE's numbers. Every other test here runs the defaults (clip = value_clip = 0.2), where a swapped or
    hard-coded clip cannot show; here clip 0.1, value_clip 0.35, vf_coef 0.5, on a batch whose ratios and
    value moves sit on both sides of those clips and between them and the defaults."""
    from posttrain.data.collate import pad_collate
    from posttrain.losses.policy import ppo_policy_loss, ppo_value_loss
    from posttrain.methods.ppo import PPOObjective, PPOParams, logps_and_values
    from posttrain.models.value_head import ScalarHeadModel
    from tests.helpers import random_features, tiny_llama
    model = ScalarHeadModel(tiny_llama(), seed=1, logits=True)
    batch = pad_collate(random_features(4, seed=3), 0)
    with torch.no_grad():
        logp, values, mask, _ = logps_and_values(model, batch)
    n = int(mask.sum())
    cyc = lambda xs: torch.tensor([xs[i % len(xs)] for i in range(n)])  # noqa: E731
    # log-ratios: |.| 0.05 (inside both clips), 0.15 (inside 0.2 only: exp(0.15) = 1.16), 0.5 (outside both)
    log_ratio = cyc([0.05, -0.15, 0.5, -0.05, 0.15, -0.5, 0.0])
    adv = cyc([1.0, -1.0, -0.5, 0.7, 1.0, -1.0, 0.3, -0.8, 0.5])   # cycle lengths 7 and 9: every combination
    v_move = cyc([0.1, -0.3, 0.6, -0.6, 0.25])   # V - V_old: inside 0.2, between 0.2 and 0.35, outside both
    target = cyc([1.0, -1.0, 0.4, -0.4, 2.0, -2.0])   # returns relative to V_old
    old_logps, old_values, advantages, returns = (torch.zeros_like(logp) for _ in range(4))
    old_logps[mask] = logp[mask] - log_ratio
    old_values[mask] = values[mask] - v_move
    advantages[mask] = adv
    returns[mask] = old_values[mask] + target
    batch.update(old_logps=old_logps, old_values=old_values, advantages=advantages, returns=returns)

    params = PPOParams(name="ppo", clip=0.1, value_clip=0.35, vf_coef=0.5)
    loss, metrics = PPOObjective(params)(model, batch)
    with torch.no_grad():
        pg, _, pg_m = ppo_policy_loss(logp, old_logps, advantages, mask, 0.1)
        vf, _, vf_m = ppo_value_loss(values, old_values, returns, mask, 0.35)
    assert loss.item() == pytest.approx((pg + 0.5 * vf).item(), rel=1e-5, abs=1e-6)
    assert metrics["policy/clipfrac"].item() == pg_m["policy/clipfrac"].item()
    assert metrics["value/clipfrac"].item() == vf_m["value/clipfrac"].item()
    assert 0 < pg_m["policy/clipfrac"].item() < n and 0 < vf_m["value/clipfrac"].item() < n
    # the check can tell the recipe's numbers from the defaults and from each other
    with torch.no_grad():
        for c, vc, coef in ((0.2, 0.35, 0.5), (0.1, 0.2, 0.5), (0.35, 0.1, 0.5), (0.1, 0.35, 0.1)):
            other = ppo_policy_loss(logp, old_logps, advantages, mask, c)[0] + \
                coef * ppo_value_loss(values, old_values, returns, mask, vc)[0]
            assert abs(other.item() - loss.item()) > 1e-3, (c, vc, coef)
