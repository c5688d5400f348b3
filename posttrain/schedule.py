"""How long a run is, its learning-rate schedule and its optimizer: functions of the train settings."""
from __future__ import annotations

import math
from typing import Callable

import torch

from posttrain.config import TrainSettings
from posttrain.errors import TrainingError


def total_steps(cfg: TrainSettings, n_examples: int, world: int = 1) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    global_batch = cfg.micro_batch_size * cfg.grad_accum * world
    return max(1, math.ceil(cfg.epochs * n_examples / global_batch))


def lr_lambda(cfg: TrainSettings, steps: int, offset: int = 0) -> Callable[[int], float]:
    """The learning-rate factor at a step; `offset` places this run inside a longer schedule of `steps`."""
    def f(local_step: int) -> float:
        step = local_step + offset
        if step < cfg.warmup_steps:
            return (step + 1) / (cfg.warmup_steps + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, steps - cfg.warmup_steps))
        decay = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * decay
    return f


def build_optimizer(cfg: TrainSettings, model) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    if cfg.optimizer == "adamw":
        # fused: one kernel over all tensors; on CPU the default per-tensor loop cost ~3% of a full
        # fine-tuning step of the embedded model (benchmarks/dpo_throughput.py)
        fused = all(p.dtype in (torch.float32, torch.bfloat16, torch.float16) for p in params)
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                                 fused=fused)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
