"""Batching: right-padding, preference-pair batches, and packing for SFT.

Packing (several examples in one row, no attention across them) relies on how transformers 5 builds
masks: when a forward gets ``position_ids`` and NO ``attention_mask`` (and no KV cache), its
``create_causal_mask`` finds packed sequences from the position ids (a new sequence starts wherever
the position does not go up by one) and makes the causal mask block-diagonal; flash-attention kernels
read the same boundaries from ``position_ids``. So a packed batch carries ``input_ids``, ``labels``,
``position_ids`` (restarting at 0 for each example) and no ``attention_mask``. The forward MUST run with
``use_cache=False``: with the config default (``use_cache=True``) a cache is created even in training,
the packed detection is switched off, and examples silently attend to each other. :func:`model_inputs`
builds the keyword arguments accordingly. Packed batches also carry the example boundaries
(``cu_seq_lens_q`` ...), so attention runs per example instead of over the whole row under a mask
with the attention posttrain's models load with (posttrain/models/attention.py) or flash-attention;
transformers' own sdpa ignores them and takes the mask path, which is correct too.
"""
from __future__ import annotations

from typing import Sequence

import torch

IGNORE_INDEX = -100
_MODEL_KEYS = ("input_ids", "attention_mask", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k",
               "max_length_q",
               "max_length_k")


def _is_per_token(value, n: int) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == n and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _pad_rows(rows: Sequence[Sequence], length: int, value, dtype) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=dtype)
    for i, r in enumerate(rows):
        if len(r):
            out[i, :len(r)] = torch.tensor(list(r), dtype=dtype)
    return out


