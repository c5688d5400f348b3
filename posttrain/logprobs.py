"""Per-token and per-sequence log-probs of completion tokens.

The float32 [batch, length, vocab] log-softmax is never built: the target logit is gathered and a
logsumexp is subtracted, chunk by chunk. The LM head is only applied at positions that predict a
supervised token (a boolean `logits_to_keep`), which skips prompts and padding — on a 49k vocabulary
that head is a fifth of a small model's compute.
"""
from __future__ import annotations

import torch

from posttrain.models.attention import SDPA_IMPLEMENTATIONS
from posttrain.models.lora import unwrap

IGNORE = -100


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """log softmax(logits)[targets] for logits [..., V], computed in chunks of rows in float32 (or
    float64)."""
    flat = logits.reshape(-1, logits.shape[-1])
    if flat.shape[0] == 0:
        return flat.new_zeros(targets.shape, dtype=torch.float32)
    return _TokenLogprob.apply(flat, targets.reshape(-1), chunk).reshape(targets.shape)


class _TokenLogprob(torch.autograd.Function):
    """The target's log-softmax per row, with its gradient g * (onehot(target) - softmax) written chunk by
    chunk straight into the logits' gradient. Autograd's own backward of gather - logsumexp zero-fills a
    [rows, V] tensor for the gather and makes separate passes for the softmax: on the embedded model's DPO
    step those fills alone were ~11% of the step (docs/results/throughput.md)."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor, tgt: torch.Tensor, chunk: int) -> torch.Tensor:
        picked, lse = [], []
        acc = torch.promote_types(flat.dtype, torch.float32)  # at least float32; float64 stays float64
        for s in range(0, flat.shape[0], chunk):
            rows = flat[s:s + chunk].to(acc)
            picked.append(rows.gather(-1, tgt[s:s + chunk, None]).squeeze(-1))
            lse.append(torch.logsumexp(rows, -1))
        lse_all = torch.cat(lse)
        ctx.save_for_backward(flat, tgt, lse_all)
        ctx.chunk = chunk
        return torch.cat(picked) - lse_all

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        flat, tgt, lse = ctx.saved_tensors
        grad = torch.empty_like(flat)
        acc = lse.dtype
        g = g.to(acc)
        direct = grad.dtype == acc  # else (bf16 logits) each chunk is computed in `acc` and copied in
        for s in range(0, flat.shape[0], ctx.chunk):
            e = min(s + ctx.chunk, flat.shape[0])
            out = grad[s:e] if direct else torch.empty(e - s, flat.shape[1], dtype=acc, device=flat.device)
            torch.sub(flat[s:e].to(acc), lse[s:e, None], out=out)
            out.exp_().mul_(-g[s:e, None])
            out[torch.arange(e - s, device=flat.device), tgt[s:e]] += g[s:e]
            if not direct:
                grad[s:e].copy_(out)
        return grad, None, None


def target_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, keep) [B, T]: mask marks the labelled tokens that something predicts (not position 0);
    keep marks the positions whose logits predict them (t-1 for token t)."""
    mask = labels != IGNORE
    mask[:, 0] = False
    keep = torch.zeros_like(mask)
    keep[:, :-1] = mask[:, 1:]
    return mask, keep


def _kept_logits(model, labels: torch.Tensor, attention_mask, model_kwargs: dict):
    """(logits [K, V] at the positions that predict a labelled token, mask [B, T]); None when none."""
    mask, keep = target_positions(labels)
    if not mask.any():
        return None, mask
    out = model(attention_mask=attention_mask, logits_to_keep=keep, use_cache=False, **model_kwargs)
    return out.logits, mask


