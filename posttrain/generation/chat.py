"""Chat-formatted generation: the conversations' prompts through the shared sampler, one text each."""
from __future__ import annotations

from posttrain.data.template import encode_prompt
from posttrain.generation.sampler import SamplingParams, sample


def generate_chat(model, tokenizer, conversations: list[list[dict]], *, max_new_tokens: int = 64,
                  temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0,
                  batch_size: int = 16) -> list[str]:
    """One completion per conversation (temperature 0 is greedy, token-identical to `model.generate`),
    stripped of surrounding whitespace. Sampled completions are seeded per conversation (its index)."""
    prompts = [encode_prompt(tokenizer, c) for c in conversations]
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
                            seed=seed)
    out, _ = sample(model, tokenizer, prompts, params, batch_size=batch_size)
    return [row[0].text.strip() for row in out]
