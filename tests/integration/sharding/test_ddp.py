"""Every training objective through DistributedDataParallel (a one-process gloo group): the same loss and
gradients as on the bare model, the pass synchronised by DDP's reducer (its communication hook runs), and
a second step accepted (DDP, as the engine builds it without find_unused_parameters, refuses a step when a
trainable parameter got no gradient in the one before). An objective that calls a method of the inner
model instead of forward fails here: the DDP object has no such attribute, or its reducer never runs."""
from __future__ import annotations

import copy
import random

import pytest
import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from posttrain.data.collate import pad_collate
from posttrain.methods.dapo_step.data import CriticObjective
from posttrain.methods.ift import IFTObjective, IFTParams, frozen_input_embedding
from posttrain.methods.ppo import PPOObjective, PPOParams
from posttrain.methods.preference import PreferenceObjective, PreferenceParams, collate_pairs, pair_layout
from posttrain.methods.reward_model import RewardModelParams, RewardObjective
from posttrain.methods.sft import SFTObjective
from posttrain.models.value_head import ScalarHeadModel
from tests.helpers import VOCAB, pad, random_features, tiny_llama


@pytest.fixture(scope="module", autouse=True)
def process_group(tmp_path_factory):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path_factory.mktemp('pg')}/pg",
                                         rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def untied(lm):
    """The same model with its own LM head (full fine-tuning of an untied model trains both tables)."""
    lm.lm_head.weight = torch.nn.Parameter(lm.lm_head.weight.detach().clone())
    lm.config.tie_word_embeddings = False
    return lm


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_through_ddp(model, objective, batch, steps: int = 2) -> None:
    bare, inner = model, copy.deepcopy(model)
    ddp = DistributedDataParallel(inner)
    synced = []
    ddp.register_comm_hook(None, lambda state, bucket: synced.append(1) or allreduce_hook(state, bucket))
    for _ in range(steps):
        for m in (bare, inner):
            m.zero_grad(set_to_none=True)
        synced.clear()
        want, _ = objective(bare, batch)
        want.backward()
        got, _ = objective(ddp, batch)
        got.backward()
        assert synced, "the backward ran outside DDP's reducer (the forward bypassed the wrapper)"
        assert torch.equal(got.detach(), want.detach())
        g_bare, g_ddp = grads(bare), grads(inner)
        assert g_bare and g_bare.keys() == g_ddp.keys()
        for name, g in g_bare.items():
            assert torch.allclose(g_ddp[name], g, rtol=0, atol=1e-7), name


def ppo_batch(n: int = 4) -> dict:
    rng = random.Random(1)
    feats = [{**f, **{k: [rng.uniform(lo, hi) for _ in f["input_ids"]] for k, lo, hi in
                      (("old_logps", -6.0, -1.0), ("old_values", -1.0, 1.0), ("advantages", -1.0, 1.0),
                       ("returns", -1.0, 1.0))}} for f in random_features(n, seed=3)]
    return pad_collate(feats, 0)


def pair_features(n: int = 3) -> list[dict]:
    rng = random.Random(2)

    def ids(k):
        return [rng.randint(1, VOCAB - 1) for _ in range(k)]
    return [{"prompt_ids": ids(rng.randint(2, 6)), "chosen_ids": ids(rng.randint(1, 5)),
             "rejected_ids": ids(rng.randint(1, 5)), "ref_chosen": -rng.uniform(5, 30),
             "ref_rejected": -rng.uniform(5, 30)} for _ in range(n)]


@pytest.mark.parametrize("lm", [tiny_llama, lambda: untied(tiny_llama())], ids=["tied", "untied"])
@pytest.mark.parametrize("output", ["values", "last_values", "logits_and_values"])
def test_scalar_head_outputs(output, lm):
    b = pad(random_features(3, seed=5))
    keep = torch.zeros_like(b["attention_mask"], dtype=torch.bool)
    keep[:, :-1] = b["labels"][:, 1:] != -100

    def objective(model, batch):
        out = model(batch["input_ids"], batch["attention_mask"], output=output,
                    logits_to_keep=keep if output == "logits_and_values" else None)
        if output == "logits_and_values":
            logits, values = out
            return torch.logsumexp(logits, -1).sum() + (values * batch["attention_mask"]).sum(), {}
        return (out * (batch["attention_mask"] if output == "values" else 1)).pow(2).sum(), {}
    assert_same_through_ddp(ScalarHeadModel(lm(), seed=1, logits=output == "logits_and_values"), objective, b)


