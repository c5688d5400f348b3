"""RSO end to end (docs/methods.md "RSO"): sample -> score -> select -> pair -> train with a preference loss.

`data.train` holds PROMPTS (with what the reward needs, e.g. the gold `answer`). The data stage
samples `num_candidates` per prompt from the starting policy (a fresh LoRA adapter is the identity, so
that is pi_sft), scores them with the reward, selects by `selection` (rso / sft_sample_rank / best_of_n),
pairs them (first_round / tournament), and writes `<run>/pairs.jsonl`; training is then the preference
method on those pairs with `loss` (dpo = sigmoid-norm, hinge_norm, ...). Three pipeline stages
(posttrain/pipeline.py): sample (samples.jsonl, resumes after a kill), pairs (pairs.jsonl, a pure
function of the samples, the reward and the seed), train. With `pipeline.iterations` > 1 each iteration
samples from the previous iteration's model (iterative RSO). The sample stage and the training on the
pairs are those online methods share (posttrain/methods/sampling.py); RSO's own part is the pairs stage.

`posttrain train RECIPE` runs them all; `posttrain rso RECIPE` (= `train --until pairs`) only the data.
"""
from __future__ import annotations

from collections import Counter
from typing import Literal

import numpy as np
from pydantic import Field

from posttrain.config import RewardSettings, flat
from posttrain.contracts import Built, MethodSpec, RunInfo, StageDef
from posttrain.errors import DataError
from posttrain.generation.rso import PAIRINGS, SELECTIONS, pair_up, select
from posttrain.generation.to_file import read_samples, source_path
from posttrain.losses.preference import PREFERENCE_LOSSES
from posttrain.methods import preference
from posttrain.methods.base import recipe_records
from posttrain.methods.sampling import (
    SAMPLE_KEYS,
    SamplingSettings,
    build_on_pairs,
    sample_candidates,
    samples_file,
    write_pairs,
)
from posttrain.pipeline import select as select_keys
from posttrain.rewards import get_reward, score_checked
from posttrain.tasks.sources import prompt_text


class RSOParams(preference.PreferenceLossParams):
    name: Literal["rso"]
    selection: Literal[SELECTIONS] = "rso"  # type: ignore[valid-type]
    rso_beta: float = Field(0.5, gt=0)  # the tilt of pi_r ∝ pi_sft exp(r / beta)
    num_samples: int = Field(8, ge=2)  # accepted per prompt (paper: 8)
    pairing: Literal[PAIRINGS] = "first_round"  # type: ignore[valid-type]
    sampling: SamplingSettings = SamplingSettings()
    reward: RewardSettings = RewardSettings()
    # the preference loss trained on the pairs; its parameters are the preference method's
    loss: Literal[tuple(PREFERENCE_LOSSES)] = "dpo"  # type: ignore[valid-type]

    def preference_params(self) -> preference.PreferenceParams:
        keep = set(preference.PreferenceLossParams.model_fields)
        return preference.PreferenceParams(name="preference", loss=self.loss,
                                           **{k: getattr(self, k) for k in keep})


def make_pairs(recipe, params: RSOParams, ctx) -> dict:
    """Stage 2: score, select (rso / sft_sample_rank / best_of_n) and pair -> pairs.jsonl."""
    s, folder = params.sampling, ctx.dir
    records = recipe_records(recipe)
    samples, _ = read_samples(samples_file(params, ctx), s.num_candidates)
    if len(samples) != len(records):
        raise DataError(f"{samples_file(params, ctx)} holds {len(samples)} of {len(records)} prompts: the "
                        f"sample stage did not finish")
    reward = get_reward(params.reward.name, **params.reward.options)
    stats = Counter()
    rows, rewards_all, accepted_r = [], [], []
    for pid in range(len(records)):
        rec, cands = records[pid], samples[pid]
        texts = [c["text"] for c in cands]
        meta = [{"answer": rec.answer, **rec.meta}] * len(texts)
        r = score_checked(reward, [prompt_text(rec)] * len(texts), texts, meta)
        rewards_all += r
        rng = np.random.default_rng([recipe.seed, pid])
        keys = [tuple(c["token_ids"]) for c in cands]
        idx, acc = select(r, params.selection, params.num_samples, rng, beta=params.rso_beta, keys=keys)
        accepted_r += [r[i] for i in idx]
        stats["unique_candidates"] += acc.unique
        stats["accepted"] += acc.accepted
        stats["rounds"] += acc.rounds
        stats["exhausted_prompts"] += int(acc.exhausted)
        pairs, ties = pair_up(idx, r, params.pairing, rng, anchor_first=params.selection == "best_of_n")
        stats["tied_pairs_dropped"] += ties
        for c, j in pairs:
            rows.append({"prompt": rec.prompt, "chosen": texts[c], "rejected": texts[j],
                         "meta": {"prompt_id": pid, "r_chosen": r[c], "r_rejected": r[j]}})
    n = len(records)
    out = {"prompts": n, "candidates": n * s.num_candidates, "pairs": len(rows),
           "selection": params.selection, "pairing": params.pairing,
           "mean_reward_candidates": float(np.mean(rewards_all)) if rewards_all else 0.0,
           "mean_reward_accepted": float(np.mean(accepted_r)) if accepted_r else 0.0, **dict(stats)}
    out["acceptance_rate"] = stats["accepted"] / max(stats["unique_candidates"], 1)
    return write_pairs(folder, rows, out, "rso_stats.json",
                       f"RSO produced no pairs from {n} prompts (every pair tied: the reward does not "
                       f"separate the candidates)")


PAIR_KEYS = ("seed", "method.selection", "method.rso_beta", "method.num_samples", "method.pairing",
             "method.reward")


def stages(recipe, params: RSOParams, ctx) -> list[StageDef]:
    settings = flat(recipe.model_dump(mode="json"))
    samples = samples_file(params, ctx)
    # a shared samples_file outside the run is an input of the run, never one of its outputs to delete
    own = samples.resolve().is_relative_to(ctx.dir.resolve())
    rel = str(samples.relative_to(ctx.dir)) if own else str(samples)
    sample_out = [rel, str(source_path(samples).relative_to(ctx.dir))] if own else []
    return [StageDef("sample", select_keys(settings, SAMPLE_KEYS),
                     lambda: sample_candidates(recipe, params, ctx),
                     outputs=sample_out, parallel=True),
            StageDef("pairs", select_keys(settings, PAIR_KEYS), lambda: make_pairs(recipe, params, ctx),
                     outputs=["pairs.jsonl", "rso_stats.json"], inputs=[rel],
                     uses_weights=False)]


def build(recipe, params: RSOParams, model, tokenizer, run: RunInfo | None = None) -> Built:
    """Training on the pairs the stages before it wrote (posttrain train runs them first)."""
    return build_on_pairs(recipe, params.preference_params(), model, tokenizer, run, "rso_stats.json")


SPEC = MethodSpec("rso", RSOParams, build, "statistical rejection sampling -> pairs -> preference loss",
                  data_kind="prompt", stages=stages)
