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


def is_sharded_model(model) -> bool:
    """Whether `model`'s parameters are sharded across ranks (FSDP 1 or 2): then every forward must go
    through the wrapper on every rank, and the unwrapped module is not a whole model."""
    return any(type(m).__name__.startswith(("FullyShardedDataParallel", "FSDP")) for m in model.modules())


def on_main(fn, *args, **kwargs):
    """fn(*args, **kwargs) on rank 0 alone (its result there, None elsewhere); the others wait until it
    returned, so what it wrote is there for them."""
    with main_first() as first:
        return fn(*args, **kwargs) if first else None
