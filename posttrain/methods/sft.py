"""SFT: next-token NLL on assistant tokens (posttrain/losses/sft.py), on the shared engine."""
from __future__ import annotations

import functools
import logging
from typing import Literal

from posttrain.config import Section
from posttrain.contracts import Built, MethodSpec, RunInfo
from posttrain.data.collate import PackingCollator, pad_collate
from posttrain.data.readers import invalid_rows
from posttrain.data.records import TextRecord
from posttrain.data.template import TruncationStats, encode_conversation
from posttrain.errors import RecipeError
from posttrain.logprobs import IGNORE, completion_logprobs
from posttrain.losses.sft import sft_loss
from posttrain.models.attention import supports_segments
from posttrain.tasks.sources import load_source

MODEL_INPUTS = ("input_ids", "attention_mask", "labels", "weights")
log = logging.getLogger("posttrain.data")


class SFTParams(Section):
    name: Literal["sft"] = "sft"
    normalization: Literal["token", "sequence"] = "token"
    # a micro-batch as one row with no padding, attention per example (posttrain/models/attention.py);
    # needs token normalization and a model whose attention takes example boundaries, else rows are padded
    padding_free: bool = True


class SFTObjective:
    def __init__(self, normalization: str = "token"):
        self.normalization = normalization

    def units(self, batch) -> float:
        # a packed row holds several sequences: count them by their starts, not by rows
        supervised = batch["labels"][:, 1:] != IGNORE
        if self.normalization == "token":
            return float(supervised.sum())
        if self.normalization == "weights":
            return float((batch["weights"][:, 1:] * supervised).sum())
        return float(batch["num_sequences"]) if "num_sequences" in batch else float(supervised.any(-1).sum())

    def __call__(self, model, batch):
        extra = {k: v for k, v in batch.items() if k not in MODEL_INPUTS and k != "num_sequences"}
        token_logps, mask = completion_logprobs(model, batch["input_ids"], batch.get("attention_mask"),
                                                batch["labels"], **extra)
        loss_sum, _, metrics = sft_loss(token_logps, mask, batch.get("weights"), self.normalization)
        return loss_sum, metrics


def encode_text(tokenizer, record: TextRecord, max_length: int, stats: TruncationStats) -> dict:
    """Plain text (no chat template): its tokens and the tokenizer's end-of-sequence token, every one a
    target; a longer text keeps its first ``max_length`` tokens (counted as truncated)."""
    ids = list(tokenizer(record.text, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    stats.examples += 1
    if len(ids) > max_length:
        ids = ids[:max_length]
        stats.truncated += 1
        stats.response_truncated += 1
    return {"input_ids": ids, "labels": list(ids)}


def encode_all(records, tokenizer, data) -> tuple[list[dict], dict]:
    """Features of Conversations (chat template, assistant tokens supervised) and TextRecords (every token
    supervised), in the records' order, with the truncation counts and the rows skipped as invalid."""
    stats, feats = TruncationStats(), []
    for rec in records:
        if isinstance(rec, TextRecord):
            feats.append(encode_text(tokenizer, rec, data.max_length, stats))
            continue
        f = encode_conversation(tokenizer, rec.messages, max_length=data.max_length,
                                max_prompt_length=data.max_prompt_length, on_overflow=data.on_overflow,
                                stats=stats, file=rec.file, line=rec.line,
                                assistant_prefix=rec.assistant_prefix)
        if f is not None:
            feats.append(f)
    if stats.truncated or stats.skipped:
        log.warning("SFT encoding: %s", stats)
    out = {**vars(stats), "examples": len(feats)}
    prefixed = sum(getattr(r, "assistant_prefix", None) is not None for r in records)
    if prefixed:
        # with a prefix only the final reply after it is trained (NLU `<Judgement>`: the label tokens)
        out["label_only"] = prefixed == len(records)
    texts = sum(isinstance(r, TextRecord) for r in records)
    if texts:
        out["text_examples"] = texts
    out.update(invalid_rows(records))
    return feats, out


def encode_splits(recipe, tokenizer) -> tuple[list[dict], list[dict] | None, dict]:
    """(train features, eval features or None, encoding stats) of an SFT-kind recipe's data."""
    data = recipe.data
    train = load_source(data.train, "sft", instruction=data.instruction, system_prompt=data.system_prompt,
                        key="data.train")
    feats, stats = encode_all(train, tokenizer, data)
    eval_feats = None
    if data.eval is not None:
        ev = load_source(data.eval, "sft", instruction=data.instruction, system_prompt=data.system_prompt,
                         key="data.eval")
        eval_feats, _ = encode_all(ev, tokenizer, data)
    return feats, eval_feats, stats


def build(recipe, params: SFTParams, model, tokenizer, run: RunInfo | None = None) -> Built:
    data = recipe.data
    feats, eval_feats, stats = encode_splits(recipe, tokenizer)
    collate = sft_collate(tokenizer.pad_token_id, model, padding_free=params.padding_free,
                          per_sequence=params.normalization == "sequence",
                          packing_length=data.max_length if data.packing else None)
    stats["padding_free"] = is_padding_free(collate)
    return Built(SFTObjective(params.normalization), feats, collate, eval_feats, stats=stats)


def sft_collate(pad: int, model, *, padding_free: bool = True, per_sequence: bool = False,
                packing_length: int | None = None):
    """Rows packed to `packing_length` (data.packing), else one padding-free row per micro-batch (when the
    model's attention takes example boundaries), else right-padded rows. `per_sequence`: the loss is a
    mean per row, which needs one example per row."""
    if packing_length is not None:
        if per_sequence:
            # a packed row mixes sequences, so a per-row mean is not a per-sequence mean
            raise RecipeError("method.normalization 'sequence' cannot be combined with data.packing: true")
        return PackingCollator(packing_length, pad)
    if padding_free and not per_sequence and supports_segments(model):
        return PackingCollator(None, pad)
    return functools.partial(pad_collate, pad_token_id=pad)


def is_padding_free(collate) -> bool:
    """Whether `sft_collate` gave one padding-free row per micro-batch."""
    return isinstance(collate, PackingCollator) and collate.max_length is None


SPEC = MethodSpec("sft", SFTParams, build, "supervised fine-tuning on assistant tokens", data_kind="sft")
