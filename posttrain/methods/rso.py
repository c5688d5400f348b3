"""RSO end to end (METHODS.md §2): sample -> score -> select -> pair -> train with a preference loss.

`data.train` holds PROMPTS (with what the reward needs, e.g. the gold `answer`). The data stage
samples `num_candidates` per prompt from the starting policy (a fresh LoRA adapter is the identity, so
that is pi_sft), scores them with the reward, selects by `selection` (rso / sft_sample_rank / best_of_n),
pairs them (first_round / tournament), and writes `<run>/pairs.jsonl`; training is then the preference
method on those pairs with `loss` (dpo = sigmoid-norm, hinge_norm, ...). Both files are resumable:
samples.jsonl resumes after a kill, and pairs.jsonl is rebuilt deterministically from it.

`posttrain rso RECIPE` runs only the data stage; `posttrain train RECIPE` runs both.
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
from posttrain.data.sources import load_source, prompt_text
from posttrain.eval.report import atomic_write_text
from posttrain.generation.rso import PAIRINGS, SELECTIONS, pair_up, select
from posttrain.generation.sampler import SamplingParams
from posttrain.generation.to_file import sample_to_file
from posttrain.losses.preference import PREFERENCE_LOSSES
from posttrain.methods import preference
from posttrain.methods.base import Built, MethodSpec
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


def build_pairs(recipe, params: RSOParams, model, tokenizer, *, progress: bool = True) -> tuple[Path, dict]:
    """The data stage: returns (pairs.jsonl path, stats)."""
    data, s = recipe.data, params.sampling
    records = load_source(data.train, "prompt", instruction=data.instruction, system_prompt=data.system_prompt)
    run_dir = recipe.run_dir
    sp = SamplingParams(n=s.num_candidates, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                        max_new_tokens=s.max_new_tokens, stop=tuple(s.stop), seed=s.seed)
    samples_file = Path(s.samples_file) if s.samples_file else run_dir / "samples.jsonl"
    samples, st = sample_to_file(model, tokenizer, records, sp, samples_file,
                                 batch_size=s.batch_size, max_prompt_length=data.max_prompt_length,
                                 progress=progress)
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
    path = run_dir / "pairs.jsonl"
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
    n = len(records)
    out = {"prompts": n, "candidates": n * s.num_candidates, "pairs": len(rows),
           "selection": params.selection, "pairing": params.pairing,
           "mean_reward_candidates": float(np.mean(rewards_all)) if rewards_all else 0.0,
           "mean_reward_accepted": float(np.mean(accepted_r)) if accepted_r else 0.0,
           "sampling_tokens_per_s": round(st.tokens_per_s, 1), "sampling_new_tokens": st.new_tokens,
           **dict(stats)}
    out["acceptance_rate"] = stats["accepted"] / max(stats["unique_candidates"], 1)
    atomic_write_text(run_dir / "rso_stats.json", json.dumps(out, indent=1))
    log.info("rso data: %s", out)
    if not rows:
        from posttrain.errors import DataError
        raise DataError(f"RSO produced no pairs from {n} prompts (every pair tied: the reward does not "
                        f"separate the candidates); see {run_dir / 'rso_stats.json'}")
    return path, out


def build(recipe, params: RSOParams, model, tokenizer) -> Built:
    path, stats = build_pairs(recipe, params, model, tokenizer)
    pairs_recipe = recipe.model_copy(update={"data": recipe.data.model_copy(
        update={"train": DataSource(path=str(path)), "instruction": None})})
    built = preference.build(pairs_recipe, params.preference_params(), model, tokenizer)
    built.stats = {**built.stats, "rso": stats}
    return built


SPEC = MethodSpec("rso", RSOParams, build, "statistical rejection sampling -> pairs -> preference loss",
                  data_kind="prompt")
