"""Pure loss functions. Each takes log-probs (and masks) and returns (loss, metrics)."""
from posttrain.losses.sft import sft_loss

__all__ = ["sft_loss"]
