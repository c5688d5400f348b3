"""Per-token and per-sequence log-probs of completion tokens.

The float32 [batch, length, vocab] log-softmax is never built: the target logit is gathered and a
logsumexp is subtracted, chunk by chunk. The LM head is only applied at positions that predict a
supervised token (a boolean `logits_to_keep`), which skips prompts and padding — on a 49k vocabulary
that head is a fifth of a small model's compute.
"""
from __future__ import annotations

import torch

IGNORE = -100


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """log softmax(logits)[targets] for logits [..., V], computed in float32 chunks along the rows."""
    flat = logits.reshape(-1, logits.shape[-1])
    tgt = targets.reshape(-1)
    parts = []
    for s in range(0, flat.shape[0], chunk):
        rows = flat[s:s + chunk].float()
        parts.append(rows.gather(-1, tgt[s:s + chunk, None]).squeeze(-1) - torch.logsumexp(rows, -1))
    out = torch.cat(parts) if parts else flat.new_zeros(0, dtype=torch.float32)
    return out.reshape(targets.shape)


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        labels: torch.Tensor, **model_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the labelled tokens, aligned with `labels`.

    Returns (token_logps [B, T], mask [B, T]): token_logps[b, t] = log pi(labels[b, t] | input_ids[b, :t])
    where mask[b, t] (labels[b, t] != IGNORE, t >= 1), and 0 elsewhere. Per-token tensors aligned to
    labels (weights, advantages) multiply it directly.
    """
    mask = labels != IGNORE
    mask[:, 0] = False  # nothing predicts the first token
    keep = torch.zeros_like(mask)
    keep[:, :-1] = mask[:, 1:]  # the logits at t-1 predict the token at t
    token_logps = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    if not mask.any():
        return token_logps, mask
    out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep,
                use_cache=False, **model_kwargs)
    token_logps = token_logps.masked_scatter(mask, gather_logprobs(out.logits, labels[mask]))
    return token_logps, mask


def sequence_logprobs(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed log-prob per sequence (the `logp(y|x)` of METHODS.md)."""
    return (token_logps * mask).sum(-1)
