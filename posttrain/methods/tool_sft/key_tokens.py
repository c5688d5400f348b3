"""PKT, prioritised key tokens (TL-Training, Ye et al., EMNLP 2025 Findings;
docs/methods.md "Tool use: TL-Training").

The key tokens K of a call are where a tool-using model decides WHICH tool it calls:
- the first token of the tool name;
- for every other available tool whose name shares a token prefix of length L >= 1 with the gold name, the
  gold name's token at offset L (where the two names diverge). When the gold name is itself a token prefix
  of the other name (L = its length), the divergence is the token right after the name (the closing
  quote), so that token is key.
Key tokens weigh w = clip(|NK| / |K|, 1, max_weight) (max 9 in the paper), |NK| = the call's other tokens;
every other token weighs 1; the loss is the weighted NLL divided by the sum of weights
(posttrain/losses/sft.py, normalization "weights").

Tokens are located by character offsets of the tokenizer's own encoding of the whole rendered text (a fast
tokenizer's offset mapping), so the name's tokens are those of the sequence actually trained on, merges
included. A tool's name is tokenized for the prefix comparison inside the same JSON context as in a call
(`{"name": "<name>"`), so merges at its edges match the call's.
"""
from __future__ import annotations

import json
from typing import Sequence

_NAME_CONTEXT = '[{"name": "'


def _overlapping(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    """Indices of tokens whose character span overlaps [start, end)."""
    return [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]


def name_tokens(tokenizer, name: str) -> list[int]:
    """The ids of the tokens covering `name` when it is written as a call's "name" value."""
    text = _NAME_CONTEXT + name + '"'
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    idx = _overlapping(enc["offset_mapping"], len(_NAME_CONTEXT), len(_NAME_CONTEXT) + len(name))
    return [enc["input_ids"][i] for i in idx]


def call_spans(content: str) -> list[tuple[str, int, int, int, int]]:
    """(name, name start, name end, call start, call end) character spans of each call written in the one
    call format (posttrain/data/tool_calls.py) in an assistant reply; [] when it holds no call list."""
    dec = json.JSONDecoder()
    start = content.find("[")
    if start < 0:
        return []
    try:
        calls, _ = dec.raw_decode(content, start)
    except ValueError:
        return []
    if not isinstance(calls, list):
        return []
    out, pos = [], start + 1
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return []
        c0 = content.index("{", pos)
        _, c1 = dec.raw_decode(content, c0)
        key = content.index('"name"', c0)
        n0 = content.index('"', content.index(":", key)) + 1
        n1 = n0 + len(json.dumps(call["name"])) - 2
        out.append((call["name"], n0, n1, c0, c1))
        pos = c1
    return out


def key_positions(tokenizer, name: str, name_idx: list[int], after_idx: int | None, ids: Sequence[int],
                  tool_names: Sequence[str]) -> set[int]:
    """Positions (in the sequence) of the key tokens of one call whose name covers `name_idx`."""
    if not name_idx:
        return set()
    keys = {name_idx[0]}
    gold = [ids[i] for i in name_idx]
    for other in tool_names:
        if other == name:
            continue
        o = name_tokens(tokenizer, other)
        shared = 0
        while shared < min(len(gold), len(o)) and gold[shared] == o[shared]:
            shared += 1
        if shared == 0:
            continue
        if shared < len(gold):
            keys.add(name_idx[shared])
        elif len(o) > len(gold) and after_idx is not None:
            keys.add(after_idx)
    return keys


def pkt_weights(tokenizer, text: str, reply_start: int, reply: str, tool_names: Sequence[str],
                max_weight: float = 9.0) -> tuple[list[int], list[float], int]:
    """(ids of `text`, a weight per token, number of key tokens) for the assistant `reply` that starts at
    character `reply_start` of the rendered `text`: key tokens of each call weigh clip(|NK|/|K|, 1,
    max_weight), with NK the call's other tokens; all other tokens 1."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    weights = [1.0] * len(ids)
    n_keys = 0
    for name, n0, n1, c0, c1 in call_spans(reply):
        name_idx = _overlapping(offsets, reply_start + n0, reply_start + n1)
        call_idx = _overlapping(offsets, reply_start + c0, reply_start + c1)
        after = [i for i in call_idx if i > (name_idx[-1] if name_idx else len(ids))]
        keys = key_positions(tokenizer, name, name_idx, after[0] if after else None, ids, tool_names)
        non_key = len([i for i in call_idx if i not in keys])
        if not keys:
            continue
        w = min(max(non_key / len(keys), 1.0), max_weight)
        for i in keys:
            weights[i] = w
        n_keys += len(keys)
    return ids, weights, n_keys
