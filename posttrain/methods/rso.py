"""RSO end to end (docs/methods.md "RSO"): sample -> score -> select -> pair -> train with a preference loss.

`data.train` holds PROMPTS (with what the reward needs, e.g. the gold `answer`). The data stage
samples `num_candidates` per prompt from the starting policy (a fresh LoRA adapter is the identity, so
that is pi_sft), scores them with the reward, selects by `selection` (rso / sft_sample_rank / best_of_n),
pairs them (first_round / tournament), and writes `<run>/pairs.jsonl`; training is then the preference
method on those pairs with `loss` (dpo = sigmoid-norm, hinge_norm, ...). Three pipeline stages
(posttrain/pipeline.py): sample (samples.jsonl, resumes after a kill), pairs (pairs.jsonl, a pure
function of the samples, the reward and the seed), train. With `pipeline.iterations` > 1 each iteration
samples from the previous iteration's model (iterative RSO).

`posttrain train RECIPE` runs them all; `posttrain rso RECIPE` (= `train --until pairs`) only the data.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from posttrain.config import DataSource, RewardSettings, Section
from posttrain.data.sources import prompt_text
from posttrain.generation.rso import PAIRINGS, SELECTIONS, pair_up, select
from posttrain.errors import DataError, RecipeError
from posttrain.files import atomic_write_text, write_jsonl
from posttrain.generation.sampler import SamplingParams
from posttrain.generation.to_file import read_samples, sample_to_file, source_path
from posttrain.losses.preference import PREFERENCE_LOSSES
from posttrain.methods import preference
from posttrain.methods.base import Built, MethodSpec, RunInfo, recipe_records
from posttrain.pipeline import StageDef, flat
from posttrain.pipeline import select as select_keys
from posttrain.rewards import get_reward, score_checked

log = logging.getLogger(__name__)


class SamplingSettings(Section):
    num_candidates: int = Field(16, ge=2)  # paper: 64
    temperature: float = Field(0.7, ge=0)
    top_k: int = Field(40, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(128, gt=0)
    stop: list[str] = []
    batch_size: int = Field(16, gt=0)
    seed: int = 0
    # where the candidates go (default <run>/samples.jsonl); runs that share the prompts and these
    # settings may share one file, e.g. to compare selections on the same candidates
    samples_file: str | None = None


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


def samples_file(params: RSOParams, ctx) -> Path:
    s = params.sampling
    # a shared samples_file serves the first iteration; later ones sample another policy
    return Path(s.samples_file) if s.samples_file and ctx.iteration == 0 else ctx.dir / "samples.jsonl"


def sample_candidates(recipe, params, ctx, records: list | None = None) -> dict:
    """Stage 1: `num_candidates` samples per prompt (default: every prompt of data.train) from the
    iteration's starting policy (resumable). Shared with INPO, whose params have the same `sampling`."""
    s = params.sampling
    model, tokenizer = ctx.policy()
    sp = SamplingParams(n=s.num_candidates, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                        max_new_tokens=s.max_new_tokens, stop=tuple(s.stop), seed=s.seed)
    records = recipe_records(recipe) if records is None else records
    _, st = sample_to_file(model, tokenizer, records, sp, samples_file(params, ctx),
                           batch_size=s.batch_size, max_prompt_length=recipe.data.max_prompt_length,
                           progress=ctx.progress)
    return {"sampling_tokens_per_s": round(st.tokens_per_s, 1), "sampling_new_tokens": st.new_tokens,
            "resumed_prompts": st.extra.get("resumed_prompts", 0)}


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
                       f"RSO produced no pairs from {n} prompts (every pair tied: the reward does not separate "
                       f"the candidates)")


def write_pairs(folder: Path, rows: list[dict], stats: dict, stats_file: str, empty: str) -> dict:
    """The pairs stage's outputs: the stats file always (it says why there are no pairs), pairs.jsonl when
    there are pairs; none is an error (`empty`, with the stats file named)."""
    atomic_write_text(folder / stats_file, json.dumps(stats, indent=1))
    log.info("%s: %s", stats_file, stats)
    if not rows:
        raise DataError(f"{empty}; see {folder / stats_file}")
    write_jsonl(folder / "pairs.jsonl", rows)
    return stats


SAMPLE_KEYS = ("model", "data.train", "data.instruction", "data.system_prompt", "data.max_prompt_length",
               "method.sampling", "generation.backend", "generation.decode_dtype")
PAIR_KEYS = ("seed", "method.selection", "method.rso_beta", "method.num_samples", "method.pairing", "method.reward")


def stages(recipe, params: RSOParams, ctx) -> list[StageDef]:
    settings = flat(recipe.model_dump(mode="json"))
    samples = samples_file(params, ctx)
    # a shared samples_file outside the run is an input of the run, never one of its outputs to delete
    own = samples.resolve().is_relative_to(ctx.dir.resolve())
    rel = str(samples.relative_to(ctx.dir)) if own else str(samples)
    sample_out = [rel, str(source_path(samples).relative_to(ctx.dir))] if own else []
    return [StageDef("sample", select_keys(settings, SAMPLE_KEYS), lambda: sample_candidates(recipe, params, ctx),
                     outputs=sample_out, parallel=True),
            StageDef("pairs", select_keys(settings, PAIR_KEYS), lambda: make_pairs(recipe, params, ctx),
                     outputs=["pairs.jsonl", "rso_stats.json"], inputs=[rel],
                     uses_weights=False)]


def build_on_pairs(recipe, params: preference.PreferenceParams, model, tokenizer, run: RunInfo | None,
                   stats_file: str) -> Built:
    """The preference build on the pairs.jsonl an earlier stage of the iteration wrote (RSO, INPO)."""
    folder = run.dir if run is not None else recipe.run_dir
    path = folder / "pairs.jsonl"
    if not path.is_file():
        raise RecipeError(f"{path} does not exist: run the recipe with `posttrain train`, which samples and "
                          f"pairs before training")
    pairs_recipe = recipe.model_copy(update={"data": recipe.data.model_copy(
        update={"train": DataSource(path=str(path)), "instruction": None})})
    built = preference.build(pairs_recipe, params, model, tokenizer, run)
    # in place: the build's prepare() adds the reference-cache status to this same dict later
    built.stats[stats_file.split("_")[0]] = json.loads((folder / stats_file).read_text())
    return built


def build(recipe, params: RSOParams, model, tokenizer, run: RunInfo | None = None) -> Built:
    """Training on the pairs the stages before it wrote (posttrain train runs them first)."""
    return build_on_pairs(recipe, params.preference_params(), model, tokenizer, run, "rso_stats.json")


SPEC = MethodSpec("rso", RSOParams, build, "statistical rejection sampling -> pairs -> preference loss",
                  data_kind="prompt", stages=stages)
