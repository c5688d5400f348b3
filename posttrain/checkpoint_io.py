"""What a training checkpoint holds, and how it is written and read back.

A checkpoint folder (posttrain/checkpoints.py names it) holds the model (a complete HF folder, with the
tokenizer), the optimizer, the scheduler, every process's RNG states, the step (state.json) and, for a run
with a rollout hook, the hook's state and buffer (rollout.pt). It is written to a temporary folder and
renamed: a crash mid-write leaves the previous checkpoint intact. The sharding strategy gathers what is
sharded, so a checkpoint is whole whatever the number of processes that wrote it (FSDP, ZeRO).
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from posttrain import distributed
from posttrain.checkpoints import checkpoint_dir, checkpoints
from posttrain.errors import TrainingError
from posttrain.files import atomic_folder
from posttrain.models import load_weights_, save_weights

ROLLOUT_STATE = "rollout.pt"  # a rollout hook's state, buffer and metrics
OLD_ROLLOUT_STATE = "stage.pt"  # the same, as written before the hook's rename (key "stage", not "hook")


def rng_state() -> dict:
    # numpy's state as plain lists: torch.load(weights_only=True) then needs no allow-listed globals
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_dir: Path, step: int, *, strategy, scheduler, tokenizer, state: dict, keep: int,
         rollout: Callable[[], dict] | None = None) -> Path:
    """Write step `step`'s checkpoint (every process calls it: the strategy gathers; rank 0 writes) and
    keep the last `keep`. `state` goes to state.json; `rollout()` gives the rollout hook's part."""
    final = checkpoint_dir(run_dir, step)
    rng_states = distributed.gather_objects(rng_state())
    weights = strategy.full_weights()
    optim = strategy.optimizer_state()
    if not distributed.is_main():
        distributed.barrier()
        return final
    with atomic_folder(final) as tmp:
        save_weights(strategy.unwrap(), tmp / "model", tokenizer=tokenizer, state_dict=weights)
        torch.save(optim, tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_states[0], tmp / "rng.pt")
        for r, own in enumerate(rng_states[1:], start=1):  # each rank resumes its own streams
            torch.save(own, tmp / f"rng-{r}.pt")
        if rollout is not None:
            torch.save(rollout(), tmp / ROLLOUT_STATE)
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
    for old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    distributed.barrier()
    return final


def load(path: Path, *, strategy, scheduler) -> dict:
    """Weights, optimizer, scheduler and this process's RNG states from checkpoint `path`; its state.json."""
    strategy.load_weights(lambda module: load_weights_(module, path / "model"))
    load_optimizer(strategy, path / "optimizer.pt")
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rank = distributed.rank()
    own = path / f"rng-{rank}.pt"
    if rank > 0 and not own.is_file():
        raise TrainingError(f"{path} has no {own.name}: written by a run with fewer processes; resume it "
                            f"with as many processes as wrote it")
    set_rng_state(torch.load(own if rank > 0 else path / "rng.pt", weights_only=True))
    return json.loads((path / "state.json").read_text())


def load_optimizer(strategy, path: Path) -> None:
    """An FSDP or ZeRO run saves the optimizer state keyed by parameter name (whole, whatever the number
    of processes), any other run keyed by position."""
    state = torch.load(path, weights_only=True)
    by_name = any(isinstance(k, str) for k in state.get("state", {}))
    if by_name != strategy.by_name:
        raise TrainingError(f"{path} was written by a run {'with' if by_name else 'without'} FSDP or ZeRO "
                            f"over several processes; resume it the same way "
                            f"(train.fsdp / train.zero_stage, number of processes)")
    strategy.load_optimizer_state(state)


def load_rollout(path: Path) -> tuple[dict, list, dict]:
    """(the hook's state, its buffer, its metrics) from checkpoint `path`."""
    name = next((n for n in (ROLLOUT_STATE, OLD_ROLLOUT_STATE) if (path / n).is_file()), None)
    if name is None:
        raise TrainingError(f"{path} has no {ROLLOUT_STATE}: written by a run without this method's "
                            f"rollout hook?")
    saved = torch.load(path / name, weights_only=True)
    return saved["hook" if "hook" in saved else "stage"], saved["data"], dict(saved["metrics"])