def _target_length(n: int, pad_to_multiple_of: int | None) -> int:
    if pad_to_multiple_of:
        n = -(-n // pad_to_multiple_of) * pad_to_multiple_of
    return n


def pad_collate(features: Sequence[dict], pad_token_id: int, *,
                pad_to_multiple_of: int | None = None) -> dict:
    """Right-pad a batch of ``{"input_ids", "labels", ...}`` features into tensors.

    Returns ``input_ids`` (padded with ``pad_token_id``), ``attention_mask`` (1 on real tokens),
    ``labels`` (padded with -100; built as a copy of input_ids when absent). Any other per-token list of
    numbers (same length as input_ids, e.g. ``weights``) is padded with 0 (0.0 if it holds floats);
    scalar numbers are stacked; anything else is passed through as a list.
    """
    if not features:
        raise ValueError("pad_collate got an empty batch")
    lengths = [len(f["input_ids"]) for f in features]
    length = _target_length(max(lengths), pad_to_multiple_of)
    batch = {
        "input_ids": _pad_rows([f["input_ids"] for f in features], length, pad_token_id, torch.long),
        "attention_mask": _pad_rows([[1] * n for n in lengths], length, 0, torch.long),
        "labels": _pad_rows([f.get("labels", f["input_ids"]) for f in features], length, IGNORE_INDEX,
                            torch.long),
    }
    for key in features[0]:
        if key in batch:
            continue
        values = [f[key] for f in features]
        if all(_is_per_token(v, n) for v, n in zip(values, lengths)):
            is_float = any(isinstance(x, float) for v in values for x in v)
            batch[key] = _pad_rows(values, length, 0.0 if is_float else 0,
                                   torch.float if is_float else torch.long)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            batch[key] = torch.tensor(values)
        elif all(isinstance(v, bool) for v in values):
            batch[key] = torch.tensor(values, dtype=torch.bool)
        else:
            batch[key] = values
    return batch


def pair_collate(features: Sequence[dict], pad_token_id: int, *,
                 pad_to_multiple_of: int | None = None) -> dict:
    """Batch ``encode_pair`` outputs for a concatenated forward: rows ``[chosen_0..chosen_{B-1},
    rejected_0..rejected_{B-1}]`` of ``prompt + completion``, right-padded, with labels only on the
    completion tokens. Returns input_ids, attention_mask, labels (2B rows each)."""
    seqs = []
    for side in ("chosen_ids", "rejected_ids"):
        for f in features:
            p, c = list(f["prompt_ids"]), list(f[side])
            seqs.append({"input_ids": p + c, "labels": [IGNORE_INDEX] * len(p) + c})
    return pad_collate(seqs, pad_token_id, pad_to_multiple_of=pad_to_multiple_of)


def shared_prefix_collate(features: Sequence[dict], pad_token_id: int, *, padding_free: bool = False) -> dict:
    """Batch preference pairs so the prompt runs once: row b is ``prompt + chosen + rejected``.

    The rejected tokens take positions ``P..P+R-1`` (as if they followed the prompt directly) and must
    not see the chosen tokens; ``pair_segments`` (0 prompt, 1 chosen, 2 rejected, -1 padding) lets the
    forward build that attention mask (:func:`posttrain.logprobs.shared_prefix_pair_logprobs`). For each
    side, ``<side>_index[b, j]`` is the position whose logits predict token j of that completion and
    ``<side>_targets`` the token: the prompt's last position predicts the first token of both sides.
    Compared with :func:`pair_collate` this forwards B rows of P+C+R tokens instead of 2B rows of P+C
    and P+R, so the prompt's activations are computed and stored once.

    ``padding_free``: all pairs end to end in ONE row with no padding and no ``attention_mask``;
    ``pair_bounds`` [B, 4] holds each pair's (start, P, C, R) for posttrain's attention
    (posttrain/models/attention.py; no other attention reads it), and ``<side>_index`` are positions in that
    row. """
    if not features:
        raise ValueError("shared_prefix_collate got an empty batch")
    ids, segs, pos, idx, tgt = [], [], [], {"chosen": [], "rejected": []}, {"chosen": [], "rejected": []}
    bounds, start = [], 0
    for f in features:
        p, c, r = list(f["prompt_ids"]), list(f["chosen_ids"]), list(f["rejected_ids"])
        if not p or not c or not r:
            raise ValueError("shared_prefix_collate needs a non-empty prompt and both completions")
        n_p, n_c = len(p), len(c)
        at = start if padding_free else 0  # where the pair's row starts
        ids.append(p + c + r)
        segs.append([0] * n_p + [1] * n_c + [2] * len(r))
        pos.append(list(range(n_p + n_c)) + list(range(n_p, n_p + len(r))))
        idx["chosen"].append([at + n_p - 1 + j for j in range(n_c)])
        idx["rejected"].append([at + n_p - 1] + [at + n_p + n_c + j - 1 for j in range(1, len(r))])
        tgt["chosen"].append(c)
        tgt["rejected"].append(r)
        bounds.append([start, n_p, n_c, len(r)])
        start += len(ids[-1])
    if padding_free:
        batch = {
            "input_ids": torch.tensor([[t for x in ids for t in x]], dtype=torch.long),
            "position_ids": torch.tensor([[t for x in pos for t in x]], dtype=torch.long),
            "pair_segments": torch.tensor([[t for x in segs for t in x]], dtype=torch.long),
            "pair_bounds": torch.tensor(bounds, dtype=torch.long),
        }
    else:
        length = max(len(x) for x in ids)
        batch = {
            "input_ids": _pad_rows(ids, length, pad_token_id, torch.long),
            "attention_mask": _pad_rows([[1] * len(x) for x in ids], length, 0, torch.long),
            "position_ids": _pad_rows(pos, length, 0, torch.long),
            "pair_segments": _pad_rows(segs, length, -1, torch.long),
        }
    for side in ("chosen", "rejected"):
        width = max(len(x) for x in tgt[side])
        batch[f"{side}_index"] = _pad_rows(idx[side], width, 0, torch.long)
        batch[f"{side}_targets"] = _pad_rows(tgt[side], width, IGNORE_INDEX, torch.long)
    return batch


# ---------------------------------------------------------------- packing


def pack_features(features: Sequence[dict], max_length: int, *, strategy: str = "next_fit") -> list[dict]:
    """Concatenate examples into rows of at most ``max_length`` tokens.

    Each row gets ``input_ids``, ``labels`` (the first label of every example set to -100, so no token
    is trained to predict the start of the next example), ``position_ids`` restarting at 0 per example,
    ``seq_lens``, and any other per-token list concatenated. ``strategy``: "next_fit" keeps the order
    (a new row when the next example does not fit); "first_fit" puts each example in the first row
    with room (fuller rows, order changes).
    """
    if strategy not in ("next_fit", "first_fit"):
        raise ValueError(f"strategy must be 'next_fit' or 'first_fit', got {strategy!r}")
    rows: list[list[dict]] = []
    room: list[int] = []
    for k, f in enumerate(features):
        n = len(f["input_ids"])
        if n == 0:
            continue
        if n > max_length:
            raise ValueError(f"example {k} has {n} tokens, more than max_length={max_length}; "
                             "encode with a max_length no larger than the packing length")
        if strategy == "next_fit":
            target = len(rows) - 1 if rows and room[-1] >= n else None
        else:
            target = next((i for i, r in enumerate(room) if r >= n), None)
        if target is None:
            rows.append([])
            room.append(max_length)
            target = len(rows) - 1
        rows[target].append(f)
        room[target] -= n
    return [_concat(r) for r in rows]


def _concat(examples: list[dict]) -> dict:
    row: dict = {"input_ids": [], "labels": [], "position_ids": [], "seq_lens": []}
    extra = [k for k in examples[0] if k not in ("input_ids", "labels", "attention_mask", "position_ids")
             and _is_per_token(examples[0][k], len(examples[0]["input_ids"]))]
    for k in extra:
        row[k] = []
    for ex in examples:
        n = len(ex["input_ids"])
        labels = list(ex.get("labels", ex["input_ids"]))
        labels[0] = IGNORE_INDEX
        row["input_ids"] += list(ex["input_ids"])
        row["labels"] += labels
        row["position_ids"] += list(range(n))
        row["seq_lens"].append(n)
        for k in extra:
            row[k] += list(ex[k])
    return row


class PackingCollator:
    """Collate SFT features into packed rows for a forward with ``position_ids`` and no attention mask.

    Called with unpacked features (``input_ids``, ``labels``, optional per-token ``weights``), it packs
    them (:func:`pack_features`); called with rows already packed by :func:`pack_features` (they carry
    ``position_ids``), it only pads. Rows are right-padded to ``max_length`` (or to the longest row with
    ``pad_to_max_length=False``); the padding is a segment of its own (positions 0, 1, ...) with labels
    -100 and weights 0. ``max_length=None`` puts the whole batch in one row with no padding at all
    (padding-free batches: no position computes on a pad token). Output: ``input_ids``, ``labels``,
    ``position_ids``, ``num_sequences`` (a scalar: examples in the batch, padding not counted), the
    example boundaries (:func:`segment_bounds`) and per-token extras such as ``weights``. There is no
    ``attention_mask`` on purpose; pass the batch through :func:`model_inputs` so the forward gets only
    the model's tensors and ``use_cache=False``.
    """

    def __init__(self, max_length: int | None, pad_token_id: int, *, strategy: str = "next_fit",
                 pad_to_max_length: bool = True):
        self.max_length, self.pad_token_id = max_length, pad_token_id
        self.strategy, self.pad_to_max_length = strategy, pad_to_max_length

    def __call__(self, features: Sequence[dict]) -> dict:
        if not features:
            raise ValueError("PackingCollator got an empty batch")
        one_row = self.max_length is None
        rows = list(features) if "position_ids" in features[0] else pack_features(
            features, sum(len(f["input_ids"]) for f in features) if one_row else self.max_length,
            strategy=self.strategy)
        longest = max(len(r["input_ids"]) for r in rows)
        length = self.max_length if self.pad_to_max_length and not one_row else longest
        batch = {
            "input_ids": _pad_rows([r["input_ids"] for r in rows], length, self.pad_token_id, torch.long),
            "labels": _pad_rows([r["labels"] for r in rows], length, IGNORE_INDEX, torch.long),
            "position_ids": _pad_rows([list(r["position_ids"]) + list(range(length - len(r["position_ids"])))
                                       for r in rows], length, 0, torch.long),
            "num_sequences": torch.tensor(sum(len(r["seq_lens"]) if "seq_lens" in r else int(
                (torch.tensor(r["position_ids"]) == 0).sum()) for r in rows)),
        }
        batch.update(segment_bounds(batch["position_ids"]))
        for key in rows[0]:
            if key in batch or key in ("seq_lens", "attention_mask", "num_sequences"):
                continue
            values = [r[key] for r in rows]
            if all(_is_per_token(v, len(r["input_ids"])) for v, r in zip(values, rows)):
                is_float = any(isinstance(x, float) for v in values for x in v)
                batch[key] = _pad_rows(values, length, 0.0 if is_float else 0,
                                       torch.float if is_float else torch.long)
        return batch


def segment_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Index of the packed example each token belongs to, per row (0, 0, 1, 1, 1, 2, ...): a new one
    starts wherever the position does not go up by one (the rule transformers uses)."""
    first = position_ids[:, :1] - 1
    return (torch.diff(position_ids, prepend=first, dim=-1) != 1).cumsum(-1)


def segment_bounds(position_ids: torch.Tensor) -> dict:
    """The examples of packed rows as flash-attention's varlen keywords: ``cu_seq_lens_q/k`` (int32
    offsets of every example, padding segments included, over the R*L flattened positions) and
    ``max_length_q/k``. posttrain's attention (posttrain/models/attention.py) and flash-attention kernels then
    attend within each example without a [L, L] mask."""
    seg = segment_ids(position_ids)
    starts = torch.ones_like(seg, dtype=torch.bool)
    starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
    offsets = starts.reshape(-1).nonzero().squeeze(-1)
    cu = torch.cat([offsets, offsets.new_tensor([position_ids.numel()])]).to(torch.int32)
    longest = int(torch.diff(cu).max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


def model_inputs(batch: dict) -> dict:
    """Keyword arguments for ``model(**...)`` from a collated batch: the model's tensors only, and
    ``use_cache=False`` (required for packed batches, harmless otherwise)."""
    return {k: batch[k] for k in _MODEL_KEYS if k in batch} | {"use_cache": False}
