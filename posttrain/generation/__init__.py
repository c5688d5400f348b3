"""Sampling from a policy."""
from posttrain.generation.chat import generate_chat

__all__ = ["generate_chat"]
