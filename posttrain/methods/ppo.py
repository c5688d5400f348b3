"""PPO for language models (docs/methods.md "PPO") on the shared engine: a rollout hook + a clipped objective.

Layout of one PPO iteration (every `steps_per_iteration` engine steps):
1. rollout (the engine's per-step rollout hook): `rollout_batch` prompts (a seeded permutation per epoch over
the
   prompt set), one sample each from the current policy (temperature 1 by default), then, without grad:
   log-probs and values under the current policy+value head (old), log-probs under the reference
   (`reference: start` by default: the model the run starts from, e.g. the SFT model when model.adapter
   is set; see posttrain/references.py), the reward's score, per-token
   reward r_t = -beta * KL_t (+ score on the last response token), GAE, advantage whitening. The buffer
   replaces the engine's train_data. Under N processes each rank samples and scores its shard of the
   prompts (the samples are seeded by global prompt id, so they are the one-process samples), the
   per-sample results are gathered, and the rest runs on the whole batch on every rank: every rank holds
   the one-process buffer.
2. `ppo_epochs` passes over the buffer in minibatches of train.micro_batch_size * train.grad_accum *
   processes (the engine's order: a new shuffle per epoch), one optimiser step per minibatch, on
   loss = clipped policy loss + vf_coef * clipped value loss, averaged over response tokens.

The value head is `ScalarHeadModel`'s linear head on the policy's own trunk (final hidden states, with
the policy's LoRA): one forward gives logits and values, and the head's weights are trained alongside
the adapter. V(s_t) is read at the position that predicts token t. `train.max_steps` counts optimiser
steps (iterations x steps_per_iteration). The buffer, the KL controller and the iteration are in every
checkpoint, so a resume inside an iteration goes on exactly as the uninterrupted run.
"""
from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import Field

from posttrain import distributed
from posttrain.config import RewardSettings, Section
from posttrain.contracts import REFERENCES, Built, DataPlan, MethodSpec, Reference, RolloutOutput, RunInfo
from posttrain.data.collate import pad_collate
from posttrain.data.readers import invalid_rows
from posttrain.data.records import completion_text
from posttrain.data.template import encode_prompt
from posttrain.errors import RecipeError
from posttrain.eval.nlu import nlu_eval
from posttrain.generation.sampler import SamplingParams, sample
from posttrain.logprobs import IGNORE, completion_logprobs, gather_logprobs, target_positions
from posttrain.losses.policy import (
    KL_KINDS,
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    explained_variance,
    gae,
    ppo_policy_loss,
    ppo_value_loss,
    shaped_rewards,
    whiten,
)
from posttrain.models.value_head import ScalarHeadModel, head_info
from posttrain.references import resolve_reference
from posttrain.rewards import get_reward, score_checked
from posttrain.tasks.nlu import nlu_accuracy
from posttrain.tasks.sources import load_source, prompt_text

log = logging.getLogger(__name__)


