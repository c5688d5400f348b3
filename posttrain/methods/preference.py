"""Offline preference optimisation (DPO, cDPO, rDPO, IPO, SLiC/RSO hinge, RPO) on the shared engine.

Data prep: pairs → (prompt, chosen, rejected) token ids. Objective: one forward gives per-sequence
log-probs of chosen and rejected. `reference:` says which model the log-ratios are against (base, start,
previous: posttrain/references.py; default start) and `reference_mode:` how its log-probs are had:
- `precomputed` (default): one pass before training over exactly the pairs the run's data plan uses,
  cached on disk under POSTTRAIN_CACHE keyed by a hash of the reference's weights and the exact token ids
  (so data, template and truncation), and reused across runs. Training then does one forward per step.
  A batch without its precomputed reference is an error, never a silent live pass.
- `live`: computed at every step (the adapter-off policy for LoRA, else a frozen model in memory).
The loss is a pure function from posttrain/losses/preference.py, picked by name.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Literal

import torch
from pydantic import Field
from safetensors.torch import load_file, save_file

from posttrain import distributed
from posttrain.config import Section
from posttrain.contracts import REFERENCES, Built, MethodSpec, Reference, RunInfo
from posttrain.data.collate import pair_collate, shared_prefix_collate
from posttrain.data.readers import invalid_rows
from posttrain.data.template import encode_pairs
from posttrain.errors import RecipeError, TrainingError
from posttrain.files import atomic_path
from posttrain.logprobs import (
    completion_logprobs,
    sequence_logprobs,
    shared_prefix_pair_logprobs,
    supports_shared_prefix,
)
from posttrain.losses.preference import NEEDS_PREVIOUS, PREFERENCE_LOSSES, PairLogps
from posttrain.methods.base import recipe_records
from posttrain.models import cache_dir, unwrap
from posttrain.models.attention import supports_pair_rows
from posttrain.references import resolve_reference

LOSS_NAMES = tuple(PREFERENCE_LOSSES)
log = logging.getLogger(__name__)


class PreferenceLossParams(Section):
    """A preference loss's parameters and its reference; shared by every method that trains on pairs."""
    # the same bounds the loss functions guard, checked when the recipe loads (an error names the key)
    beta: float = Field(0.1, gt=0)
    eps: float = Field(0.0, ge=0.0, lt=0.5)  # assumed label-flip rate (cdpo, rdpo); 0.5 is pure noise
    tau: float = Field(0.1, ge=0)  # ipo (> 0, checked by the loss); inpo's KL coefficient (0 <= tau <= eta)
    gamma: float = Field(0.05, gt=0)  # hinge, hinge_norm
    eta: float = Field(0.005, ge=0)  # rpo (summed NLL, coefficient eta*beta)
    alpha: float = Field(0.2, ge=0)  # rpo_token_mean
    reference: Literal[REFERENCES] = "start"  # type: ignore[valid-type]
    reference_mode: Literal["precomputed", "live"] = "precomputed"
    reference_batch_size: int = 8
    # shared_prefix: one row per pair (prompt once, rejected masked from chosen); concatenated: 2B rows.
    # Same log-probs to float rounding; shared_prefix is faster and lighter, and needs sdpa/eager attention.
    pair_forward: Literal["shared_prefix", "concatenated"] = "shared_prefix"
    # shared_prefix rows of a micro-batch end to end in ONE row, no padding (posttrain/models/attention.py);
    # needs transformers' sdpa with full attention layers, else rows are padded
    padding_free: bool = True


class PreferenceParams(PreferenceLossParams):
    name: Literal[("preference",) + LOSS_NAMES]  # type: ignore[valid-type]
    loss: Literal[LOSS_NAMES] | None = None  # type: ignore[valid-type]  # default: the method name

    @property
    def loss_name(self) -> str:
        if self.loss is not None:
            return self.loss
        if self.name == "preference":
            raise ValueError("method.loss is required when method.name is 'preference'")
        return self.name

    def loss_kwargs(self) -> dict:
        _, _, names = PREFERENCE_LOSSES[self.loss_name]
        return {k: getattr(self, k) for k in names}


