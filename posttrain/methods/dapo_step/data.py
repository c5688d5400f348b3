"""The data stages of step-level DAPO (docs/methods.md "Direct Advantage Policy Optimization"), as files.

Per iteration, in the iteration's folder, each a pipeline stage (posttrain/methods/dapo_step/method.py):
- samples.jsonl: N responses per problem from pi_t (the resumable sample stage online methods share,
  posttrain/methods/sampling.py);
- states.jsonl: per problem, `keep` responses as balanced as the samples allow between correct and wrong;
  each split into steps at newline tokens (posttrain/methods/dapo_step/steps.py); a state is the prompt
  plus the first k steps of a response (k = 0 .. steps - 1) as TOKEN IDS, deduplicated per problem (every
  response shares the k = 0 state);
- rollouts.jsonl + targets.jsonl: M completions per state from pi_ref (= pi_t, the iteration's starting
  model), continuing the state's exact ids (PromptRecord.prefix_ids); the MC target of a state is the
  fraction of its completions graded correct; the first step of each completion is a candidate action
  (deduplicated by ids); an action that is the whole of a completion ended by the end-of-turn token is
  terminal and carries its own reward;
- critic/ (an engine run) + critic_eval.json: the critic, trained on the states' MC targets, with its
  calibration on held-out problems' states;
- actions.jsonl: per state, its candidates' values V(s∘a) (the critic; a terminal action's own 0/1 reward
  unless `terminal_value: critic`), advantages, pi_ref's log-probs; states with one candidate or a spread
  below `min_spread` are dropped.
Correctness is the recipe's reward (`method.reward`, default the math reward) reaching `correct_at`, on the
decoded ids of the whole response.
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from posttrain import distributed, files
from posttrain.data.records import PromptRecord
from posttrain.data.template import encode_prompt
from posttrain.errors import DataError
from posttrain.files import write_jsonl
from posttrain.generation.sampler import SamplingParams
from posttrain.generation.to_file import read_samples, sample_to_file
from posttrain.logprobs import IGNORE, completion_logprobs, sequence_logprobs
from posttrain.losses.advantage import advantages, critic_loss, keeps_state, mc_target
from posttrain.methods.base import recipe_records
from posttrain.methods.dapo_step.steps import newline_tokens, split_steps
from posttrain.rewards import get_reward, score_checked
from posttrain.tasks.sources import prompt_text

ROLLOUT_SEED_OFFSET = 1_000_003  # rollout streams must not repeat the responses' (same prompt ids)


# ------------------------------------------------------------------ grading


class Grader:
    """Whether a whole response (its decoded ids) is correct: the recipe's reward reaching `correct_at`."""

    def __init__(self, params, tokenizer):
        self.reward = get_reward(params.reward.name, **params.reward.options)
        self.at, self.tok = params.correct_at, tokenizer

    def __call__(self, record, ids_list: list[list[int]]) -> list[bool]:
        if not ids_list:
            return []
        texts = [self.tok.decode(ids, skip_special_tokens=True) for ids in ids_list]
        meta = [{"answer": record.answer, **record.meta}] * len(texts)
        scores = score_checked(self.reward, [prompt_text(record)] * len(texts), texts, meta)
        return [s >= self.at for s in scores]


# ------------------------------------------------------------------ states


