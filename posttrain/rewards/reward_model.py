"""A trained Bradley-Terry reward model (`method: reward_model`) as a reward: r(x, y) = head at the last
token of the chat-rendered (prompt, completion).

Prompts are user turns unless `meta[i]["prompt_messages"]` gives the whole chat before the reply.
"""
from __future__ import annotations

import torch

from posttrain.data.collate import pad_collate
from posttrain.data.template import encode_conversation
from posttrain.rewards.base import check_batch


def _messages(prompt: str, meta: dict | None) -> list[dict]:
    if meta and meta.get("prompt_messages"):
        return list(meta["prompt_messages"])
    return [{"role": "user", "content": prompt}]


class RewardModelReward:
    name = "reward_model"

    def __init__(self, path: str, batch_size: int = 16, max_length: int = 1024, dtype: str | None = None,
                 model=None, tokenizer=None):
        """`path`: a folder written by the reward_model method (run dir, checkpoint, or its model/).
        `model` / `tokenizer` instead of `path`: an in-memory ScalarHeadModel (tests, pipelines)."""
        if model is None:
            from posttrain.models.value_head import load_scalar_head_model
            model, tokenizer = load_scalar_head_model(path, dtype=dtype)
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.max_length = batch_size, max_length

    @torch.no_grad()
    def rewards(self, conversations: list[list[dict]]) -> list[float]:
        feats = [encode_conversation(self.tokenizer, c, max_length=self.max_length, on_overflow="error")
                 for c in conversations]
        order = sorted(range(len(feats)), key=lambda i: len(feats[i]["input_ids"]))
        out = [0.0] * len(feats)
        was_training = self.model.training
        self.model.eval()
        try:
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                b = pad_collate([feats[i] for i in idx], self.tokenizer.pad_token_id)
                for i, v in zip(idx, self.model.last_values(b["input_ids"], b["attention_mask"]).tolist()):
                    out[i] = v
        finally:
            self.model.train(was_training)
        return out

    def score(self, prompts: list[str], completions: list[str],
              meta: list[dict] | None = None) -> list[float]:
        check_batch(prompts, completions, meta, self.name)
        convs = [_messages(p, meta[i] if meta else None) + [{"role": "assistant", "content": c}]
                 for i, (p, c) in enumerate(zip(prompts, completions))]
        return self.rewards(convs)
