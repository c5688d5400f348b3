"""INPO (iterative Nash policy optimization; Zhang et al., ICLR 2025; docs/methods.md "INPO and iterative
DPO") and iterative DPO, its baseline, as one online loop of pipeline stages per iteration t
(`pipeline.iterations`, 3 in the paper):

1. sample: K = `sampling.num_candidates` responses per prompt from pi_t (the iteration's starting model),
   on fresh prompts: iteration t takes prompts [t P, (t + 1) P) of data.train, P = `prompts_per_iteration`
   (resumable; the sample stage online methods share, posttrain/methods/sampling.py);
2. pairs: the oracle picks (y_w, y_l) per prompt. `oracle.kind: reward`: a pointwise (Bradley-Terry) reward,
   best vs worst of K, dropped when tied. `oracle.kind: pairwise`: an object with `compare` (the pairwise
   judge or reward model of posttrain/rewards/pairwise.py, the non-transitive `cyclic` oracle) through the
   O(K) knockout (posttrain/generation/knockout.py), kept only if the best wins the final;
3. train: from pi_t on those pairs with the `inpo` loss (posttrain/losses/preference.py), pi_ref
   (`reference`, default start) and pi_t (the previous iterate) log-probs precomputed; or with `dpo`
   (`method.name: iterative_dpo`, against `reference: start` or `previous`).
Every stage is resumable and recorded in pipeline.json, like RSO's.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Literal

import numpy as np
from pydantic import Field

from posttrain.config import Section, flat
from posttrain.contracts import Built, MethodSpec, RunInfo, StageDef
from posttrain.errors import DataError, RecipeError
from posttrain.generation.knockout import knockout
from posttrain.generation.to_file import read_samples, source_path
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

DEFAULT_LOSS = {"inpo": "inpo", "iterative_dpo": "dpo"}


class OracleSettings(Section):
    """Who prefers: a reward by name (posttrain/rewards) and its options, used pointwise or pairwise."""
    kind: Literal["reward", "pairwise"] = "reward"
    name: str = "math"
    options: dict[str, Any] = {}


class INPOParams(preference.PreferenceLossParams):
    name: Literal["inpo", "iterative_dpo"]
    loss: Literal[preference.LOSS_NAMES] | None = None  # type: ignore[valid-type]  # default by name
    tau: float = Field(0.005 / 3, ge=0)  # INPO's KL coefficient; the paper's eta / 3 (eta: 0.005)
    prompts_per_iteration: int | None = Field(None, gt=0)  # None: every prompt in every iteration
    sampling: SamplingSettings = SamplingSettings(num_candidates=8)
    oracle: OracleSettings = OracleSettings()

    def preference_params(self) -> preference.PreferenceParams:
        keep = set(preference.PreferenceLossParams.model_fields)
        return preference.PreferenceParams(name="preference", loss=self.loss or DEFAULT_LOSS[self.name],
                                           **{k: getattr(self, k) for k in keep})


def iteration_records(recipe, params: INPOParams, iteration: int) -> list:
    """The fresh prompts of an iteration (0-based)."""
    records = recipe_records(recipe)
    p = params.prompts_per_iteration
    if p is None:
        return records
    need = (iteration + 1) * p
    if need > len(records):
        raise DataError(f"method.prompts_per_iteration={p}: iteration {iteration + 1} needs prompts "
                        f"{iteration * p}..{need - 1}, data.train has {len(records)}")
    return records[iteration * p:need]


def choose_pair(oracle, kind: str, prompt: str, texts: list[str], meta: dict) -> tuple[int, int, dict] | None:
    """(chosen, rejected, info) of one prompt's K responses, or None when the oracle does not separate
    them."""
    if kind == "reward":
        r = score_checked(oracle, [prompt] * len(texts), texts, [meta] * len(texts))
        best, worst = int(np.argmax(r)), int(np.argmin(r))
        info = {"calls": len(texts), "r_chosen": r[best], "r_rejected": r[worst]}
        return (best, worst, info) if r[best] > r[worst] and texts[best] != texts[worst] else None

    def beats(pairs):
        p = oracle.compare([prompt] * len(pairs), [texts[a] for a, _ in pairs], [texts[b] for _, b in pairs],
                           [meta] * len(pairs))
        return [x > 0.5 for x in p]
    res = knockout(len(texts), beats)
    info = {"calls": res.calls}
    return (res.best, res.worst, info) if res.kept and texts[res.best] != texts[res.worst] else None


def make_pairs(recipe, params: INPOParams, ctx) -> dict:
    """Stage 2: one (chosen, rejected) pair per prompt chosen by the oracle -> pairs.jsonl."""
    s, folder = params.sampling, ctx.dir
    records = iteration_records(recipe, params, ctx.iteration)
    samples, _ = read_samples(samples_file(params, ctx), s.num_candidates)
    if len(samples) != len(records):
        raise DataError(f"{samples_file(params, ctx)} holds {len(samples)} of {len(records)} prompts: the "
                        f"sample stage did not finish")
    oracle = get_reward(params.oracle.name, **params.oracle.options)
    if params.oracle.kind == "pairwise" and not hasattr(oracle, "compare"):
        raise RecipeError(f"method.oracle: '{params.oracle.name}' has no pairwise `compare`; "
                          f"use kind: reward")
    stats, rows = Counter(), []
    for pid, rec in enumerate(records):
        texts = [c["text"] for c in samples[pid]]
        picked = choose_pair(oracle, params.oracle.kind, prompt_text(rec), texts,
                             {"answer": rec.answer, **rec.meta})
        if picked is None:
            stats["prompts_without_pair"] += 1
            continue
        c, r, info = picked
        stats["oracle_calls"] += info.pop("calls")
        rows.append({"prompt": rec.prompt, "chosen": texts[c], "rejected": texts[r],
                     "meta": {"prompt_id": pid, **info}})
    out = {"iteration": ctx.iteration + 1, "prompts": len(records),
           "candidates": len(records) * s.num_candidates,
           "pairs": len(rows), "oracle": params.oracle.kind, "oracle_calls": 0, "prompts_without_pair": 0,
           **dict(stats)}
    return write_pairs(folder, rows, out, "inpo_stats.json", f"the oracle separated no responses of "
                       f"{len(records)} prompts (every best-worst pair tied or lost its final)")


PAIR_KEYS = ("seed", "method.oracle", "method.prompts_per_iteration")


def stages(recipe, params: INPOParams, ctx) -> list[StageDef]:
    settings = flat(recipe.model_dump(mode="json"))
    if params.sampling.samples_file:
        raise RecipeError("method.sampling.samples_file: INPO samples each iteration from its own policy")
    return [StageDef("sample", select_keys(settings, SAMPLE_KEYS + ("method.prompts_per_iteration",)),
                     lambda: sample_candidates(recipe, params, ctx,
                                               iteration_records(recipe, params, ctx.iteration)),
                     outputs=["samples.jsonl", source_path("samples.jsonl").name], parallel=True),
            StageDef("pairs", select_keys(settings, PAIR_KEYS), lambda: make_pairs(recipe, params, ctx),
                     outputs=["pairs.jsonl", "inpo_stats.json"], inputs=["samples.jsonl"],
                     uses_weights=False)]


def build(recipe, params: INPOParams, model, tokenizer, run: RunInfo | None = None) -> Built:
    return build_on_pairs(recipe, params.preference_params(), model, tokenizer, run, "inpo_stats.json")


SPECS = [MethodSpec("inpo", INPOParams, build, "INPO: online pairs from pi_t, the oracle, the INPO loss",
                    data_kind="prompt", stages=stages),
         MethodSpec("iterative_dpo", INPOParams, build, "iterative DPO: INPO's online loop with the DPO loss",
                    data_kind="prompt", stages=stages)]
