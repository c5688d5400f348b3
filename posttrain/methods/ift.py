"""IFT, intuitive fine-tuning (Hua et al., ACL 2025; docs/methods.md "IFT"), on the shared engine.

SFT with a "temporal residual connection", as the official code computes it
(TsinghuaC3I/Intuitive-Fine-Tuning, src/trainers.py, loss "ift"):
1. a no-grad pass of the current model over the gold sequence gives the greedy prediction y_hat_t of
   every response token from its gold prefix;
2. the training pass embeds through a FROZEN copy E of the initial input-embedding table, and at
   response positions mixes (1 - lambda) E[x_t] + lambda E[y_hat_t] (prompt positions: E[x_t]). The
   no-grad pass embeds through E too, as the official code does;
3. token losses against the gold targets, weighted by discounted suffix sums of the token losses
   (posttrain/losses/sft.py `ift_token_weights`, gradient through the weights), mean per sequence.
lambda (`lam`) may warm up linearly from `lam_start` over `lam_warmup_steps` optimisation steps (the
official `lambda_schedule: linear`), read from the engine's step (`set_step`), so resume is exact.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from posttrain.config import Section
from posttrain.contracts import Built, MethodSpec, RunInfo
from posttrain.data.collate import pad_collate
from posttrain.errors import RecipeError
from posttrain.logprobs import IGNORE, completion_logprobs, greedy_predictions
from posttrain.losses.sft import ift_token_weights, sft_loss
from posttrain.methods.sft import SFTObjective, encode_splits


class IFTParams(Section):
    name: Literal["ift"] = "ift"
    lam: float = Field(0.2, ge=0, le=1)  # the paper's lambda: the weight of the model's own prediction
    gamma: float = Field(0.95, ge=0, le=1)  # discount of the suffix sums behind the token weights
    lam_start: float | None = Field(None, ge=0, le=1)  # None: lambda constant; else linear from here ...
    lam_warmup_steps: int = Field(0, ge=0)  # ... to `lam` over this many optimisation steps


def lambda_at(params: IFTParams, step: int) -> float:
    """lambda at optimisation step `step` (0-based): the official linear warmup from lam_start to lam."""
    if params.lam_start is None or params.lam_warmup_steps == 0:
        return params.lam
    frac = min(1.0, step / params.lam_warmup_steps)
    return min(1.0, max(0.0, params.lam_start + (params.lam - params.lam_start) * frac))


class IFTObjective(SFTObjective):
    """Per-sequence-mean weighted NLL of the gold response under mixed input embeddings."""

    def __init__(self, params: IFTParams, frozen_embedding: torch.Tensor):
        super().__init__("sequence")
        self.params = params
        self.frozen = frozen_embedding
        self.lam = lambda_at(params, 0)

    def set_step(self, step: int) -> None:
        self.lam = lambda_at(self.params, step)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        if self.frozen.device != ids.device:
            self.frozen = self.frozen.to(ids.device)
        return F.embedding(ids, self.frozen)

    def __call__(self, model, batch):
        ids, attn, labels = batch["input_ids"], batch.get("attention_mask"), batch["labels"]
        gold = self.embed(ids)
        predicted, sft_logps, mask = greedy_predictions(model, None, attn, labels, inputs_embeds=gold)
        response = labels != IGNORE
        mixed = torch.where(response[..., None], (1 - self.lam) * gold + self.lam * self.embed(
            torch.where(response, predicted, ids)), gold)
        token_logps, mask = completion_logprobs(model, None, attn, labels, inputs_embeds=mixed)
        weights = ift_token_weights(-token_logps, mask, self.params.gamma)
        loss_sum, _, metrics = sft_loss(token_logps, mask, weights, "sequence")
        n = mask.sum(-1).clamp(min=1)
        has = mask.any(-1)
        with torch.no_grad():
            # per-sequence means, summed like the loss: the engine reports them as means over sequences
            metrics["sft_nll"] = ((-sft_logps * mask).sum(-1) / n)[has].sum()
            metrics["mixed_nll"] = ((-token_logps.detach() * mask).sum(-1) / n)[has].sum()
            metrics["greedy_match"] = (((predicted == labels) & mask).sum(-1) / n)[has].sum()
            metrics["lambda"] = self.lam * has.sum()
        return loss_sum, metrics


def frozen_input_embedding(model) -> torch.Tensor:
    """A copy of the input-embedding table as it is now, never trained. Under LoRA the table is frozen
    already and is used as is (no second copy of a 49k x d table)."""
    weight = model.get_input_embeddings().weight
    return weight.detach() if not weight.requires_grad else weight.detach().clone()


def build(recipe, params: IFTParams, model, tokenizer, run: RunInfo | None = None) -> Built:
    data = recipe.data
    if data.packing:
        # the suffix sums and the per-sequence mean run along a row: a packed row mixes sequences
        raise RecipeError("method ift normalises and discounts per sequence, so it cannot train on packed "
                          "rows: set data.packing: false")
    feats, eval_feats, stats = encode_splits(recipe, tokenizer)
    pad = tokenizer.pad_token_id

    def collate(batch):
        return pad_collate(batch, pad)
    return Built(IFTObjective(params, frozen_input_embedding(model)), feats, collate, eval_feats, stats=stats)


SPEC = MethodSpec("ift", IFTParams, build, "intuitive fine-tuning: SFT with a temporal residual connection",
                  data_kind="sft")
