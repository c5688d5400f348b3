"""How the model is spread over the processes of a run: one strategy per module, one interface.

- none.py: one process, the model as it is;
- ddp.py: N processes, each with the whole model, gradients all-reduced (accelerate's DDP);
- fsdp.py: N processes, each with a shard of every parameter (torch's FSDP 2);
- zero.py: N processes under DeepSpeed ZeRO stage 1, 2 or 3.

The engine picks one with `choose` and calls its methods (place, wrap, backward, clip-and-step, full
parameters, full state); nothing in the loop asks which one runs. FSDP and ZeRO asked for in one process
run as `none`: there is nothing to shard.
"""
from __future__ import annotations

from posttrain.errors import TrainingError
from posttrain.sharding import fsdp, zero
from posttrain.sharding.ddp import DDP
from posttrain.sharding.none import NoSharding


def choose(cfg, accelerator) -> NoSharding:
    """The strategy for `cfg` (train settings: fsdp, zero_stage; or what `accelerate launch` asked for)
    over the accelerator's processes."""
    use_fsdp = fsdp.requested(cfg.fsdp)
    stage = zero.requested_stage(cfg.zero_stage)
    if use_fsdp and stage:
        raise TrainingError("both FSDP (train.fsdp or accelerate's FSDP config) and DeepSpeed ZeRO "
                            f"(stage {stage}) requested: choose one")
    if accelerator.num_processes == 1:
        return NoSharding(accelerator, cfg)
    if use_fsdp:
        return fsdp.FSDP(accelerator, cfg)
    if stage:
        return zero.ZeRO(accelerator, cfg, stage)
    return DDP(accelerator, cfg)


__all__ = ["choose", "NoSharding", "DDP"]
