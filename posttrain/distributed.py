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
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from posttrain.errors import TrainingError

T = TypeVar("T")
ZERO_TAKEN = "POSTTRAIN_ZERO_STAGE"  # the ZeRO stage accelerate launch asked for, once taken over


def launched_world() -> int:
    """The number of processes the launcher started (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init() -> None:
    """Join the launcher's process group (idempotent; nothing to do for one process)."""
    take_over_from_accelerate()  # before accelerate's state exists
    if launched_world() > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        from accelerate import PartialState
        PartialState(cpu=not torch.cuda.is_available())


def take_over_from_accelerate() -> None:
    """`accelerate launch` with a DeepSpeed config sets ACCELERATE_USE_DEEPSPEED and the stage (or a DeepSpeed
    JSON file). The engine runs ZeRO itself, so the request moves to POSTTRAIN_ZERO_STAGE and accelerate no
    longer sees it: on CUDA it would otherwise make its state DeepSpeed's and wrap the model a second way.
    Called before accelerate's state is first built (distributed.init, the engine)."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        return
    for key in ("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"):
        if os.environ.get(key, "none").lower() not in ("", "none"):
            raise TrainingError(f"{key}={os.environ[key]}: ZeRO offload is not supported by the engine; "
                                "set offload_*_device: none (docs/scaling.md)")
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    if not stage:
        path = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "")
        try:
            stage = str(json.loads(Path(path).read_text()).get("zero_optimization", {}).get("stage", 0))
        except (OSError, ValueError) as e:
            raise TrainingError(f"accelerate asked for DeepSpeed but its config {path!r} gives no ZeRO "
                                f"stage: {e}")
    if stage not in ("1", "2", "3"):
        raise TrainingError(f"accelerate asked for DeepSpeed ZeRO stage {stage!r}; "
                            f"the engine runs stages 1, 2 and 3")
    os.environ[ZERO_TAKEN] = stage
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "false"


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


def on_main(fn, *args, **kwargs):
    """fn(*args, **kwargs) on rank 0 alone (its result there, None elsewhere); the others wait until it
    returned, so what it wrote is there for them."""
    with main_first() as first:
        return fn(*args, **kwargs) if first else None
