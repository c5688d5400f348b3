"""Tiny random-initialised Llama models for tests: the embedded model's architecture and real tokenizer,
small enough to build in well under a second and train in a unit test."""
from __future__ import annotations

from typing import Any

import torch

from posttrain.models.attention import SEGMENT_ATTENTION

# Same family as SmolLM2 (Llama, grouped-query attention, tied embeddings, rope_theta 1e5) so that code
# paths exercised in tests are the ones the real model takes.
TINY_MODELS: dict[str, dict[str, Any]] = {
    "tiny-llama": dict(
        description="random Llama, hidden 64, 2 layers, 4 heads / 2 kv heads, SmolLM2 tokenizer (tests)",
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128),
    "tiny-llama-4l": dict(
        description="random Llama, hidden 128, 4 layers, 4 heads / 2 kv heads, SmolLM2 tokenizer (tests)",
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=256),
    # Llama-shaped models at real sizes, random weights: GPU checks and throughput benchmarks without a
    # download (benchmarks/gpu_check.sh, gpu_throughput.sh)
    "random-llama-0.5b": dict(
        description="random Llama, 0.49B parameters (hidden 1280, 24 layers, 20 / 5 kv heads; GPU checks)",
        hidden_size=1280, num_hidden_layers=24, num_attention_heads=20, num_key_value_heads=5,
        intermediate_size=3584),
    "random-llama-1.2b": dict(
        description=("random Llama, 1.21B parameters (hidden 2048, 18 layers, 32 / 8 kv heads; "
                     "GPU benchmarks)"),
        hidden_size=2048, num_hidden_layers=18, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=8192),
}
MAX_POSITIONS = 2048


def tiny_config(name: str, tokenizer):
    from transformers import LlamaConfig

    spec = {k: v for k, v in TINY_MODELS[name].items() if k != "description"}
    return LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
        rope_theta=100000.0, rms_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **spec)


def build_tiny(name: str, tokenizer, *, seed: int = 0, dtype: torch.dtype = torch.float32,
               attn_implementation: str = SEGMENT_ATTENTION):
    """Random-initialised model; weights depend only on (name, seed), never on the caller's RNG state.

    Initialised in float32 and then cast, so the same seed gives the same weights up to rounding whatever
    the dtype. The global RNG is restored afterwards so building a model does not shift other random streams.
    """
    from transformers import AutoModelForCausalLM

    config = tiny_config(name, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation,
                                                 dtype=torch.float32)
    return model.to(dtype)