def pair_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen logp, rejected logp, chosen tokens, rejected tokens), from one forward: shared-prefix rows
    (the prompt once per pair) or the concatenated [chosen..., rejected...] rows."""
    if "pair_segments" in batch:
        out = shared_prefix_pair_logprobs(model, batch)
        (tc, mc), (tr, mr) = out["chosen"], out["rejected"]
        return sequence_logprobs(tc, mc), sequence_logprobs(tr, mr), mc.sum(-1), mr.sum(-1)
    token_logps, mask = completion_logprobs(model, batch["input_ids"], batch["attention_mask"],
                                            batch["labels"])
    seq, ntok = sequence_logprobs(token_logps, mask), mask.sum(-1)
    b = seq.shape[0] // 2
    return seq[:b], seq[b:], ntok[:b], ntok[b:]


def n_pairs(batch: dict) -> int:
    return batch["chosen_targets"].shape[0] if "pair_segments" in batch else batch["input_ids"].shape[0] // 2


class PreferenceObjective:
    def __init__(self, params: PreferenceParams, reference: Reference | None = None,
                 previous: Reference | None = None):
        self.params = params
        self.fn, self.needs_ref, _ = PREFERENCE_LOSSES[params.loss_name]
        self.needs_prev = params.loss_name in NEEDS_PREVIOUS
        self.kwargs = params.loss_kwargs()
        # only for reference_mode="live": the reference, and the previous iterate (INPO's pi_t)
        self.models = {"ref": reference, "prev": previous}

    def units(self, batch) -> float:
        return n_pairs(batch)

    @torch.no_grad()
    def reference_logps(self, model, batch, key: str = "ref") -> tuple[torch.Tensor, torch.Tensor]:
        if f"{key}_chosen" in batch:
            return batch[f"{key}_chosen"], batch[f"{key}_rejected"]
        if self.models[key] is None:
            raise TrainingError(f"a batch has no precomputed {ANCHORS[key]} log-probs: the data plan they "
                                "were computed for is not the one being trained")
        with self.models[key].use(model) as ref:
            rc, rr, _, _ = pair_logps(ref, batch)
        return rc, rr

    def __call__(self, model, batch):
        pc, pr, nc, nr = pair_logps(model, batch)
        rc = rr = tc = tr = None
        if self.needs_ref:
            rc, rr = self.reference_logps(model, batch)
        if self.needs_prev:
            tc, tr = self.reference_logps(model, batch, "prev")
        lp = PairLogps(pc, pr, rc, rr, nc.to(pc.dtype), nr.to(pr.dtype), tc, tr)
        losses, metrics = self.fn(lp, **self.kwargs)
        return losses.sum(), {k: v.detach().sum() for k, v in metrics.items()}


ANCHORS = {"ref": "reference", "prev": "previous-iterate"}


# ---- precomputed reference log-probs ----------------------------------------------------------
def reference_key(weights: str, feats: list[dict], layout: str, batch_size: int) -> str:
    """The cache key of reference log-probs: the weights, the pairs' tokens in order, and how they were
    batched (layout, batch size, processes). Another batching gives the same values only to float
    rounding (~1e-6: matmul rounding depends on the rows beside a pair), and a run resumed from the
    cache must see the exact values it would have computed."""
    h = hashlib.sha256(f"{weights}|{layout}|{batch_size}|{distributed.world()}".encode())
    for f in feats:
        for k in ("prompt_ids", "chosen_ids", "rejected_ids"):
            h.update(json.dumps(f[k]).encode())
    return h.hexdigest()[:32]


@torch.no_grad()
def compute_reference(reference: Reference, model, feats: list[dict], pad_id: int, batch_size: int,
                      layout: str = "concatenated") -> tuple[torch.Tensor, torch.Tensor]:
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    try:
        with reference.use(model) as ref:
            for s in range(0, len(feats), batch_size):
                rc, rr, _, _ = pair_logps(ref, collate_pairs(pad_id, layout)(feats[s:s + batch_size]))
                chosen.append(rc)
                rejected.append(rr)
    finally:
        model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


def _sharded_reference(reference: Reference, model, feats: list[dict], pad_id: int, batch_size: int,
                       layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """compute_reference with the pairs split across ranks and gathered back in order."""
    part = distributed.shard(feats)
    rows: list = []
    if part:
        rc, rr = compute_reference(reference, model, part, pad_id, batch_size, layout)
        rows = list(zip(rc.tolist(), rr.tolist()))
    rows = distributed.gather_shards(rows)
    t = torch.tensor(rows, dtype=torch.float32).reshape(-1, 2)
    return t[:, 0].contiguous(), t[:, 1].contiguous()


def attach_reference(reference: Reference, model, feats: list[dict], pad_id: int, batch_size: int,
                     layout: str = "concatenated", key: str = "ref") -> dict:
    """Fill each feature's <key>_chosen / <key>_rejected ("ref": the reference, "prev": the previous
    iterate), from the disk cache when the key matches (the cache is keyed by weights, not by role)."""
    name = "reference_cache" if key == "ref" else "previous_cache"
    if not feats:
        return {name: "empty"}
    digest = reference_key(reference.weights_hash(model), feats, layout, batch_size)
    path = cache_dir() / "reference_logps" / f"{digest}.safetensors"
    status = "hit"
    # rank 0 decides: a rank that looked after rank 0 wrote the file would skip the shared computation
    if distributed.broadcast_object(path.exists()):
        t = load_file(str(path))
        rc, rr = t["chosen"], t["rejected"]
    else:
        status = "computed"
        rc, rr = _sharded_reference(reference, model, feats, pad_id, batch_size, layout)
        if distributed.is_main():
            with atomic_path(path) as tmp:
                save_file({"chosen": rc.contiguous(), "rejected": rr.contiguous()}, str(tmp))
    for f, c, r in zip(feats, rc.tolist(), rr.tolist()):
        f[f"{key}_chosen"], f[f"{key}_rejected"] = c, r
    return {name: status, f"{name}_file": str(path)}


PAIR_LAYOUTS = ("concatenated", "shared_prefix", "padding_free")


def pair_layout(params: PreferenceLossParams, model) -> str:
    """How a batch of pairs is laid out: 2B concatenated rows, B shared-prefix rows (prompt once), or
    those end to end in one padding-free row; what the recipe asks, where the model's attention allows."""
    if params.pair_forward == "concatenated":
        return "concatenated"
    if not supports_shared_prefix(unwrap(model)):
        log.warning("pair_forward shared_prefix needs sdpa or eager attention; using concatenated rows")
        return "concatenated"
    return "padding_free" if params.padding_free and supports_pair_rows(model) else "shared_prefix"


