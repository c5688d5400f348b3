"""Direct Advantage Policy Optimization (step-level) — `dapo_step` (Liu et al., NeurIPS 2025; docs/methods.md
"Direct Advantage Policy Optimization"). Not ByteDance's GRPO-style "DAPO".

An iteration is six pipeline stages (files in posttrain/methods/dapo_step/data.py): sample N responses
per problem from pi_t -> states (balanced kept responses split into token-level steps) -> rollouts (M
completions per state from pi_ref = pi_t: MC targets, candidate next steps) -> critic (the LM trunk with a
scalar head, trained first and separately with soft-label BCE; calibration on held-out problems) ->
advantages (A(s, a_i) = V(s∘a_i) - mean_j V(s∘a_j), spread filter, pi_ref log-probs) -> train the actor:

    L = 1/2 (A(s, a)/beta - [logp_theta(a|s) - logp_ref(a|s)])^2   per candidate step, log-probs summed
                                                                   over the step's tokens
with a training example = one state with all its candidates, so a batch never splits a state; the
normaliser is the number of candidates. `pipeline.iterations` > 1: the trained model is the next
iteration's pi_ref and sampler. Every stage resumes (sample files, engine checkpoints) and is recorded in
pipeline.json.
"""
from __future__ import annotations

import json
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from posttrain import distributed
from posttrain.checkpoints import latest_checkpoint
from posttrain.config import RewardSettings, Section, flat
from posttrain.contracts import Built, MethodSpec, RunInfo, StageDef
from posttrain.data.collate import pad_collate
from posttrain.errors import DataError, RecipeError
from posttrain.files import atomic_write_text, read_jsonl, write_jsonl
from posttrain.generation.to_file import source_path
from posttrain.logprobs import completion_logprobs, sequence_logprobs
from posttrain.losses.advantage import dapo_step_loss
from posttrain.methods.base import recipe_records
from posttrain.methods.dapo_step import data as dd
from posttrain.methods.sampling import SAMPLE_KEYS, SamplingSettings, sample_candidates, samples_file
from posttrain.pipeline import select as select_keys

CRITIC_DIR = "critic"
TRAIN_KEYS_FOR_CRITIC = ("optimizer", "weight_decay", "betas", "momentum", "schedule", "min_lr_ratio",
                         "max_grad_norm", "precision", "gradient_checkpointing")


class CriticSettings(Section):
    """The critic's own training run (the other optimiser settings are the recipe's `train`)."""
    lr: float = Field(1e-4, gt=0)
    epochs: float = Field(2.0, gt=0)
    max_steps: int | None = Field(None, gt=0)  # when set, instead of epochs
    micro_batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    warmup_steps: int = Field(0, ge=0)
    heldout: float = Field(0.1, ge=0, lt=1)  # share of problems whose states calibrate, not train, the critic
    head_init_std: float | None = None
    batch_size: int = Field(16, gt=0)  # for scoring


class DAPOStepParams(Section):
    name: Literal["dapo_step"]
    beta: float = Field(0.01, gt=0)
    min_spread: float = Field(0.1, ge=0)  # states whose advantages spread less are dropped
    keep: int = Field(6, ge=1)  # responses kept per problem, balanced between correct and wrong
    completions: int = Field(16, ge=1)  # M: completions per state (MC targets, candidate actions)
    sampling: SamplingSettings = SamplingSettings(num_candidates=32)  # N responses per problem
    reward: RewardSettings = RewardSettings()  # what "correct" means: this reward >= correct_at
    correct_at: float = 1.0
    # a candidate step that ends the response is valued by its own 0/1 reward, or by the critic
    terminal_value: Literal["reward", "critic"] = "reward"
    critic: CriticSettings = CriticSettings()
    logprob_batch_size: int = Field(16, gt=0)


# ------------------------------------------------------------------ critic and advantages stages