class PPOParams(Section):
    name: Literal["ppo"]
    reward: RewardSettings = RewardSettings(name="label")
    rollout_batch: int = Field(16, gt=0)  # prompts per iteration (paper: batch 16, minibatch 8)
    ppo_epochs: int = Field(4, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(16, gt=0)
    kl_control: Literal["adaptive", "fixed"] = "adaptive"
    kl_coef: float = Field(0.2, ge=0)  # beta (the adaptive controller's start)
    kl_target: float = Field(6.0, gt=0)
    kl_horizon: int = Field(10000, gt=0)
    kl_estimator: Literal[KL_KINDS] = "k1"  # type: ignore[valid-type]
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    clip: float = Field(0.2, gt=0)
    value_clip: float = Field(0.2, gt=0)
    vf_coef: float = Field(0.1, ge=0)
    whiten_advantages: bool = True
    # the KL anchor: `start` is the model the run starts from (with model.adapter: the SFT model, as RL4GLUE)
    reference: Literal[REFERENCES] = "start"  # type: ignore[valid-type]
    eval_max_new_tokens: int = Field(8, gt=0)
    eval_batch_size: int = Field(16, gt=0)


def logps_and_values(model: ScalarHeadModel, batch: dict):
    """(log-probs, values, mask, kept logits) of the response tokens from one trunk pass; the value of
    the state before token t is read where its logits are (position t-1). [B, T] tensors, 0 off mask."""
    labels = batch["labels"]
    mask, keep = target_positions(labels)
    # through forward, so a DDP-wrapped model synchronises the gradients of this pass
    logits, values_all = model(batch["input_ids"], batch["attention_mask"], output="logits_and_values",
                               logits_to_keep=keep)
    logp = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    logp = logp.masked_scatter(mask, gather_logprobs(logits, labels[mask]))
    values = torch.zeros_like(logp).masked_scatter(mask, values_all[keep])
    return logp, values, mask, logits


class PPOObjective:
    def __init__(self, params: PPOParams):
        self.p = params

    def units(self, batch) -> float:
        return float(target_positions(batch["labels"])[0].sum())

    def __call__(self, model, batch):
        logp, values, mask, logits = logps_and_values(model, batch)
        pg, n, pg_m = ppo_policy_loss(logp, batch["old_logps"], batch["advantages"], mask, self.p.clip)
        vf, _, vf_m = ppo_value_loss(values, batch["old_values"], batch["returns"], mask, self.p.value_clip)
        metrics = {**pg_m, **vf_m, "policy/entropy": entropy_from_logits(logits.detach()).sum()}
        return pg + self.p.vf_coef * vf, metrics


class PPORollouts:
    """The rollout hook: a fresh buffer at each iteration start; its state (the KL controller and the
    iteration) is checkpointed by the engine together with the buffer, so a resume inside an iteration
    trains on the very rollouts the uninterrupted run drew."""

    def __init__(self, params: PPOParams, records, tokenizer, reward, seed: int, steps_per_iteration: int,
                 max_prompt_length: int | None, reference: Reference):
        self.p, self.records, self.tok, self.reward = params, records, tokenizer, reward
        self.seed, self.steps_per_iteration = seed, steps_per_iteration
        self.max_prompt_length, self.reference = max_prompt_length, reference
        self.kl = (AdaptiveKLController(params.kl_coef, params.kl_target, params.kl_horizon)
                   if params.kl_control == "adaptive" else FixedKLController(params.kl_coef))
        self.iteration: int | None = None
        self.buffer_size = params.rollout_batch

    def __call__(self, model, step: int) -> RolloutOutput | None:
        it = step // self.steps_per_iteration
        if self.iteration == it:
            return None
        buffer, stats = self.rollout(model, it)
        self.iteration = it
        return RolloutOutput(buffer, {f"rollout/{k}": v for k, v in stats.items()})

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "kl": self.kl.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.iteration = state["iteration"]
        self.kl.load_state_dict(state["kl"])

    @torch.no_grad()
    def rollout(self, model: ScalarHeadModel, it: int) -> tuple[list[dict], dict[str, float]]:
        p = self.p
        # the prompt stream is a data plan of its own: rollout_batch prompts per iteration, reshuffled per
        # pass
        idx = DataPlan(len(self.records), p.rollout_batch, it + 1, self.seed).step(it)
        rows = distributed.gather_shards(self.rollout_shard(model, it,
                                                            distributed.shard(list(enumerate(idx)))))
        # from here on every rank computes the same numbers from the same whole batch
        batch = pad_collate(rows, self.tok.pad_token_id)
        logp_old, values, score = batch["old_logps"], batch["old_values"], batch["score"]
        mask = target_positions(batch["labels"])[0]
        beta = self.kl.value
        rewards, kl = shaped_rewards(score, logp_old, batch["ref_logps"], mask, beta, p.kl_estimator)
        adv, returns = gae(rewards, values, mask, p.gamma, p.lam)
        if p.whiten_advantages:
            adv = whiten(adv, mask)
        kl_seq = (kl * mask).sum(-1)
        self.kl.update(float(kl_seq.mean()), p.rollout_batch)
        stats = {"score": float(score.mean()), "kl": float(kl_seq.mean()), "beta": beta,
                 "non_score_reward": float((-beta * kl * mask).sum(-1).mean()),
                 "response_length": float(mask.sum(-1).float().mean()),
                 "explained_variance": float(explained_variance(values, returns, mask))}
        log.info("ppo iteration %d: %s", it, stats)
        return [{"input_ids": f["input_ids"], "labels": f["labels"], "old_logps": f["old_logps"],
                 "old_values": f["old_values"], "advantages": adv[i, :len(f["input_ids"])].tolist(),
                 "returns": returns[i, :len(f["input_ids"])].tolist()} for i, f in enumerate(rows)], stats

    def rollout_shard(self, model: ScalarHeadModel, it: int, items: list[tuple[int, int]]) -> list[dict]:
        """One sample for each (position in the iteration, record index) of `items`, with its old
        log-probs, values and reference log-probs (unpadded lists) and its score."""
        p = self.p
        recs = [self.records[i] for _, i in items]
        prompts = [encode_prompt(self.tok, r.prompt, max_length=self.max_prompt_length,
                                 assistant_prefix=r.assistant_prefix) for r in recs]
        was_training = model.training
        model.eval()
        try:
            out, _ = sample(model.lm, self.tok, prompts,
                            SamplingParams(temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
                                           max_new_tokens=p.max_new_tokens, seed=self.seed * 1_000_003 + it),
                            prompt_ids=[it * p.rollout_batch + j for j, _ in items],
                            batch_size=p.rollout_batch)
            samples = [row[0] for row in out]
            feats = [{"input_ids": pr + s.token_ids, "labels": [IGNORE] * len(pr) + s.token_ids}
                     for pr, s in zip(prompts, samples)]
            device = next(model.parameters()).device  # the collated batch is built on the CPU
            batch = {k: v.to(device) for k, v in pad_collate(feats, self.tok.pad_token_id).items()}
            logp_old, values, _, _ = logps_and_values(model, batch)
            with self.reference.use(model.lm) as ref:
                logp_ref, _ = completion_logprobs(ref, batch["input_ids"], batch["attention_mask"],
                                                  batch["labels"])
        finally:
            model.train(was_training)
        texts = [completion_text(r, s.text) for r, s in zip(recs, samples)]
        meta = [{"answer": r.answer, **r.meta} for r in recs]
        score = score_checked(self.reward, [prompt_text(r) for r in recs], texts, meta)
        return [{**f, "old_logps": logp_old[i, :len(f["input_ids"])].tolist(),
                 "old_values": values[i, :len(f["input_ids"])].tolist(),
                 "ref_logps": logp_ref[i, :len(f["input_ids"])].tolist(), "score": score[i]}
                for i, f in enumerate(feats)]


def _eval_fn(params: PPOParams, records, tokenizer, reward, max_prompt_length):
    """NLU accuracy when the eval prompts carry labels; else the mean reward of greedy answers. Each rank
    decodes its shard of the prompts; the numbers are computed from all of them on every rank."""
    if records and all("label" in r.meta for r in records):
        def completions(model, part):
            res = nlu_eval(model.lm, tokenizer, part, max_new_tokens=params.eval_max_new_tokens,
                           batch_size=params.eval_batch_size, max_prompt_length=max_prompt_length,
                           keep_samples=len(part))
            return [s["completion"] for s in res["samples"]]

        def fn(model):
            texts = distributed.map_sharded(lambda part: completions(model, part) if part else [], records)
            res = nlu_accuracy(texts, [r.meta for r in records])
            return {"accuracy": res["accuracy"], "invalid_rate": res["invalid_rate"]}
        return fn

    def scores(model, part):
        if not part:
            return []
        ids = [encode_prompt(tokenizer, r.prompt, max_length=max_prompt_length,
                             assistant_prefix=r.assistant_prefix)
               for r in part]
        out, _ = sample(model.lm, tokenizer, ids, SamplingParams(temperature=0,
                                                                 max_new_tokens=params.max_new_tokens),
                        batch_size=params.eval_batch_size)
        texts = [completion_text(r, row[0].text) for r, row in zip(part, out)]
        meta = [{"answer": r.answer, **r.meta} for r in part]
        return score_checked(reward, [prompt_text(r) for r in part], texts, meta)

    def fn(model):
        s = distributed.map_sharded(lambda part: scores(model, part), records)
        return {"reward": sum(s) / len(s)}
    return fn


def build(recipe, params: PPOParams, model, tokenizer, run: RunInfo | None = None) -> Built:
    data, cfg = recipe.data, recipe.train
    records = load_source(data.train, "prompt", instruction=data.instruction,
                          system_prompt=data.system_prompt, key="data.train")
    world = distributed.world()
    minibatch = cfg.micro_batch_size * cfg.grad_accum * world
    if params.rollout_batch % minibatch:
        raise RecipeError(f"method.rollout_batch ({params.rollout_batch}) must be a multiple of the "
                          f"minibatch train.micro_batch_size * train.grad_accum * processes "
                          f"({cfg.micro_batch_size} * {cfg.grad_accum} * {world} = {minibatch})")
    if len(records) < params.rollout_batch:
        raise RecipeError(f"{len(records)} prompts but method.rollout_batch is {params.rollout_batch}")
    steps_per_iteration = params.ppo_epochs * params.rollout_batch // minibatch
    reward = get_reward(params.reward.name, **params.reward.options)
    reference = resolve_reference(params.reference, model, recipe.model, run.iteration if run else 0)
    info = head_info(recipe.model)
    policy = ScalarHeadModel(model, info=info, seed=recipe.seed, logits=True)
    objective = PPOObjective(params)
    rollouts = PPORollouts(params, records, tokenizer, reward, recipe.seed, steps_per_iteration,
                     data.max_prompt_length, reference)
    eval_fn = None
    if data.eval is not None:
        ev = load_source(data.eval, "prompt", instruction=data.instruction, system_prompt=data.system_prompt,
                         key="data.eval")
        eval_fn = _eval_fn(params, ev, tokenizer, reward, data.max_prompt_length)
    return Built(objective, None, lambda f: pad_collate(f, tokenizer.pad_token_id), None,
                 rollout=rollouts, model=policy, eval_fn=eval_fn,
                 stats={"prompts": len(records), "steps_per_iteration": steps_per_iteration,
                        **invalid_rows(records)})


SPEC = MethodSpec("ppo", PPOParams, build, "PPO with a value head on the policy trunk (rollout hook)",
                  data_kind="prompt")
