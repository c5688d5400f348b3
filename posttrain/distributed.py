"""The processes of a multi-process run (torchrun / accelerate launch): who am I, and how work is split.

One process is the usual case and every function here is then a no-op that costs nothing. Under N
processes the rule is: work that does not train (sampling, rollouts, reference log-probs, evaluations) is
split into N contiguous shards, one per rank, and gathered back in the original order, so the result is
the one-process result; files are written by rank 0 alone, and the others wait for it where they read
them next (`main_first`).

The process group is started on first use from the launcher's environment (WORLD_SIZE, RANK, ...):
gloo on CPU, NCCL on CUDA, through accelerate's PartialState so that the engine's Accelerator later joins
the same group.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def launched_world() -> int:
    """The number of processes the launcher started (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init() -> None:
    """Join the launcher's process group (idempotent; nothing to do for one process)."""
    from posttrain import zero
    zero.take_over_from_accelerate()  # before accelerate's state exists
    if launched_world() > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        from accelerate import PartialState
        PartialState(cpu=not torch.cuda.is_available())


def world() -> int:
    init()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def rank() -> int:
    if world() == 1:
        return 0
    return torch.distributed.get_rank()


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world() > 1:
        torch.distributed.barrier()


def bounds(n: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """[start, end) of rank r's contiguous shard of n items; shards differ in size by at most one."""
    r = rank() if r is None else r
    w = world() if w is None else w
    return r * n // w, (r + 1) * n // w


def shard(items: Sequence[T]) -> list[T]:
    """This rank's contiguous shard of `items`."""
    start, end = bounds(len(items))
    return list(items[start:end])


def gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (picklable objects)."""
    if world() == 1:
        return [obj]
    out: list[Any] = [None] * world()
    torch.distributed.all_gather_object(out, obj)
    return out


def gather_shards(local: Sequence[T]) -> list[T]:
    """The concatenation of every rank's shard in rank order: with `shard`, the full list in order."""
    if world() == 1:
        return list(local)
    return [x for part in gather_objects(list(local)) for x in part]


def map_sharded(fn, items: Sequence[T]) -> list:
    """fn(this rank's shard) on every rank, gathered: fn(items) as one process computes it, when fn maps
    items one to one (`len(fn(xs)) == len(xs)`)."""
    return gather_shards(fn(shard(items)) if items else [])


def sum_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each key summed over ranks (every rank must pass the same keys)."""
    if world() == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if torch.distributed.get_backend() == "nccl":
        t = t.cuda()
    torch.distributed.all_reduce(t)
    return dict(zip(keys, t.cpu().tolist()))


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if world() == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def main_first() -> Iterator[bool]:
    """Rank 0 runs the block first (yielding True); the others wait for it, then run the block with
    False (typically: read what rank 0 wrote). Keeps file writes to one process without races."""
    if world() == 1:
        yield True
        return
    if is_main():
        try:
            yield True
        finally:
            barrier()
    else:
        barrier()
        yield False


def fsdp_requested(flag: bool) -> bool:
    """The recipe's `train.fsdp`, or `accelerate launch` with an FSDP config (it sets ACCELERATE_USE_FSDP):
    either way the engine shards the model itself (`shard_model`), so there is one FSDP path."""
    return flag or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"


def shard_model(model, device: torch.device):
    """FSDP 2 (torch's `fully_shard`) over every rank: each decoder layer is a unit, all-gathered only for
    its own forward and backward; the rest (embeddings, the tied head, norms, scalar heads) is the root's.
    Gradients are reduce-scattered as means over ranks, as DDP all-reduces them. One process: moved only."""
    model.to(device)
    if world() == 1:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh(device.type, (world(),))
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
    shard of prompts). Resharded on exit. A no-op for a model that is not sharded. ZeRO: posttrain.zero."""
    from posttrain import zero
    if zero.is_zero(model):
        with zero.full_params(model):
            yield
        return
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


def place_like(state: dict, model_state: dict) -> dict:
    """`state`'s whole tensors cut to this rank's shards where `model_state` (the model's own state dict)
    holds sharded ones (DTensors), so that `load_state_dict` copies shard into shard. Every rank read the
    whole tensor from the file, so nothing is sent."""
    from torch.distributed.tensor import distribute_tensor
    out = {}
    for k, v in state.items():
        t = model_state.get(k)
        if hasattr(t, "device_mesh"):
            v = distribute_tensor(v.to(t.dtype), t.device_mesh, t.placements, src_data_rank=None)
        out[k] = v
    return out


def is_sharded_model(model) -> bool:
    """Whether `model`'s parameters are sharded across ranks (FSDP 1 or 2): then every forward must go
    through the wrapper on every rank, and the unwrapped module is not a whole model."""
    return any(type(m).__name__.startswith(("FullyShardedDataParallel", "FSDP")) for m in model.modules())


def on_main(fn, *args, **kwargs):
    """fn(*args, **kwargs) on rank 0 alone (its result there, None elsewhere); the others wait until it
    returned, so what it wrote is there for them."""
    with main_first() as first:
        return fn(*args, **kwargs) if first else None
