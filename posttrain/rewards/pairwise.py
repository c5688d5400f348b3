"""Pairwise preference oracles P(y1 > y2 | x), and the pointwise reward RSO builds from one.

- from a Bradley-Terry reward model: P = sigma(r(x, y1) - r(x, y2));
- from a judge LM prompted to answer "A" or "B": P(A) from the next-token logits of the two letters,
  asked in both orders and averaged (P = [P_A(y1, y2) + P_B(y2, y1)] / 2), which cancels position bias.

`score(prompts, completions, meta)` is RSO's trick (docs/methods.md "RSO"): r(x, y) = logit P(y > y_b | x)
against a baseline response y_b = `meta[i]["baseline"]`, clipped to ±`max_logit` so a certain judge
still gives a finite reward.
"""
from __future__ import annotations

import math

import torch

from posttrain.data.template import encode_prompt
from posttrain.rewards.base import check_batch, meta_value

JUDGE_TEMPLATE = (
    "Which response answers the request better?\n\nRequest:\n{prompt}\n\nResponse A:\n{a}\n\n"
    "Response B:\n{b}\n\nReply with a single letter, A or B.")


class PairwiseReward:
    name = "pairwise"

    def __init__(self, reward_model: str | None = None, judge: str | None = None, batch_size: int = 8,
                 max_logit: float = 10.0, oracle=None, judge_model=None, judge_tokenizer=None):
        """Exactly one of: `reward_model` (a path), `judge` (a model name), `oracle` (a RewardModelReward
        or any object with `.score`), or `judge_model` + `judge_tokenizer` (in memory)."""
        given = [x is not None for x in (reward_model, judge, oracle, judge_model)]
        if sum(given) != 1:
            raise ValueError("pairwise reward: give exactly one of reward_model, judge, oracle, judge_model")
        self.max_logit, self.batch_size = max_logit, batch_size
        self.rm = oracle
        if reward_model is not None:
            from posttrain.rewards.reward_model import RewardModelReward
            self.rm = RewardModelReward(reward_model)
        self.judge, self.tok = judge_model, judge_tokenizer
        if judge is not None:
            from posttrain.models import load_model
            self.judge, self.tok = load_model(judge)
            self.judge.eval()
        if self.judge is not None:
            self.letters = [self._letter_id(x) for x in ("A", "B")]

    def _letter_id(self, letter: str) -> int:
        ids = self.tok.encode(letter, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"judge tokenizer splits {letter!r} into {len(ids)} tokens")
        return ids[0]

    @torch.no_grad()
    def _p_first(self, prompts: list[str], a: list[str], b: list[str]) -> list[float]:
        """Judge's P("A") among {"A", "B"} with `a` shown first."""
        encoded = [encode_prompt(self.tok,
                                 [{"role": "user", "content": JUDGE_TEMPLATE.format(prompt=p, a=x, b=y)}])
                   for p, x, y in zip(prompts, a, b)]
        out = []
        pad = self.tok.pad_token_id
        for s in range(0, len(encoded), self.batch_size):
            chunk = encoded[s:s + self.batch_size]
            width = max(len(x) for x in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attn = torch.zeros_like(ids)
            for r, x in enumerate(chunk):  # left padding: the next-token logits sit at the last column
                ids[r, width - len(x):] = torch.tensor(x)
                attn[r, width - len(x):] = 1
            pos = (attn.cumsum(-1) - 1).clamp_min(0)
            logits = self.judge(input_ids=ids, attention_mask=attn, position_ids=pos,
                                logits_to_keep=1).logits[:, -1]
            two = logits[:, self.letters].float()
            out += torch.softmax(two, -1)[:, 0].tolist()
        return out

    def compare(self, prompts: list[str], first: list[str], second: list[str],
                meta: list[dict] | None = None) -> list[float]:
        """P(first[i] preferred over second[i] | prompts[i])."""
        if not (len(prompts) == len(first) == len(second)):
            raise ValueError("compare: prompts, first and second must have the same length")
        if self.rm is not None:
            r1 = self.rm.score(prompts, first, meta)
            r2 = self.rm.score(prompts, second, meta)
            return [1.0 / (1.0 + math.exp(-(x - y))) for x, y in zip(r1, r2)]
        ab = self._p_first(prompts, first, second)
        ba = self._p_first(prompts, second, first)
        return [(p + (1.0 - q)) / 2.0 for p, q in zip(ab, ba)]

    def score(self, prompts: list[str], completions: list[str],
              meta: list[dict] | None = None) -> list[float]:
        check_batch(prompts, completions, meta, self.name, need_meta=True)
        baselines = [str(meta_value(meta, i, "baseline", self.name)) for i in range(len(completions))]
        probs = self.compare(prompts, completions, baselines, meta)
        eps = 1.0 / (1.0 + math.exp(self.max_logit))
        return [math.log(min(max(p, eps), 1 - eps) / (1 - min(max(p, eps), 1 - eps))) for p in probs]
