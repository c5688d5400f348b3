"""Bradley-Terry reward model: a scalar head on the LM trunk, trained on preference pairs.

Data prep is the preference method's (prompt + chosen / prompt + rejected rows); the score of a sequence is
the head at its last token (the end-of-turn token). The trained folder (a run's checkpoint `model/`) loads
with `posttrain.rewards.reward_model.RewardModelReward(path)`.
"""
from __future__ import annotations

from typing import Literal

from posttrain.config import Section
from posttrain.contracts import Built, MethodSpec, RunInfo
from posttrain.data.collate import pair_collate
from posttrain.losses.reward import bradley_terry
from posttrain.methods.base import recipe_records
from posttrain.methods.preference import encode
from posttrain.models.value_head import ScalarHeadModel, head_info


class RewardModelParams(Section):
    name: Literal["reward_model"]
    center_coef: float = 0.0
    head_init_std: float | None = None  # default 1/sqrt(hidden + 1)


class RewardObjective:
    def __init__(self, params: RewardModelParams):
        self.params = params

    def units(self, batch) -> float:
        return batch["input_ids"].shape[0] // 2

    def __call__(self, model, batch):
        r = model(batch["input_ids"], batch["attention_mask"], output="last_values")  # through a DDP wrapper
        b = r.shape[0] // 2
        losses, metrics = bradley_terry(r[:b], r[b:], center_coef=self.params.center_coef)
        return losses.sum(), {k: v.sum() for k, v in metrics.items()}


def build(recipe, params: RewardModelParams, model, tokenizer, run: RunInfo | None = None) -> Built:
    data = recipe.data
    feats, stats = encode(recipe_records(recipe), tokenizer, data)
    eval_feats = None
    if data.eval is not None:
        eval_feats, _ = encode(recipe_records(recipe, "eval"), tokenizer, data)
    info = head_info(recipe.model)
    rm = ScalarHeadModel(model, info=info, init_std=params.head_init_std, seed=recipe.seed)
    pad = tokenizer.pad_token_id
    return Built(RewardObjective(params), feats, lambda f: pair_collate(f, pad), eval_feats, stats=stats,
                 model=rm)


SPEC = MethodSpec("reward_model", RewardModelParams, build, "Bradley-Terry reward model (scalar head)")