def critic_model(recipe, params: DAPOStepParams, t: int):
    """A fresh critic for iteration t: pi_t's trunk (a fresh LoRA when the recipe has one) + a scalar head."""
    from posttrain.models.start import load_iteration
    from posttrain.models.value_head import ScalarHeadModel, head_info
    lm, tok = load_iteration(recipe, t)
    return ScalarHeadModel(lm, info=head_info(recipe.model), init_std=params.critic.head_init_std,
                           seed=recipe.seed + t), tok


def critic_settings(recipe, c: CriticSettings):
    return recipe.train.model_copy(update={
        "lr": c.lr, "max_steps": c.max_steps, "epochs": None if c.max_steps is not None else c.epochs,
        "micro_batch_size": c.micro_batch_size, "grad_accum": c.grad_accum, "warmup_steps": c.warmup_steps,
        "eval_every": None})  # save_every stays the recipe's: a killed critic run resumes from it


def train_critic(recipe, params: DAPOStepParams, ctx) -> dict:
    """Stage `critic`: BCE on the MC targets of the training problems' states (an engine run in critic/,
    resumable), then calibration on the held-out problems' states -> critic_eval.json."""
    from posttrain.engine import Engine
    records = recipe_records(recipe)
    states, targets = read_jsonl(ctx.dir / "states.jsonl"), read_jsonl(ctx.dir / "targets.jsonl")
    critic, tok = critic_model(recipe, params, ctx.iteration)
    feats = dd.critic_features(dd.prompt_ids_of(tok, records, [s["prompt_id"] for s in states]), states,
                               targets)
    held = dd.heldout_problems(len(records), params.critic.heldout, recipe.seed, ctx.iteration)
    train = [f for f in feats if f["prompt_id"] not in held]
    if not train:
        raise DataError(f"no states to train the critic on ({len(feats)} states, all held out or none)")
    pad = tok.pad_token_id
    engine = Engine(critic, dd.CriticObjective(), train, lambda b: pad_collate(b, pad),
                    critic_settings(recipe, params.critic), run_dir=ctx.dir / CRITIC_DIR,
                    seed=recipe.seed + ctx.iteration, tokenizer=tok, show_progress=ctx.progress)
    result = engine.train(resume=True)
    model = result.model
    out = {"steps": result.steps, "wall_time_s": round(result.wall_time, 1), "final": result.final_metrics}
    # the constant to beat: the training states' mean target (a held-out set's own mean is unknowable)
    train_mean = float(np.mean([f["target"] for f in train]))
    for name, part in (("heldout", [f for f in feats if f["prompt_id"] in held]), ("train", train)):
        v = dd.critic_values(model, [f["input_ids"] for f in part], pad, params.critic.batch_size)
        out[name] = dd.calibration(v, [f["target"] for f in part], train_mean=train_mean)
    if distributed.is_main():
        atomic_write_text(ctx.dir / "critic_eval.json", json.dumps(out, indent=1))
    return {k: out[k] for k in ("steps", "wall_time_s")} | {
        "heldout_brier": out["heldout"].get("brier"), "train_brier": out["train"].get("brier")}


def load_critic(recipe, params: DAPOStepParams, ctx):
    ckpt = latest_checkpoint(ctx.dir / CRITIC_DIR)
    if ckpt is None:
        raise DataError(f"{ctx.dir / CRITIC_DIR} has no checkpoint: the critic stage did not finish")
    critic, tok = critic_model(recipe, params, ctx.iteration)
    critic.load_weights_(ckpt / "model")
    return critic.eval().requires_grad_(False), tok


