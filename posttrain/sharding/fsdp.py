"""FSDP 2 (torch's `fully_shard`) over N processes, the engine's own: `train.fsdp`, or `accelerate launch`
with an FSDP config, takes this one path, which runs on CPU (gloo) too. Each process holds a shard of every
parameter, gradient and optimizer state; checkpoints are whole (gathered to rank 0), so they do not depend
on the number of processes that wrote them."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from posttrain import distributed
from posttrain.sharding.none import NoSharding


def requested(flag: bool) -> bool:
    """The recipe's `train.fsdp`, or `accelerate launch` with an FSDP config (it sets ACCELERATE_USE_FSDP):
    either way the engine shards the model itself (`shard_model`), so there is one FSDP path."""
    return flag or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"


def shard_model(model, device: torch.device):
    """FSDP 2 (torch's `fully_shard`) over every rank: each decoder layer is a unit, all-gathered only for
    its own forward and backward; the rest (embeddings, the tied head, norms, scalar heads) is the root's.
    Gradients are reduce-scattered as means over ranks, as DDP all-reduces them."""
    model.to(device)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh(device.type, (distributed.world(),))
    for m in [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]:
        fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _fsdp_units(model) -> list:
    from torch.distributed.fsdp import FSDPModule
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def full_params(model) -> Iterator[None]:
    """Inside the block every rank holds the whole model (each FSDP unit all-gathered once and kept), so
    forwards need no collectives and ranks may run different numbers of them (each samples its own
    shard of prompts). Resharded on exit. A no-op for a model that is not sharded."""
    units = _fsdp_units(model) if is_sharded_model(model) else []
    if not units:
        yield
        return
    inner = [m for m in units if m is not model]  # the root never reshards after its forward anyway
    # peft's disable_adapter() switches requires_grad off and on again; done on the gathered parameters,
    # it left the shards frozen (measured): what trains is restored by hand
    trainable = [(p, p.requires_grad) for p in model.parameters()]
    for m in inner:
        m.set_reshard_after_forward(False)
    for m in units:
        m.unshard()
    try:
        yield
    finally:
        for m in units:
            m.reshard()
        for m in inner:
            m.set_reshard_after_forward(True)
        for p, flag in trainable:
            p.requires_grad_(flag)


def keep_full_params(model) -> None:
    """Gather a sharded model's full weights on every rank for good (after training: what follows
    samples and evaluates, rank by rank)."""
    units = _fsdp_units(model) if is_sharded_model(model) else []
    for m in units:
        if m is not model:
            m.set_reshard_after_forward(False)
    for m in units:
        m.unshard()


def full_state_dict(model) -> dict:
    """The model's whole state dict (canonical names, CPU tensors) on rank 0, {} on the others; every rank
    must call it (it gathers)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state(model, optimizer) -> dict:
    """The optimizer's whole state keyed by parameter name, on rank 0 ({} elsewhere): independent of the
    number of processes that wrote it. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(model, optimizer, state: dict) -> None:
    """Load a `full_optimizer_state` (every rank passes the whole dict) into a sharded model's optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))


def is_sharded_model(model) -> bool:
    """Whether `model`'s parameters are sharded across ranks (FSDP 1 or 2): then every forward must go
    through the wrapper on every rank, and the unwrapped module is not a whole model."""
    return any(type(m).__name__.startswith(("FullyShardedDataParallel", "FSDP")) for m in model.modules())


class FSDP(NoSharding):
    name = "fsdp"
    by_name = True

    def place(self, model):
        return shard_model(model, self.accelerator.device)

    def grad_sync(self, sync: bool):
        self.model.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()

    def grad_norm(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """Each rank holds a shard of every gradient (a DTensor): the squares of the shards' norms are summed
        over ranks."""
        norm = super().grad_norm([g.to_local() if hasattr(g, "to_local") else g for g in grads])
        sq = norm.double() ** 2
        torch.distributed.all_reduce(sq)
        return sq.sqrt().to(torch.float32)

    def full_params(self):
        return full_params(self.model)

    def keep_full_params(self) -> None:
        keep_full_params(self.model)

    def full_weights(self) -> dict:
        return full_state_dict(self.model)

    def optimizer_state(self) -> dict:
        return full_optimizer_state(self.model, self.optimizer)

    def load_optimizer_state(self, state: dict) -> None:
        load_full_optimizer_state(self.model, self.optimizer, state)
