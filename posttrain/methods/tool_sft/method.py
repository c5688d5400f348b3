"""TL-Training's supervised part for tool use (Ye et al., EMNLP 2025 Findings; docs/methods.md
"Tool use: TL-Training"): `method: {name: tool_sft, mae, pkt, pkt_max_weight}` on tool conversations
(`data.train` rows `{messages, tools}` with `tool` messages; posttrain/data/tool_records.py).

- One training sample per assistant turn: the conversation up to and including that turn, with the tool
  list in the system prompt (posttrain/tools/prompt.py, system mode: the format a ChatML model is prompted
  with at evaluation too), loss on that turn only (its content and end-of-turn token).
- `mae: true` (mitigate adverse data): a turn whose tool feedback is an error (posttrain/tools/mae.py
  `is_adverse`) gives no sample, but stays in later samples' history as it was.
- `pkt: true` (prioritise key tokens): each call's key tokens (posttrain/methods/tool_sft/key_tokens.py)
  weigh clip(|NK|/|K|, 1, pkt_max_weight), and the loss is the weighted NLL over the sum of weights
  (posttrain/losses/sft.py, normalization "weights"). Without PKT: the per-token mean (standard SFT).
The third part, IRM, is the `tool_call` reward optimised with PPO (posttrain/rewards/tool_call.py).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from posttrain.config import Section
from posttrain.contracts import Built, MethodSpec, RunInfo
from posttrain.data.template import TruncationStats, encode_conversation, render
from posttrain.errors import RecipeError
from posttrain.methods.base import recipe_records
from posttrain.methods.sft import SFTObjective, is_padding_free, sft_collate
from posttrain.methods.tool_sft.key_tokens import pkt_weights
from posttrain.tools.mae import turn_samples
from posttrain.tools.prompt import resolve_mode, with_tool_system


class ToolSFTParams(Section):
    name: Literal["tool_sft"] = "tool_sft"
    mae: bool = False
    pkt: bool = False
    pkt_max_weight: float = Field(9.0, ge=1)


def encode_turns(records, tokenizer, data, params: ToolSFTParams) -> tuple[list[dict], dict]:
    """Features (input_ids, labels and, with PKT, weights) of every trained assistant turn, and counts."""
    stats = TruncationStats()
    feats, counts = [], {"conversations": len(records), "turns": 0, "adverse_turns_skipped": 0,
                         "key_tokens": 0,
                         "calls_without_key_tokens": 0}
    for rec in records:
        names = [t["name"] for t in rec.tools]
        for s in turn_samples(rec, mae=params.mae):
            counts["turns"] += 1
            if not s.trained:
                counts["adverse_turns_skipped"] += 1
                continue
            msgs = with_tool_system(s.messages, rec.tools)
            f = encode_conversation(tokenizer, msgs, max_length=data.max_length,
                                    max_prompt_length=data.max_prompt_length, on_overflow=data.on_overflow,
                                    stats=stats, file=rec.file, line=rec.line, final_only=True)
            if f is None:
                continue
            if params.pkt:
                text = render(tokenizer, msgs)
                start = len(render(tokenizer, msgs[:-1], add_generation_prompt=True))
                ids, w, n_keys = pkt_weights(tokenizer, text, start, msgs[-1]["content"], names,
                                             params.pkt_max_weight)
                cut = _slice_start(ids, f["input_ids"])
                f["weights"] = w[cut:cut + len(f["input_ids"])]
                counts["key_tokens"] += n_keys
                counts["calls_without_key_tokens"] += int(n_keys == 0)
            feats.append(f)
    counts["examples"] = len(feats)
    return feats, {**vars(stats), **counts}


def _slice_start(full: list[int], part: list[int]) -> int:
    """Where the (possibly left-truncated) encoded sample starts in the full ids."""
    n = len(part)
    for cut in range(len(full) - n + 1):
        if full[cut:cut + n] == part:
            return cut
    raise RecipeError("PKT: the encoded sample is not a slice of the rendered conversation's tokens")


def build(recipe, params: ToolSFTParams, model, tokenizer, run: RunInfo | None = None) -> Built:
    data = recipe.data
    if data.packing:
        raise RecipeError("method tool_sft trains one sample per assistant turn without packing: set "
                          "data.packing: false")
    if resolve_mode(tokenizer) != "system":
        raise RecipeError("method tool_sft renders tools in the system prompt (ChatML-style templates); this "
                          "tokenizer has its own tool template, which training does not use yet")
    feats, stats = encode_turns(recipe_records(recipe), tokenizer, data, params)
    eval_feats = None
    if data.eval is not None:
        eval_feats, _ = encode_turns(recipe_records(recipe, "eval"), tokenizer, data, params)
    collate = sft_collate(tokenizer.pad_token_id, model)
    stats["padding_free"] = is_padding_free(collate)
    return Built(SFTObjective("weights" if params.pkt else "token"), feats, collate, eval_feats, stats=stats)


SPEC = MethodSpec("tool_sft", ToolSFTParams, build,
                  "TL-Training SFT for tool use: per-turn samples, MAE filtering, PKT key-token weights",
                  data_kind="tool")
