"""Models: the registry (embedded / tiny / HF folder / hub), the embedded model's one-time GGUF
conversion, LoRA adapters and checkpoint weights."""
from posttrain.models import attention
from posttrain.models.cache import cache_dir
from posttrain.models.embedded import ensure_converted, ensure_tokenizer
from posttrain.models.io import load_weights_, save_weights, trainable_parameters
from posttrain.models.lora import apply_lora, frozen_copy, is_lora, merge_and_save, reference_model, unwrap
from posttrain.models.registry import list_models, load_model, load_tokenizer

__all__ = [
    "load_model", "load_tokenizer", "list_models", "apply_lora", "is_lora", "reference_model",
    "frozen_copy", "merge_and_save", "save_weights", "load_weights_", "trainable_parameters",
    "cache_dir", "ensure_converted", "ensure_tokenizer", "unwrap",
]

attention.install()