def balanced_keep(correct: list[bool], keep: int, rng: np.random.Generator) -> list[int]:
    """Indices of `keep` responses, half correct and half wrong where the samples allow; a side with too few
    gives all it has and the other side fills the rest. Sorted; random within each side."""
    right = [i for i, c in enumerate(correct) if c]
    wrong = [i for i, c in enumerate(correct) if not c]
    n_right = min(len(right), max(keep // 2, keep - len(wrong)))
    n_wrong = min(len(wrong), keep - n_right)
    pick = list(rng.permutation(right)[:n_right]) + list(rng.permutation(wrong)[:n_wrong])
    return sorted(int(i) for i in pick)


def make_states(recipe, params, ctx, samples_file: Path) -> dict:
    """Stage `states`: balanced responses split into token-level states -> states.jsonl."""
    _, tok = ctx.policy()
    records = recipe_records(recipe)
    n = params.sampling.num_candidates
    samples, _ = read_samples(samples_file, n)
    if len(samples) != len(records):
        raise DataError(f"{samples_file} holds {len(samples)} of {len(records)} problems: the sample stage "
                        f"did not finish", file=str(samples_file))
    grader, nl = Grader(params, tok), newline_tokens(tok)
    rows, stats = [], Counter()
    for pid, rec in enumerate(records):
        ids = [c["token_ids"] for c in samples[pid]]
        correct = grader(rec, ids)
        stats["responses_correct"] += sum(correct)
        stats["problems_all_correct"] += all(correct)
        stats["problems_all_wrong"] += not any(correct)
        kept = balanced_keep(correct, params.keep, np.random.default_rng([recipe.seed, ctx.iteration, pid]))
        seen: set[tuple[int, ...]] = set()
        for i in kept:
            stats["kept_correct" if correct[i] else "kept_wrong"] += 1
            steps = split_steps(ids[i], nl)
            stats["steps"] += len(steps)
            prefix: list[int] = []
            for k, step in enumerate(steps):
                if tuple(prefix) not in seen:
                    seen.add(tuple(prefix))
                    rows.append({"state_id": len(rows), "prompt_id": pid, "depth": k,
                                 "prefix_ids": list(prefix),
                                 "response": i, "response_correct": correct[i]})
                prefix = prefix + step
    write_jsonl(ctx.dir / "states.jsonl", rows, fsync=True)
    kept = stats["kept_correct"] + stats["kept_wrong"]
    return {"problems": len(records), "responses": len(records) * n, "states": len(rows),
            "steps_per_kept_response": round(stats.pop("steps") / max(kept, 1), 2), **dict(stats)}


# ------------------------------------------------------------------ rollouts and targets


def state_records(tok, records: list, states: list[dict]) -> list[PromptRecord]:
    """One sampling record per state: the problem's prompt continued by the state's exact ids."""
    out = []
    for s in states:
        rec, ids = records[s["prompt_id"]], s["prefix_ids"]
        text = tok.decode(ids) if ids else None
        if ids and not text:
            raise DataError(f"state {s['state_id']}: its prefix ids decode to nothing")
        out.append(PromptRecord(rec.prompt, rec.answer, dict(rec.meta), assistant_prefix=text,
                                prefix_ids=tuple(ids) if ids else None))
    return out


def rollout_params(params) -> SamplingParams:
    s = params.sampling
    return SamplingParams(n=params.completions, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                          max_new_tokens=s.max_new_tokens, seed=s.seed + ROLLOUT_SEED_OFFSET)


def state_targets(states: list[dict], rollouts: dict[int, list[dict]], records: list, grader: Grader,
                  nl: frozenset[int], eos: set[int]) -> list[dict]:
    """Per state: its MC target and deduplicated candidate actions (first steps of its completions), each
    with how many completions began with it and how many of those were correct."""
    out = []
    for s in states:
        rec, prefix, rows = records[s["prompt_id"]], s["prefix_ids"], rollouts[s["state_id"]]
        correct = grader(rec, [prefix + r["token_ids"] for r in rows])
        actions: dict[tuple[int, ...], dict] = {}
        for r, ok in zip(rows, correct):
            steps = split_steps(r["token_ids"], nl)
            if not steps:
                continue
            first = tuple(steps[0])
            terminal = len(steps) == 1 and r["finish_reason"] == "stop" and bool(first) and first[-1] in eos
            a = actions.setdefault(first, {"ids": list(first), "terminal": terminal,
                                           "reward": float(ok) if terminal else None, "count": 0,
                                           "correct": 0})
            a["count"] += 1
            a["correct"] += int(ok)
        out.append({"state_id": s["state_id"], "prompt_id": s["prompt_id"], "mc": mc_target(correct),
                    "completions": len(rows), "actions": list(actions.values())})
    return out


def make_rollouts(recipe, params, ctx) -> dict:
    """Stage `rollouts`: M completions per state from pi_ref (resumable) -> rollouts.jsonl, then the MC
    targets and candidate actions -> targets.jsonl."""
    from posttrain.generation.sampler import stop_ids
    model, tok = ctx.policy()
    records = recipe_records(recipe)
    states = files.read_jsonl(ctx.dir / "states.jsonl")
    recs = state_records(tok, records, states)
    rollouts, st = sample_to_file(model, tok, recs, rollout_params(params), ctx.dir / "rollouts.jsonl",
                                  batch_size=params.sampling.batch_size, progress=ctx.progress)
    targets = state_targets(states, rollouts, records, Grader(params, tok), newline_tokens(tok),
                            stop_ids(tok, model))
    if distributed.is_main():
        write_jsonl(ctx.dir / "targets.jsonl", targets, fsync=True)
    n_actions = [len(t["actions"]) for t in targets]
    return {"states": len(states), "completions": len(states) * params.completions,
            "sampling_new_tokens": st.new_tokens, "sampling_tokens_per_s": round(st.tokens_per_s, 1),
            "mean_mc_target": round(float(np.mean([t["mc"] for t in targets])), 4) if targets else 0.0,
            "mean_candidates_per_state": round(float(np.mean(n_actions)), 2) if targets else 0.0,
            "terminal_candidates": sum(a["terminal"] for t in targets for a in t["actions"])}


# ------------------------------------------------------------------ critic


def heldout_problems(n_problems: int, frac: float, seed: int, iteration: int) -> set[int]:
    """The problems whose states calibrate the critic instead of training it (none when frac is 0)."""
    k = math.ceil(frac * n_problems) if frac > 0 else 0
    return set(int(i) for i in np.random.default_rng([seed, iteration, 7]).permutation(n_problems)[:k])


class CriticObjective:
    """Soft-label BCE of the critic's value at a state's last token against its MC target, per state."""

    def units(self, batch) -> float:
        return batch["input_ids"].shape[0]

    def __call__(self, model, batch):
        # through a DDP wrapper
        logits = model(batch["input_ids"], batch["attention_mask"], output="last_values")
        target = batch["target"].to(logits.dtype)
        loss = critic_loss(logits, target)
        with torch.no_grad():
            v = torch.sigmoid(logits)
            metrics = {"brier": ((v - target) ** 2).sum(), "value": v.sum(), "target": target.sum()}
        return loss.sum(), metrics


def critic_features(prompt_ids: dict[int, list[int]], states: list[dict], targets: list[dict]) -> list[dict]:
    by_id = {s["state_id"]: s for s in states}
    return [{"input_ids": prompt_ids[t["prompt_id"]] + by_id[t["state_id"]]["prefix_ids"], "target": t["mc"],
             "prompt_id": t["prompt_id"]} for t in targets]


@torch.no_grad()
def critic_values(critic, seqs: list[list[int]], pad: int, batch_size: int) -> list[float]:
    """V = sigmoid(head) at the last token of each sequence."""
    from posttrain.data.collate import pad_collate
    critic.eval()
    device = next(critic.parameters()).device
    out: list[float] = []
    for i in range(0, len(seqs), batch_size):
        b = pad_collate([{"input_ids": s} for s in seqs[i:i + batch_size]], pad)
        out += torch.sigmoid(critic(b["input_ids"].to(device), b["attention_mask"].to(device),
                                    output="last_values")).tolist()
    return out


def calibration(values: list[float], targets: list[float], bins: int = 10, *,
                train_mean: float | None = None) -> dict:
    """Brier score against the MC targets and a reliability table (equal-width bins of the prediction).

    Two constant predictors to compare the Brier score with:
    - `brier_of_the_train_mean`: always predicting `train_mean`, the mean target of the critic's training
      states (given by the caller): a baseline a predictor could know, so the fair one to beat;
    - `brier_of_own_mean`: always predicting these states' own mean target, which no predictor knows in
      advance. It is the lowest Brier of any constant (Brier(c) = Brier(own mean) + (own mean - c)^2), a lower
      bound, not a baseline. (Files written before this split call it `brier_of_the_mean`.)"""
    if not values:
        return {"states": 0}
    v, t = np.asarray(values, dtype=float), np.asarray(targets, dtype=float)
    which = np.minimum((v * bins).astype(int), bins - 1)
    table = [{"bin": [b / bins, (b + 1) / bins], "states": int((which == b).sum()),
              "mean_value": float(v[which == b].mean()), "mean_target": float(t[which == b].mean())}
             for b in range(bins) if (which == b).any()]
    out = {"states": len(v), "brier": float(((v - t) ** 2).mean()), "mean_target": float(t.mean()),
           "brier_of_own_mean": float(((t.mean() - t) ** 2).mean())}
    if train_mean is not None:
        out |= {"train_mean": float(train_mean),
                "brier_of_the_train_mean": float(((train_mean - t) ** 2).mean())}
    return out | {"reliability": table}


# ------------------------------------------------------------------ advantages


def mc_spreads(targets: list[dict]) -> list[float]:
    """The advantage spread of every state with two or more candidates when each candidate is valued by its
    own completions (correct / count) instead of the critic: what a critic that matched the Monte-Carlo
    returns would show the filter. Counts of 1-4 completions per candidate make these noisy (a diagnostic
    of the data, not the method's values)."""
    out = []
    for t in targets:
        if len(t["actions"]) >= 2:
            adv = advantages([a["correct"] / a["count"] for a in t["actions"]])
            out.append(max(adv) - min(adv))
    return out


def score_states(targets: list[dict], values: dict[tuple[int, int], float], min_spread: float,
                 terminal_value: str) -> tuple[list[dict], Counter, list[float]]:
    """Per state: each candidate's value (critic value, or a terminal action's reward), advantages, and the
    states kept (>= 2 candidates and a spread >= min_spread); also the spread of every state with >= 2
    candidates (how well the critic tells a state's next steps apart). `values[(state_id, j)]` is the
    critic's value of candidate j after the state."""
    kept, stats, spreads = [], Counter(), []
    for t in targets:
        acts = t["actions"]
        if len(acts) < 2:
            stats["dropped_single_candidate"] += 1
            continue
        vals = [a["reward"] if (a["terminal"] and terminal_value == "reward") else values[(t["state_id"], j)]
                for j, a in enumerate(acts)]
        adv = advantages(vals)
        spreads.append(max(adv) - min(adv))
        if not keeps_state(adv, min_spread):
            stats["dropped_small_spread"] += 1
            continue
        kept.append({**t, "actions": [{**a, "value": v, "adv": x} for a, v, x in zip(acts, vals, adv)]})
    return kept, stats, spreads


@torch.no_grad()
def action_logprobs(model, seqs: list[tuple[list[int], list[int]]], pad: int, batch_size: int) -> list[float]:
    """Summed log pi(a | s) for (state ids, action ids) pairs."""
    from posttrain.data.collate import pad_collate
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    out: list[float] = []
    for i in range(0, len(seqs), batch_size):
        b = pad_collate([action_feature(s, a) for s, a in seqs[i:i + batch_size]], pad)
        lp, mask = completion_logprobs(model, b["input_ids"].to(device), b["attention_mask"].to(device),
                                       b["labels"].to(device))
        out += sequence_logprobs(lp, mask).tolist()
    model.train(was)
    return out


def action_feature(state: list[int], action: list[int]) -> dict:
    return {"input_ids": state + action, "labels": [IGNORE] * len(state) + action}


def prompt_ids_of(tok, records: list, pids) -> dict[int, list[int]]:
    return {pid: encode_prompt(tok, records[pid].prompt) for pid in sorted(set(pids))}