def collate_pairs(pad_id: int, layout: str = "concatenated"):
    if layout not in PAIR_LAYOUTS:
        raise ValueError(f"pair layout must be one of {PAIR_LAYOUTS}, got {layout!r}")

    def collate(feats: list[dict]) -> dict:
        if layout == "concatenated":
            batch = pair_collate(feats, pad_id)
        else:
            batch = shared_prefix_collate(feats, pad_id, padding_free=layout == "padding_free")
        for key in ANCHORS:
            if all(f"{key}_chosen" in f for f in feats):
                for side in ("chosen", "rejected"):
                    batch[f"{key}_{side}"] = torch.tensor([f[f"{key}_{side}"] for f in feats],
                                                          dtype=torch.float32)
        return batch
    return collate


def encode(records, tokenizer, data) -> tuple[list[dict], dict]:
    feats, stats = encode_pairs(tokenizer, records, max_length=data.max_length,
                                max_prompt_length=data.max_prompt_length, on_overflow=data.on_overflow)
    for f, r in zip(feats, records):
        f["meta"] = r.meta
    return feats, {**vars(stats), "examples": len(feats), **invalid_rows(records)}


def check_loss_params(fn, kwargs: dict) -> None:
    """The loss's own checks of its parameters (e.g. INPO's 0 <= tau <= eta), run when the recipe is built
    rather than at the first step."""
    z = torch.zeros(1)
    try:
        fn(PairLogps(z, z, z, z, z + 1, z + 1, z, z), **kwargs)
    except ValueError as e:
        raise RecipeError(f"method: {e}") from None


def build(recipe, params: PreferenceParams, model, tokenizer, run: RunInfo | None = None) -> Built:
    try:
        loss_name = params.loss_name
    except ValueError as e:
        raise RecipeError(str(e)) from None
    fn, needs_ref, _ = PREFERENCE_LOSSES[loss_name]
    check_loss_params(fn, params.model_copy(update={"loss": loss_name}).loss_kwargs())
    data = recipe.data
    feats, stats = encode(recipe_records(recipe, kind="preference"), tokenizer, data)
    eval_feats = None
    if data.eval is not None:
        eval_feats, _ = encode(recipe_records(recipe, "eval", kind="preference"), tokenizer, data)
    pad = tokenizer.pad_token_id
    layout = pair_layout(params, model)
    stats["pair_forward"] = layout
    live = params.reference_mode == "live"
    iteration = run.iteration if run else 0
    anchors = {}  # what the loss reads besides the policy: the reference, and INPO's previous iterate
    if needs_ref:
        anchors["ref"] = resolve_reference(params.reference, model, recipe.model, iteration, live=live)
    if loss_name in NEEDS_PREVIOUS:
        anchors["prev"] = resolve_reference("previous", model, recipe.model, iteration, live=live)

    def prepare(plan):
        # exactly the pairs the engine's plan will train on: a short run over a large set pays less
        used = [feats[i] for i in plan.used()]
        for key, anchor in anchors.items():
            stats.update(attach_reference(anchor, model, used, pad, params.reference_batch_size, layout, key))
            if eval_feats and recipe.train.eval_every:  # eval pairs are only scored when the run evaluates
                attach_reference(anchor, model, eval_feats, pad, params.reference_batch_size, layout, key)

    precompute = bool(anchors) and not live
    objective = PreferenceObjective(params.model_copy(update={"loss": loss_name}),
                                    *(anchors.get(k) if live else None for k in ANCHORS))
    return Built(objective, feats, collate_pairs(pad, layout), eval_feats, stats=stats,
                 prepare=prepare if precompute else None)


# INPO's name is its online loop (posttrain/methods/inpo.py); its loss on fixed pairs is `loss: inpo`
SPECS = [MethodSpec(name, PreferenceParams, build, f"preference optimisation with the {name} loss")
         for name in ("preference",) + LOSS_NAMES if name not in NEEDS_PREVIOUS]