def make_advantages(recipe, params: DAPOStepParams, ctx) -> dict:
    """Stage `advantages`: candidate values, advantages, the spread filter and pi_ref's log-probs of every
    kept candidate -> actions.jsonl (one row per kept state) and dapo_stats.json."""
    records = recipe_records(recipe)
    states = {s["state_id"]: s for s in read_jsonl(ctx.dir / "states.jsonl")}
    targets = read_jsonl(ctx.dir / "targets.jsonl")
    critic, tok = load_critic(recipe, params, ctx)
    prompt = dd.prompt_ids_of(tok, records, [s["prompt_id"] for s in states.values()])

    def context(sid: int) -> list[int]:
        return prompt[states[sid]["prompt_id"]] + states[sid]["prefix_ids"]
    want = [(t["state_id"], j) for t in targets if len(t["actions"]) >= 2 for j, a in enumerate(t["actions"])
            if not (a["terminal"] and params.terminal_value == "reward")]
    by_id = {t["state_id"]: t for t in targets}
    seqs = [context(sid) + by_id[sid]["actions"][j]["ids"] for sid, j in want]
    values = dict(zip(want, dd.critic_values(critic, seqs, tok.pad_token_id, params.critic.batch_size)))
    del critic
    kept, stats, spreads = dd.score_states(targets, values, params.min_spread, params.terminal_value)
    model, _ = ctx.policy()  # pi_ref: the iteration's starting model (a fresh adapter is the identity)
    pairs = [(context(t["state_id"]), a["ids"]) for t in kept for a in t["actions"]]
    logps = iter(dd.action_logprobs(model, pairs, tok.pad_token_id, params.logprob_batch_size))
    rows = [{"state_id": t["state_id"], "prompt_id": t["prompt_id"],
             "prefix_ids": states[t["state_id"]]["prefix_ids"],
             "mc": t["mc"], "actions": [{**a, "logp_ref": next(logps)} for a in t["actions"]]} for t in kept]
    out = {"iteration": ctx.iteration + 1, "states": len(targets), "states_kept": len(rows),
           "actions": sum(len(r["actions"]) for r in rows), "critic_values": len(values),
           "dropped_single_candidate": 0, "dropped_small_spread": 0, **dict(stats),
           "spread_quantiles": ([round(float(q), 4) for q in np.quantile(spreads, [0.5, 0.9, 1.0])]
                                if spreads else None)}  # median, 90th percentile, max
    atomic_write_text(ctx.dir / "dapo_stats.json", json.dumps(out, indent=1))
    if not rows:
        raise DataError(f"no state kept: every state had one candidate or an advantage spread below "
                        f"{params.min_spread}; see {ctx.dir / 'dapo_stats.json'}")
    write_jsonl(ctx.dir / "actions.jsonl", rows, fsync=True)
    return out


def stages(recipe, params: DAPOStepParams, ctx) -> list[StageDef]:
    if params.sampling.samples_file:
        raise RecipeError("method.sampling.samples_file: dapo_step samples each iteration from its "
                          "own policy")
    if params.sampling.stop:
        raise RecipeError("method.sampling.stop: dapo_step splits responses on their token ids, which a stop "
                          "string would cut mid-token; responses end at the end-of-turn token")
    settings = flat(recipe.model_dump(mode="json"))
    grading = ("method.reward", "method.correct_at")
    samples = samples_file(params, ctx).name
    return [
        StageDef("sample", select_keys(settings, SAMPLE_KEYS), lambda: sample_candidates(recipe, params, ctx),
                 outputs=[samples, source_path(samples).name], parallel=True),
        StageDef("states", select_keys(settings, ("seed", "method.keep", "model") + grading),
                 lambda: dd.make_states(recipe, params, ctx, samples_file(params, ctx)),
                 outputs=["states.jsonl"], inputs=[samples], uses_weights=False),
        StageDef("rollouts", select_keys(settings, SAMPLE_KEYS + ("method.completions",) + grading),
                 lambda: dd.make_rollouts(recipe, params, ctx),
                 outputs=["rollouts.jsonl", source_path("rollouts.jsonl").name, "targets.jsonl"],
                 inputs=["states.jsonl"], parallel=True),
        StageDef("critic", select_keys(settings, ("seed", "model", "method.critic") +
                                       tuple(f"train.{k}" for k in TRAIN_KEYS_FOR_CRITIC)),
                 lambda: train_critic(recipe, params, ctx), outputs=[CRITIC_DIR, "critic_eval.json"],
                 inputs=["states.jsonl", "targets.jsonl"], parallel=True),
        StageDef("advantages", select_keys(settings, ("method.min_spread", "method.terminal_value",
                                                      "method.critic.batch_size", "model")),
                 lambda: make_advantages(recipe, params, ctx), outputs=["actions.jsonl", "dapo_stats.json"],
                 inputs=["targets.jsonl", "critic_eval.json"]),
    ]


