"""DDP over N processes through accelerate: every process holds the whole model and optimizer; gradients
are all-reduced as means at a step's last micro-batch."""
from __future__ import annotations

from contextlib import nullcontext

import torch

from posttrain.sharding.none import NoSharding


class DDP(NoSharding):
    name = "ddp"

    def place(self, model):
        return model  # accelerate's prepare moves it as it wraps it

    def wrap(self, model, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)

    def unwrap(self):
        return self.accelerator.unwrap_model(self.model)

    def grad_sync(self, sync: bool):
        return nullcontext() if sync else self.accelerator.no_sync(self.model)

    def backward(self, loss: torch.Tensor, *, last: bool) -> None:
        self.accelerator.backward(loss)
