"""DeepSpeed ZeRO (stages 1-3) under N > 1 processes, the engine's own, as FSDP is (sharding/fsdp.py).

The engine calls `deepspeed.initialize` itself on the process group the launcher started (gloo on CPU,
NCCL on CUDA), never through accelerate: one code path, which runs under torchrun on CPU too, where
accelerate would fall back to DDP. What the engine keeps doing itself: the data split, the loss scaling
(a step's loss is a sum over its units, divided by the global count), the learning-rate schedule (on the
torch optimizer that ZeRO steps) and the checks before an update. What ZeRO does: gradient reduction at
the accumulation boundary (DeepSpeed's accumulation steps are `train.grad_accum`), clipping to
`train.max_grad_norm` and the sharded optimizer step, which it skips on a non-finite gradient norm.

Checkpoints are whole, as FSDP's are: rank 0 writes the full weights and the optimizer state keyed by
parameter name, gathered from the shards by DeepSpeed's fragment API, so a ZeRO checkpoint does not
depend on the number of processes that wrote it.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from posttrain.distributed import ZERO_TAKEN, take_over_from_accelerate
from posttrain.errors import TrainingError
from posttrain.sharding.none import NoSharding

ENGINE_CLASS = "DeepSpeedEngine"
_ADAM_KEYS = ("exp_avg", "exp_avg_sq")


def requested_stage(recipe_stage: int) -> int:
    """The recipe's `train.zero_stage`, else what `accelerate launch` with a DeepSpeed config asked for
    (see `take_over_from_accelerate`); 0 = not requested."""
    take_over_from_accelerate()
    return recipe_stage or int(os.environ.get(ZERO_TAKEN, "0"))


def is_zero(model) -> bool:
    return type(model).__name__ == ENGINE_CLASS


def _stage(engine) -> int:
    return engine.zero_optimization_stage()


def wrap(model, optimizer: torch.optim.Optimizer, *, stage: int, micro_batch_size: int, grad_accum: int,
         max_grad_norm: float | None):
    """The DeepSpeed engine over `model` (already on its device) with `optimizer`'s groups sharded."""
    try:
        import deepspeed
    except ImportError as e:
        raise TrainingError("ZeRO was requested (train.zero_stage or accelerate's DeepSpeed config) but "
                            "deepspeed is not installed: pip install deepspeed (docs/scaling.md)") from e
    # parameter names per optimizer group, before ZeRO replaces the groups' tensors by flat shards
    ids = {id(p): n for n, p in model.named_parameters()}
    names = [[ids[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    config = {"train_micro_batch_size_per_gpu": micro_batch_size, "gradient_accumulation_steps": grad_accum,
              "gradient_clipping": max_grad_norm or 0.0, "zero_optimization": {"stage": stage},
              # precision is the engine's autocast on fp32 weights, as without ZeRO
              "fp16": {"enabled": False}, "bf16": {"enabled": False},
              "zero_allow_untested_optimizer": True, "steps_per_print": 2**31 - 1,
              "wall_clock_breakdown": False}
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config,
                                      dist_init_required=False)
    engine.posttrain_group_names = names
    return engine


def backward(engine, loss: torch.Tensor, *, last: bool) -> None:
    """Accumulate one micro-batch's gradients; reduced across ranks at the step's last micro-batch. The loss
    is already scaled for the whole step, so DeepSpeed must not divide it by its accumulation steps."""
    engine.set_gradient_accumulation_boundary(last)
    engine.backward(loss, scale_wrt_gas=False)


def step(engine) -> float | None:
    """Clip, step the sharded optimizer, zero the gradients. The gradient norm before clipping (None when
    clipping is off); raises if DeepSpeed skipped the update for a non-finite norm."""
    engine.step()
    norm = engine.get_global_grad_norm()
    norm = None if norm is None else float(norm)
    if not engine.was_step_applied():
        raise FloatingPointError(f"non-finite gradient norm ({norm})")
    return norm


@contextlib.contextmanager
def full_params(engine) -> Iterator[None]:
    """Under ZeRO-3 every rank holds the whole model inside the block, with the engine's gather hooks off,
    so ranks may run different numbers of forwards (sampling their own prompts). Stages 1-2 keep whole
    weights on every rank: nothing to do."""
    if _stage(engine) < 3:
        yield
        return
    from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation
    trainable = [(p, p.requires_grad) for p in engine.module.parameters()]
    with unwrap_model_for_generation(engine):
        yield
    for p, flag in trainable:  # peft's disable_adapter() toggles requires_grad on the gathered tensors
        p.requires_grad_(flag)


def keep_full_params(engine) -> None:
    """After training under ZeRO-3: gather the weights on every rank for good and drop the gather hooks, so
    the evaluations and stages that follow run on a plain module."""
    if _stage(engine) < 3:
        return
    offload = engine.optimizer.parameter_offload
    for hook in offload.forward_hooks + offload.backward_hooks:
        hook.remove()
    offload.forward_hooks, offload.backward_hooks = [], []
    params = list(engine.module.parameters())
    params[0].all_gather(param_list=params)


@contextlib.contextmanager
def _gathered(engine, modifier_rank: int | None = None) -> Iterator[None]:
    if _stage(engine) < 3:
        yield
        return
    import deepspeed
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=modifier_rank):
        yield


def full_state_dict(engine) -> dict:
    """The model's whole state dict (CPU tensors) on every rank; collective under ZeRO-3."""
    with _gathered(engine):
        return {k: v.detach().to("cpu", copy=True) for k, v in engine.module.state_dict().items()}


def load_weights(engine, load: callable) -> None:
    """`load(module)` copies saved weights into the module in place (every rank reads the same files);
    then ZeRO's fp32 master copies, which the optimizer steps, are set from them."""
    with _gathered(engine, modifier_rank=0):
        load(engine.module)
        for p in engine.module.parameters():
            if p.requires_grad:
                _set_full(p, p.data.float())


def full_optimizer_state(engine) -> dict:
    """The Adam state keyed by parameter name, whole, with the torch optimizer's group settings: the format
    of `torch.distributed.checkpoint`'s full optimizer state dict. Collective (every rank, same order)."""
    from deepspeed.utils import safe_get_full_optimizer_state
    params = dict(engine.module.named_parameters())
    base = engine.optimizer.optimizer  # the torch optimizer, now over flat shards
    step = next((s["step"] for s in base.state.values() if "step" in s), None)
    state, groups = {}, []
    for names, group in zip(engine.posttrain_group_names, base.param_groups):
        for n in names:
            entry = {k: safe_get_full_optimizer_state(params[n], k) for k in _ADAM_KEYS}
            entry = {k: v.detach().cpu() for k, v in entry.items() if v is not None}
            if step is not None:
                entry["step"] = (step.detach().cpu().clone() if torch.is_tensor(step)
                                 else torch.tensor(float(step)))
            state[n] = entry
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": list(names)})
    return {"state": state, "param_groups": groups}


def load_full_optimizer_state(engine, saved: dict) -> None:
    """Set a `full_optimizer_state` (whatever number of processes wrote it) into the sharded optimizer."""
    params = dict(engine.module.named_parameters())
    names = [n for g in engine.posttrain_group_names for n in g]
    missing = sorted(set(names) - set(saved["state"]))
    if missing or len(saved["param_groups"]) != len(engine.posttrain_group_names):
        raise TrainingError(f"the saved optimizer state does not fit this model (e.g. no state for "
                            f"{missing[:3]}); was it written for another model or LoRA setting?")
    step = next((s["step"] for s in saved["state"].values() if "step" in s), None)
    if step is None:
        return
    _create_state(engine, step)
    for n in names:
        for k in _ADAM_KEYS:
            if k in saved["state"][n]:
                _set_full(params[n], saved["state"][n][k], k)
    base = engine.optimizer.optimizer
    for group, saved_group in zip(base.param_groups, saved["param_groups"]):
        group.update({k: v for k, v in saved_group.items() if k != "params"})


def _create_state(engine, step: torch.Tensor) -> None:
    """Adam's state for every flat fp32 shard, zeros at `step`, so that the fragment API can write into it:
    ZeRO creates it only at its first step (torch's Adam state is lazy), and a resume comes before that."""
    opt = engine.optimizer
    flats = opt.fp32_partitioned_groups_flat if _stage(engine) == 3 else opt.single_partition_of_fp32_groups
    for flat in flats:
        opt.optimizer.state[flat] = {"step": step.to(flat.device, torch.float32).clone(),
                                     "exp_avg": torch.zeros_like(flat), "exp_avg_sq": torch.zeros_like(flat)}
    if _stage(engine) < 3:  # stages 1-2 link each parameter's fragment to the state after their first step
        opt._hp_optimizer_states_linked = False
        opt._lazy_init_hp_params_optimizer_state()


def _set_full(param, value: torch.Tensor, key: str | None = None) -> None:
    """This rank's part of the whole fp32 `value` into ZeRO's master copy of `param` (key None) or into
    Adam's state `key`. ZeRO-3's own setter asserts the unpadded size and then reads past the end for a
    rank whose partition is padding only (a tensor smaller than the number of ranks, e.g. a bias of 1)."""
    if not hasattr(param, "ds_id"):
        from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state
        value = value.to(param.device)
        if key is None:
            safe_set_full_fp32_param(param, value)
        else:
            safe_set_full_optimizer_state(param, value, key)
        return
    opt = param._z3_optimizer
    part, _ = opt._get_fp32_opt_state_partition(param, release_swap_buffers=False, optim_state_key=key)
    flat = value.flatten().to(part.device, part.dtype)
    start = part.numel() * opt._get_param_partition_rank(param)
    mine = flat[start:start + part.numel()]
    part.data.zero_()
    part.data[:mine.numel()].copy_(mine)


class ZeRO(NoSharding):
    """The DeepSpeed engine wraps the model; the engine's scheduler stays on the torch optimizer, which
    ZeRO steps over its flat shards."""
    by_name = True

    def __init__(self, accelerator, cfg, stage: int):
        super().__init__(accelerator, cfg)
        self.stage = stage
        self.name = f"zero{stage}"

    def wrap(self, model, optimizer: torch.optim.Optimizer) -> None:
        cfg = self.cfg
        self.model = wrap(model, optimizer, stage=self.stage, micro_batch_size=cfg.micro_batch_size,
                          grad_accum=cfg.grad_accum, max_grad_norm=cfg.max_grad_norm)
        self.optimizer = optimizer

    def unwrap(self):
        return self.model.module

    def backward(self, loss: torch.Tensor, *, last: bool) -> None:
        backward(self.model, loss, last=last)

    def clip_and_step(self, max_grad_norm: float | None) -> float | None:
        return step(self.model)  # ZeRO clips (to train.max_grad_norm, given at wrap) and steps in one call

    def full_params(self):
        return full_params(self.model)

    def keep_full_params(self) -> None:
        keep_full_params(self.model)

    def full_weights(self) -> dict | None:
        return full_state_dict(self.model) if self.stage == 3 else None

    def optimizer_state(self) -> dict:
        return full_optimizer_state(self.model)

    def load_optimizer_state(self, state: dict) -> None:
        load_full_optimizer_state(self.model, state)

    def load_weights(self, load) -> None:
        load_weights(self.model, load)
