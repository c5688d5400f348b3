"""THE training loop. Every method plugs in an Objective (posttrain/contracts.py); the engine knows nothing
of any method, and nothing of how the model is spread over processes (posttrain/sharding/).

Exactness choices:
- An objective returns a loss SUM and its normaliser ("units": tokens, sequences, pairs). The engine
  divides by the units of the whole optimisation step (all micro-batches, all processes), so
  accumulating 4 micro-batches of 2 gives the same update as one batch of 8.
- The order of examples is a pure function of (seed, epoch) (contracts.DataPlan); a checkpoint stores the
  step, so resume continues with exactly the batches an uninterrupted run would have seen, and RNG states
  are restored (posttrain/checkpoint_io.py).
- A non-finite loss or gradient norm stops the run before anything is stepped or written.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from posttrain import allocator, checkpoint_io, distributed, sharding, trackers
from posttrain.checkpoints import latest_checkpoint
from posttrain.config import TrainSettings
from posttrain.contracts import Batch, DataPlan, Objective, RolloutHook
from posttrain.errors import TrainingError
from posttrain.schedule import build_optimizer, lr_lambda, total_steps
from posttrain.step_metrics import MetricsLog, count_tokens, reduce_metrics, sum_metrics


@dataclass
class TrainResult:
    steps: int
    final_metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_time: float = 0.0
    checkpoint: Path | None = None
    model: Any = None  # the trained module, whole on every process


class Engine:
    def __init__(self, model, objective: Objective, train_data: Sequence[Any] | None,
                 collate: Callable[[list[Any]], Batch], cfg: TrainSettings, *, run_dir: str | Path,
                 seed: int = 0, eval_data: Sequence[Any] | None = None,
                 eval_fn: Callable[[Any], dict[str, float]] | None = None,
                 rollout: RolloutHook | None = None, prepare: Callable[[DataPlan], None] | None = None,
                 tokenizer=None, show_progress: bool = True, schedule: tuple[int, int] | None = None,
                 optimizer_state: Path | None = None):
        """`train_data` None: the rollout hook gives every buffer (sized by its `buffer_size`).
        `prepare(plan)` runs once, before training, with the run's data order (e.g. to precompute the
        reference log-probs of exactly the examples the steps will use). `tokenizer` is saved with every
        checkpoint's model, so the folder is a complete HF model folder. `schedule=(offset, total)` runs
        these steps as steps offset.. of a schedule of `total` steps, and `optimizer_state` starts the
        optimizer from a saved state (an iteration that carries on the previous one's optimizer)."""
        if train_data is None and rollout is None:
            raise TrainingError("no training data and no rollout hook to give it")
        if train_data is not None and len(train_data) == 0:
            raise TrainingError("the training set is empty")
        if train_data is None and prepare is not None:
            raise TrainingError("prepare() needs the training data, which a rollout hook only gives "
                                "during the run")
        self.cfg, self.seed, self.objective, self.collate = cfg, seed, objective, collate
        self.eval_data, self.eval_fn, self.rollout = eval_data, eval_fn, rollout
        self.show_progress, self.tokenizer = show_progress, tokenizer
        self.rollout_metrics: dict[str, float] = {}
        self.run_dir = Path(run_dir)
        trackers.check_installed(cfg.report_to)  # before any work: a missing tracker names its extra
        distributed.take_over_from_accelerate()  # ZeRO is the engine's, never accelerate's (sharding/zero.py)
        # precision is our autocast, not accelerate's: its state is a process-wide singleton that
        # refuses a second Engine with another precision in the same process
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        if cfg.keep_freed_memory and self.accelerator.device.type == "cpu":
            allocator.keep_freed_memory()
        if cfg.gradient_checkpointing:
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2 name
                model.activation_checkpointing_enable(
                    activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(model, "enable_input_require_grads"):
                model.enable_input_require_grads()
        n = len(train_data) if train_data is not None else rollout.buffer_size
        self.steps = total_steps(cfg, n, self.accelerator.num_processes)
        self.strategy = sharding.choose(cfg, self.accelerator)
        model = self.strategy.place(model)
        optimizer = build_optimizer(cfg, model)
        self.strategy.wrap(model, optimizer)
        self.model, self.optimizer = self.strategy.model, optimizer
        if optimizer_state is not None:  # before the scheduler, which takes the lrs from it
            checkpoint_io.load_optimizer(self.strategy, optimizer_state)
        # the schedule counts optimisation steps; accelerate's scheduler wrapper would step it once per
        # process, so it stays a plain scheduler on the raw optimizer (which ZeRO steps too)
        offset, total = schedule or (0, self.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total, offset))
        self.step = 0
        self.train_data: Sequence[Any] | None = None
        self.plan: DataPlan | None = None
        if train_data is not None:
            self._set_data(train_data)
        if prepare is not None:
            with self.strategy.full_params():
                prepare(self.plan)

    @property
    def sharding(self) -> str:
        """How the model is spread over the processes: "none" (one process), "ddp", "fsdp" or
        "zero<stage>"."""
        return self.strategy.name

    @property
    def module(self):
        """The plain module being trained (unwrapped from any process wrapper)."""
        return self.strategy.unwrap()

    def autocast(self):
        return torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16,
                              enabled=self.cfg.precision == "bf16")

    # ---- data ---------------------------------------------------------------------------------
    def _global_batch(self) -> int:
        return self.cfg.micro_batch_size * self.cfg.grad_accum * self.accelerator.num_processes

    def _set_data(self, data: Sequence[Any]) -> None:
        if len(data) == 0:
            raise TrainingError(f"step {self.step + 1}: the rollout hook returned an empty buffer")
        self.train_data = data
        self.plan = DataPlan(len(data), self._global_batch(), self.steps, self.seed)

    def micro_batches(self, step: int) -> list[Batch]:
        if self.plan is None:
            raise TrainingError(f"step {step + 1}: the rollout hook gave no buffer to train on")
        cfg, acc = self.cfg, self.accelerator
        per_rank = cfg.micro_batch_size * cfg.grad_accum
        idx = self.plan.step(step)
        mine = idx[acc.process_index * per_rank:(acc.process_index + 1) * per_rank]
        return [self._to_device(self.collate([self.train_data[i] for i in mine[s:s + cfg.micro_batch_size]]))
                for s in range(0, per_rank, cfg.micro_batch_size)]

    def _to_device(self, batch: Batch) -> Batch:
        dev = self.accelerator.device
        return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def run_rollout(self) -> None:
        with self.strategy.full_params():
            out = self.rollout(self.module, self.step)
        if out is None:
            return
        if out.data is not None:
            self._set_data(out.data)
        self.rollout_metrics = {k: float(v) for k, v in out.metrics.items()}

    # ---- one optimisation step ----------------------------------------------------------------
    def train_step(self, batches: list[Batch]) -> dict[str, float]:
        acc, model, strategy = self.accelerator, self.model, self.strategy
        model.train()
        self._tell_step()
        # units of the whole step, summed over processes, known before any backward
        units = [torch.as_tensor(float(self.objective.units(b)), dtype=torch.float64, device=acc.device)
                 for b in batches]
        total_units = acc.reduce(torch.stack(units).sum(), reduction="sum").item()
        if total_units <= 0:
            raise TrainingError(f"step {self.step + 1}: the batch has nothing to train on (0 units)")
        sums: dict[str, float] = {}
        loss_total, tokens = 0.0, 0
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            with strategy.grad_sync(last), self.autocast():
                loss_sum, metrics = self.objective(model, batch)
                # DDP averages gradients over processes; scale back up so the step is a true mean
                strategy.backward(loss_sum * (acc.num_processes / total_units), last=last)
            loss_total += loss_sum.detach().item()
            tokens += count_tokens(batch)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        # metrics of the whole step: every rank's micro-batches (a rank's own counts are a fraction of it)
        totals, sums = sum_metrics({"loss": loss_total, "tokens": tokens}, sums)
        loss_mean, tokens = totals["loss"] / total_units, int(totals["tokens"])
        if not math.isfinite(loss_mean):
            self._stop(f"non-finite loss ({loss_mean})")
        try:
            grad_norm = strategy.clip_and_step(self.cfg.max_grad_norm)
        except FloatingPointError as e:
            self._stop(str(e))
        self.scheduler.step()
        self.step += 1
        out = {"loss": loss_mean, "lr": self.scheduler.get_last_lr()[0], "units": total_units,
               "tokens": tokens}
        if grad_norm is not None:
            out["grad_norm"] = grad_norm
        out.update(reduce_metrics(sums, total_units))
        return out

    def _tell_step(self) -> None:
        set_step = getattr(self.objective, "set_step", None)
        if set_step is not None:
            set_step(self.step)

    def _stop(self, what: str) -> None:
        """Refuse the update: nothing is stepped or saved, the last checkpoint stays the good one."""
        self.strategy.zero_grad()
        last = latest_checkpoint(self.run_dir)
        raise TrainingError(f"{what} at step {self.step + 1}; stopped without updating. "
                            f"Last good checkpoint: {last if last else 'none written yet'}")

    # ---- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        out: dict[str, float] = {}
        self.model.eval()
        self._tell_step()
        if self.eval_data:
            loss, units, sums = 0.0, 0.0, {}
            bs = self.cfg.micro_batch_size
            starts = range(0, len(self.eval_data), bs)
            # each rank its shard of the batches, summed over ranks: the one-process sums. Unwrapped (and
            # under FSDP gathered): the ranks run different numbers of passes, which a wrapper would sync at
            # each one
            with self.strategy.full_params():
                model = self.module
                for s in distributed.shard(starts):
                    batch = self._to_device(self.collate(list(self.eval_data[s:s + bs])))
                    with self.autocast():
                        l, m = self.objective(model, batch)
                    loss, units = loss + float(l), units + float(self.objective.units(batch))
                    for k, v in m.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
            totals, sums = sum_metrics({"loss": loss, "units": units}, sums)
            loss, units = totals["loss"], totals["units"]
            out["eval/loss"] = loss / max(units, 1e-12)
            out.update({f"eval/{k}": v for k, v in reduce_metrics(sums, units).items()})
        if self.eval_fn is not None:
            with self.strategy.full_params():
                out.update({f"eval/{k}": v for k, v in self.eval_fn(self.module).items()})
        self.model.train()
        return out

    # ---- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        examples = self.step * self._global_batch()
        state = {"step": self.step, "seed": self.seed, "examples_seen": examples,
                 "epoch": examples / len(self.train_data)}
        rollout = None
        if self.rollout is not None:
            def rollout() -> dict:
                return {"hook": self.rollout.state_dict(), "data": list(self.train_data),
                        "metrics": self.rollout_metrics}
        return checkpoint_io.save(self.run_dir, self.step, strategy=self.strategy, scheduler=self.scheduler,
                                  tokenizer=self.tokenizer, state=state, keep=self.cfg.keep_checkpoints,
                                  rollout=rollout)

    def load_checkpoint(self, path: Path) -> None:
        self.step = checkpoint_io.load(path, strategy=self.strategy, scheduler=self.scheduler)["step"]
        # the next step's lr from this run's schedule: what the checkpoint saved when the schedule is the one
        # it ran under; the new schedule's value at this step when the run is continued to a new length
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas):
            group["lr"] = base * factor(self.scheduler.last_epoch)
        if self.rollout is not None:
            hook, data, self.rollout_metrics = checkpoint_io.load_rollout(path)
            self.rollout.load_state_dict(hook)
            self._set_data(data)

    # ---- the loop -----------------------------------------------------------------------------
    def train(self, *, resume: bool = True, stop_after: int | None = None) -> TrainResult:
        """Train to the configured length. `stop_after` ends early after that many steps in total
        (used to simulate an interruption); resume=True continues from the latest checkpoint."""
        start_time = time.time()
        ckpt = latest_checkpoint(self.run_dir) if resume else None
        if ckpt is not None:
            self.load_checkpoint(ckpt)
        main = self.accelerator.is_main_process
        log = MetricsLog(self.run_dir, self.step,
                         trackers.open_trackers(self.cfg.report_to, self.run_dir, resume_step=self.step,
                                                settings=self.cfg.model_dump(mode="json"))) if main else None
        history: list[dict] = []
        end = min(self.steps, stop_after) if stop_after else self.steps
        bar = tqdm(total=self.steps, initial=self.step, disable=not (self.show_progress and main),
                   desc=self.run_dir.name, unit="step", dynamic_ncols=True)
        last: dict[str, float] = {}
        last_ckpt = ckpt
        cfg = self.cfg
        try:
            while self.step < end:
                if self.rollout is not None:
                    self.run_rollout()
                t0 = time.time()
                metrics = self.train_step(self.micro_batches(self.step))
                metrics.update(self.rollout_metrics)
                dt = time.time() - t0
                metrics["tokens_per_s"] = metrics["tokens"] / dt if dt > 0 else 0.0
                metrics["step_time"] = dt
                metrics["elapsed"] = time.time() - start_time
                if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == self.steps):
                    metrics.update(self.evaluate())
                record = {"step": self.step, **metrics}
                history.append(record)
                last = metrics
                if log is not None and (self.step % cfg.log_every == 0 or self.step == end):
                    log.write(record)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
                if cfg.save_every and self.step % cfg.save_every == 0:
                    last_ckpt = self.save_checkpoint()
            if self.step == self.steps and (last_ckpt is None
                                            or not last_ckpt.name.endswith(f"{self.step:07d}")):
                last_ckpt = self.save_checkpoint()
        finally:
            bar.close()
            if log is not None:
                log.close()
        # what follows (evaluations, the next stage's sampling) runs rank by rank
        self.strategy.keep_full_params()
        return TrainResult(self.step, last, history, time.time() - start_time, last_ckpt, self.module)


__all__ = ["Engine", "TrainResult"]