def completion_logprobs(model, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                        labels: torch.Tensor, **model_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the labelled tokens, aligned with `labels`.

    Returns (token_logps [B, T], mask [B, T]): token_logps[b, t] = log pi(labels[b, t] | input_ids[b, :t])
    where mask[b, t] (labels[b, t] != IGNORE, t >= 1), and 0 elsewhere. Per-token tensors aligned to
    labels (weights, advantages) multiply it directly. `input_ids` may be None when `inputs_embeds` is
    given (IFT feeds mixed embeddings); the targets are always `labels`.
    """
    if input_ids is not None:
        model_kwargs["input_ids"] = input_ids
    elif "inputs_embeds" not in model_kwargs:
        raise ValueError("completion_logprobs needs input_ids or inputs_embeds")
    token_logps = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    logits, mask = _kept_logits(model, labels, attention_mask, model_kwargs)
    if logits is None:
        return token_logps, mask
    token_logps = token_logps.masked_scatter(mask, gather_logprobs(logits, labels[mask]))
    return token_logps, mask


@torch.no_grad()
def greedy_predictions(model, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                       labels: torch.Tensor,
                       **model_kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's argmax prediction of every labelled token from the gold prefix, without gradient.

    Returns (predicted [B, T], token_logps [B, T], mask [B, T]), aligned with `labels`: predicted[b, t] =
    argmax pi(. | prefix[b, :t]) where mask[b, t], and labels[b, t] elsewhere (IGNORE stays IGNORE);
    token_logps are the gold tokens' log-probs from the same pass (its SFT NLL comes free). The LM head
    runs only at the predicting positions, like `completion_logprobs`.
    """
    if input_ids is not None:
        model_kwargs["input_ids"] = input_ids
    predicted = labels.clone()
    token_logps = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    logits, mask = _kept_logits(model, labels, attention_mask, model_kwargs)
    if logits is None:
        return predicted, token_logps, mask
    predicted[mask] = logits.argmax(-1)
    token_logps = token_logps.masked_scatter(mask, gather_logprobs(logits, labels[mask]))
    return predicted, token_logps, mask


def sequence_logprobs(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed log-prob per sequence (the `logp(y|x)` of the method formulas, docs/methods.md)."""
    return (token_logps * mask).sum(-1)


def shared_prefix_mask(segments: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, L, L] attention mask for ``shared_prefix_collate`` rows: causal, and a completion token
    sees the prompt and its own completion only. Padding queries see themselves (no all-masked row, so
    no NaN from the softmax); their outputs are never read. sdpa (transformers' or posttrain's) takes it as
    booleans (True = attend), eager attention as an additive float mask."""
    valid = segments >= 0
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    same = (segments[:, None, :] == 0) | (segments[:, :, None] == segments[:, None, :])
    mask = causal & same & valid[:, None, :] & valid[:, :, None]
    mask |= torch.eye(length, dtype=torch.bool, device=segments.device)
    mask = mask[:, None]
    if attn_implementation in SDPA_IMPLEMENTATIONS:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


SHARED_PREFIX_ATTENTION = (*SDPA_IMPLEMENTATIONS, "eager")


def supports_shared_prefix(model) -> bool:
    """Custom 4D masks reach the kernel unchanged only with sdpa and eager attention."""
    config = getattr(unwrap(model), "config", None)  # through DDP/FSDP: the wrapper has no config
    return getattr(config, "_attn_implementation", None) in SHARED_PREFIX_ATTENTION


def shared_prefix_pair_logprobs(model, batch: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-token log-probs of both completions from one forward over ``shared_prefix_collate`` rows.

    Returns {"chosen": (token_logps [B, C], mask), "rejected": (token_logps [B, R], mask)}, equal (to
    float rounding) to ``completion_logprobs`` on the concatenated ``pair_collate`` batch.
    """
    segments = batch["pair_segments"]
    keep = torch.zeros(segments.shape, dtype=torch.bool, device=segments.device)
    # <side>_index is a position in the pair's own row, or (padding-free: all pairs in one row) in that row
    n_pairs, length = batch["chosen_targets"].shape[0], segments.shape[1]
    base = 0 if segments.shape[0] == 1 else torch.arange(n_pairs, device=segments.device)[:, None] * length
    flat = {side: batch[f"{side}_index"] + base for side in ("chosen", "rejected")}
    masks = {}
    for side in ("chosen", "rejected"):
        masks[side] = batch[f"{side}_targets"] != IGNORE
        keep.view(-1)[flat[side][masks[side]]] = True
    if "pair_bounds" in batch:
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                    pair_bounds=batch["pair_bounds"], logits_to_keep=keep, use_cache=False)
    else:
        impl = unwrap(model).config._attn_implementation
        dtype = next(p for p in model.parameters()).dtype
        if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            dtype = torch.float32
        out = model(input_ids=batch["input_ids"], attention_mask=shared_prefix_mask(segments, impl, dtype),
                    position_ids=batch["position_ids"], logits_to_keep=keep, use_cache=False)
    logits = out.logits.reshape(-1, out.logits.shape[-1])
    row_of = keep.reshape(-1).cumsum(0) - 1  # logits row of each kept position
    result = {}
    for side in ("chosen", "rejected"):
        m = masks[side]
        rows = row_of[flat[side]][m]
        token_logps = torch.zeros(m.shape, dtype=torch.float32, device=m.device)
        token_logps = token_logps.masked_scatter(m,
                                                 gather_logprobs(logits[rows], batch[f"{side}_targets"][m]))
        result[side] = (token_logps, m)
    return result