def test_named_methods_are_forward():
    model = ScalarHeadModel(tiny_llama(), seed=1).eval()
    b = pad(random_features(3, seed=6))
    ids, attn = b["input_ids"], b["attention_mask"]
    with torch.no_grad():
        assert torch.equal(model.values(ids, attn), model(ids, attn))
        assert torch.equal(model.last_values(ids, attn), model(ids, attn, output="last_values"))
        logits, values = model.logits_and_values(ids, attn, attn.bool())
        assert torch.equal(values, model(ids, attn)) and logits.shape == (int(attn.sum()), VOCAB)
        last = attn.sum(-1) - 1
        assert torch.allclose(model.last_values(ids, attn), model.values(ids, attn)[torch.arange(3), last],
                              atol=1e-6)
    with pytest.raises(ValueError, match="output"):
        model(ids, attn, output="logits")


@pytest.mark.parametrize("lm", [tiny_llama, lambda: untied(tiny_llama())], ids=["tied", "untied"])
def test_ppo_objective(lm):
    model = ScalarHeadModel(lm(), seed=1, logits=True)
    assert_same_through_ddp(model, PPOObjective(PPOParams(name="ppo")), ppo_batch())
    assert model.lm.lm_head.weight.requires_grad  # the policy's LM head trains


@pytest.mark.parametrize("lm", [tiny_llama, lambda: untied(tiny_llama())], ids=["tied", "untied"])
def test_reward_model_objective(lm):
    b = pad(random_features(6, seed=7))  # rows: 3 chosen, then their 3 rejected
    objective = RewardObjective(RewardModelParams(name="reward_model", center_coef=0.01))
    assert_same_through_ddp(ScalarHeadModel(lm(), seed=1), objective, b)


@pytest.mark.parametrize("lm", [tiny_llama, lambda: untied(tiny_llama())], ids=["tied", "untied"])
def test_dapo_critic_objective(lm):
    b = pad(random_features(4, seed=8))
    b["target"] = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert_same_through_ddp(ScalarHeadModel(lm(), seed=1), CriticObjective(), b)


@pytest.mark.parametrize("normalization", ["token", "sequence"])
def test_sft_objective(normalization):
    assert_same_through_ddp(tiny_llama(), SFTObjective(normalization), pad(random_features(4, seed=9)))


def test_tool_sft_objective():
    """tool_sft trains SFTObjective("weights") (PKT key-token weights) or "token"."""
    rng = random.Random(4)
    feats = [{**f, "weights": [rng.choice([1.0, 1.0, 3.0]) for _ in f["input_ids"]]}
             for f in random_features(4, seed=10)]
    assert_same_through_ddp(tiny_llama(), SFTObjective("weights"), pad_collate(feats, 0))


@pytest.mark.parametrize("layout", ["padding_free", "shared_prefix", "concatenated"])
def test_preference_objective(layout):
    forward = "concatenated" if layout == "concatenated" else "shared_prefix"
    params = PreferenceParams(name="dpo", pair_forward=forward, padding_free=layout == "padding_free")
    model = tiny_llama()
    assert pair_layout(params, model) == layout
    batch = collate_pairs(0, layout)(pair_features())
    assert ("pair_segments" in batch) == (layout != "concatenated")
    assert ("pair_bounds" in batch) == (layout == "padding_free")
    assert_same_through_ddp(model, PreferenceObjective(params), batch)


def test_ift_objective():
    model = tiny_llama()
    objective = IFTObjective(IFTParams(lam=0.3, gamma=0.9), frozen_input_embedding(model))
    assert_same_through_ddp(model, objective, pad(random_features(4, seed=11)))