# ------------------------------------------------------------------ the actor


class DAPOStepObjective:
    """Advantage regression per candidate step; units = candidate steps."""

    def __init__(self, beta: float):
        self.beta = beta

    def units(self, batch) -> float:
        return batch["adv"].shape[0]

    def __call__(self, model, batch):
        lp, mask = completion_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        logp = sequence_logprobs(lp, mask)
        adv, ref = batch["adv"].to(logp.device), batch["logp_ref"].to(logp.device)
        loss = dapo_step_loss(logp, ref, adv, self.beta)
        with torch.no_grad():
            ratio = logp - ref
            metrics = {"log_ratio": ratio.sum(), "target_log_ratio": (adv / self.beta).sum(),
                       "abs_adv": adv.abs().sum(), "step_tokens": mask.sum(-1).float().sum()}
        return loss.sum(), metrics


def collate_states(features: list[dict], pad: int) -> dict:
    """A batch of states, each with all its candidate steps: one row per (state, candidate)."""
    rows = [dd.action_feature(f["context"], a) for f in features for a in f["actions"]]
    batch = pad_collate(rows, pad)
    batch["adv"] = torch.tensor([x for f in features for x in f["adv"]], dtype=torch.float32)
    batch["logp_ref"] = torch.tensor([x for f in features for x in f["logp_ref"]], dtype=torch.float32)
    batch["state_index"] = torch.tensor([i for i, f in enumerate(features) for _ in f["actions"]])
    return batch


def build(recipe, params: DAPOStepParams, model, tokenizer, run: RunInfo | None = None) -> Built:
    folder = run.dir if run is not None else recipe.run_dir
    path = folder / "actions.jsonl"
    if not path.is_file():
        raise RecipeError(f"{path} does not exist: run the recipe with `posttrain train`, which runs "
                          f"the data stages before training")
    records = recipe_records(recipe)
    rows = read_jsonl(path)
    prompt = dd.prompt_ids_of(tokenizer, records, [r["prompt_id"] for r in rows])
    feats, too_long = [], 0
    for r in rows:
        context = prompt[r["prompt_id"]] + r["prefix_ids"]
        if max(len(context) + len(a["ids"]) for a in r["actions"]) > recipe.data.max_length:
            too_long += 1
            continue
        feats.append({"context": context, "actions": [a["ids"] for a in r["actions"]],
                      "adv": [a["adv"] for a in r["actions"]],
                      "logp_ref": [a["logp_ref"] for a in r["actions"]]})
    if not feats:
        raise DataError(f"every state of {path} is longer than data.max_length={recipe.data.max_length}")
    stats = {"examples": len(feats), "actions": sum(len(f["actions"]) for f in feats),
             "too_long_states": too_long,
             "dapo": json.loads((folder / "dapo_stats.json").read_text())}
    pad = tokenizer.pad_token_id
    return Built(DAPOStepObjective(params.beta), feats, lambda b: collate_states(b, pad), stats=stats)


SPEC = MethodSpec("dapo_step", DAPOStepParams, build,
                  "Direct Advantage Policy Optimization (step-level): MC-trained step critic + "
                  "advantage regression",
                  data_kind="prompt", stages=stages)
