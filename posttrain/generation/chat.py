"""Batched chat generation with the model's KV cache (greedy or sampled, seeded)."""
from __future__ import annotations

import torch

from posttrain.data.template import encode_prompt


@torch.no_grad()
def generate_chat(model, tokenizer, conversations: list[list[dict]], *, max_new_tokens: int = 64,
                  temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0,
                  batch_size: int = 16) -> list[str]:
    """One completion per conversation. temperature 0 is greedy. Prompts are left-padded so every
    row's last prompt token sits at the same position; batches are sorted by length to waste little."""
    pad_id = tokenizer.pad_token_id
    eos_ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")} - {None}
    encoded = [encode_prompt(tokenizer, c) for c in conversations]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(encoded)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
                attn[r, width - len(encoded[i]):] = 1
            sampling = temperature > 0
            kwargs = dict(do_sample=sampling, max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                          eos_token_id=sorted(eos_ids))
            if sampling:
                kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k or None)
                # HF sampling draws from the global RNG: seed it per batch for reproducible samples
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            seq = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), **kwargs)
            for r, i in enumerate(idx):
                out[i] = tokenizer.decode(seq[r, width:], skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    return out
