"""THE training loop. Every method plugs in an Objective; the engine knows nothing of any method.

Exactness choices:
- An objective returns a loss SUM and its normaliser ("units": tokens, sequences, pairs). The engine
  divides by the units of the whole optimisation step (all micro-batches, all processes), so
  accumulating 4 micro-batches of 2 gives the same update as one batch of 8.
- The order of examples is a pure function of (seed, epoch); a checkpoint stores the step, so resume
  continues with exactly the batches an uninterrupted run would have seen, and RNG states are restored.
- Checkpoints are written to a temporary folder and renamed: a crash mid-write leaves the previous
  checkpoint intact. A non-finite loss stops the run before anything is written.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from posttrain import allocator, distributed, zero
from posttrain.checkpoints import checkpoint_dir, checkpoints, latest_checkpoint
from posttrain.config import TrainSettings
from posttrain.errors import TrainingError
from posttrain.files import atomic_folder
from posttrain.models import load_weights_, save_weights

Batch = dict[str, Any]


class Objective(Protocol):
    """batch -> (loss summed over units, metrics summed over units); `units(batch)` is the normaliser.

    The units come only from `units(batch)`, without a forward pass, so the engine knows a step's total
    before the first backward. Metrics named `*_count` are totals; all others are reported as means.
    An objective with a schedule over steps (IFT's lambda) may define `set_step(step)`: the engine calls
    it with the number of optimisation steps done before every step and every evaluation, so the
    schedule is a function of the checkpointed step and a resumed run continues it exactly."""

    def __call__(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]: ...

    def units(self, batch: Batch) -> float: ...


ROLLOUT_STATE = "rollout.pt"  # a rollout hook's state, buffer and metrics in a checkpoint


@dataclass
class RolloutOutput:
    """What a rollout hook hands back: a new training buffer (None: keep the current one) and metrics,
    which the engine logs with every step until the hook's next output."""
    data: Sequence[Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class RolloutHook(Protocol):
    """A method's per-step rollout hook (e.g. PPO's rollouts at each iteration start), run before each
    optimisation step; not a pipeline stage (posttrain.pipeline.StageDef), which runs between engine runs.

    The hook never touches the engine: it returns its buffer and metrics, and the engine swaps the
    buffer, logs the metrics, counts steps and checkpoints the buffer with `state_dict()` (controllers,
    iteration counters, RNG: whatever else the hook needs to go on exactly as if never stopped)."""

    def __call__(self, model, step: int) -> RolloutOutput | None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class DataPlan:
    """The data order of a run, a pure function of (n, global batch, seed): step k's example indices."""
    n: int
    global_batch: int
    steps: int
    seed: int

    def step(self, k: int) -> list[int]:
        return step_indices(self.n, self.global_batch, k, self.seed)

    def used(self) -> list[int]:
        """Indices of every example the run will see, sorted (methods precompute only these)."""
        if self.steps * self.global_batch >= self.n:
            return list(range(self.n))
        return sorted({i for k in range(self.steps) for i in self.step(k)})


@dataclass
class TrainResult:
    steps: int
    final_metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_time: float = 0.0
    checkpoint: Path | None = None


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def step_indices(n: int, global_batch: int, step: int, seed: int) -> list[int]:
    """Example indices of optimisation step `step` (0-based) in an endless stream of shuffled epochs."""
    orders: dict[int, list[int]] = {}  # a step spans at most a few epochs: shuffle each once
    out = []
    for i in range(step * global_batch, (step + 1) * global_batch):
        epoch, pos = divmod(i, n)
        if epoch not in orders:
            orders[epoch] = epoch_order(n, seed, epoch)
        out.append(orders[epoch][pos])
    return out


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
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def vector_norm(t: torch.Tensor, row: int = 4096) -> torch.Tensor:
    """The 2-norm of `t`, as the norms of rows of `row` elements and then the norm of those. torch's own float32
    norm on CPU sums a whole tensor in one accumulator: on the embedded model's 28M-element embedding gradient it
    was 0.18% off (float64 as the truth), on the tiny model's 3M elements 2e-5; in two levels 1e-7 (and faster)."""
    flat = t.detach().reshape(-1)
    k = flat.numel() // row
    parts = [torch.linalg.vector_norm(flat[:k * row].view(k, row), dim=1)] if k else []
    if flat.numel() > k * row:
        parts.append(torch.linalg.vector_norm(flat[k * row:]).view(1))
    return torch.linalg.vector_norm(torch.cat(parts)) if parts else flat.new_zeros(())


def _rng_state() -> dict:
    # numpy's state as plain lists: torch.load(weights_only=True) then needs no allow-listed globals
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class MetricsLog:
    """metrics.jsonl always; TensorBoard when it is installed."""

    def __init__(self, run_dir: Path, resume_step: int):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "metrics.jsonl"
        if self.path.exists():
            # a resumed run rewrites history after its checkpoint, so the log has one line per step
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in kept))
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except Exception:  # tensorboard not installed: JSONL only
            pass

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _count_tokens(batch: Batch) -> int:
    """Tokens the model processed: real tokens of a padded batch, every position of a packed one."""
    attn = batch.get("attention_mask")
    if isinstance(attn, torch.Tensor) and attn.dim() == 2:
        return int(attn.sum())
    ids = batch.get("input_ids")
    return int(ids.numel()) if isinstance(ids, torch.Tensor) else 0


def _reduce_metrics(sums: dict[str, float], units: float) -> dict[str, float]:
    """Objective metrics are sums over units, reported as means; `*_count` metrics stay totals."""
    return {k: v if k.endswith("_count") else v / max(units, 1e-12) for k, v in sums.items()}


class Engine:
    def __init__(self, model, objective: Objective, train_data: Sequence[Any],
                 collate: Callable[[list[Any]], Batch], cfg: TrainSettings, *, run_dir: str | Path,
                 seed: int = 0, eval_data: Sequence[Any] | None = None,
                 eval_fn: Callable[[Any], dict[str, float]] | None = None,
                 rollout: RolloutHook | None = None, prepare: Callable[[DataPlan], None] | None = None,
                 tokenizer=None, show_progress: bool = True, schedule: tuple[int, int] | None = None,
                 optimizer_state: Path | None = None):
        """`prepare(plan)` runs once, before training, with the run's data order (e.g. to precompute the
        reference log-probs of exactly the examples the steps will use). `tokenizer` is saved with every
        checkpoint's model, so the folder is a complete HF model folder. `schedule=(offset, total)` runs
        these steps as steps offset.. of a schedule of `total` steps, and `optimizer_state` starts the
        optimizer from a saved state (an iteration that carries on the previous one's optimizer)."""
        if len(train_data) == 0:
            raise TrainingError("the training set is empty")
        self.cfg, self.seed, self.objective, self.collate = cfg, seed, objective, collate
        self.train_data, self.eval_data, self.eval_fn, self.rollout = train_data, eval_data, eval_fn, rollout
        self.show_progress, self.tokenizer = show_progress, tokenizer
        self.rollout_metrics: dict[str, float] = {}
        self.run_dir = Path(run_dir)
        zero.take_over_from_accelerate()  # ZeRO is the engine's, never accelerate's (posttrain/zero.py)
        # precision is our autocast, not accelerate's: its state is a process-wide singleton that
        # refuses a second Engine with another precision in the same process
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        if cfg.keep_freed_memory and self.accelerator.device.type == "cpu":
            allocator.keep_freed_memory()
        if cfg.gradient_checkpointing:
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2 name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(model, "enable_input_require_grads"):
                model.enable_input_require_grads()
        self.steps = total_steps(cfg, len(train_data), self.accelerator.num_processes)
        # FSDP and ZeRO are the engine's own, never accelerate's: one code path each, which runs on CPU too
        fsdp = distributed.fsdp_requested(cfg.fsdp)
        stage = zero.requested_stage(cfg.zero_stage)
        if fsdp and stage:
            raise TrainingError("both FSDP (train.fsdp or accelerate's FSDP config) and DeepSpeed ZeRO "
                                f"(stage {stage}) requested: choose one")
        many = self.accelerator.num_processes > 1
        self.sharded, self.zero = fsdp and many, stage if many else 0
        if fsdp:  # one process: only moved to the device, never wrapped (ZeRO the same)
            model = distributed.shard_model(model, self.accelerator.device)
        elif stage:
            model = model.to(self.accelerator.device)
        self.model = model
        self.optimizer = optimizer = build_optimizer(cfg, model)
        if optimizer_state is not None and not self.zero:  # before the scheduler, which takes the lrs from it
            self._load_optimizer(optimizer_state)
        # the schedule counts optimisation steps; accelerate's scheduler wrapper would step it once per
        # process, so it stays a plain scheduler on the raw optimizer (which ZeRO steps too)
        offset, total = schedule or (0, self.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total, offset))
        if self.zero:
            self.model = zero.wrap(model, optimizer, stage=stage, micro_batch_size=cfg.micro_batch_size,
                                   grad_accum=cfg.grad_accum, max_grad_norm=cfg.max_grad_norm)
            if optimizer_state is not None:
                self._load_optimizer(optimizer_state)
        elif not fsdp:
            self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.step = 0
        self.plan = DataPlan(len(train_data), self._global_batch(), self.steps, seed)
        if prepare is not None:
            with distributed.full_params(self.model):
                prepare(self.plan)

    @property
    def sharding(self) -> str:
        """How the model is spread over the processes: "none" (one process), "ddp", "fsdp" or "zero<stage>"."""
        if self.accelerator.num_processes == 1:
            return "none"
        return "fsdp" if self.sharded else f"zero{self.zero}" if self.zero else "ddp"

    def autocast(self):
        return torch.autocast(self.accelerator.device.type, dtype=torch.bfloat16,
                              enabled=self.cfg.precision == "bf16")

    # ---- data ---------------------------------------------------------------------------------
    def micro_batches(self, step: int) -> list[Batch]:
        cfg, acc = self.cfg, self.accelerator
        per_rank = cfg.micro_batch_size * cfg.grad_accum
        idx = self.plan.step(step)
        mine = idx[acc.process_index * per_rank:(acc.process_index + 1) * per_rank]
        return [self._to_device(self.collate([self.train_data[i] for i in mine[s:s + cfg.micro_batch_size]]))
                for s in range(0, per_rank, cfg.micro_batch_size)]

    def _to_device(self, batch: Batch) -> Batch:
        dev = self.accelerator.device
        return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    # ---- one optimisation step ----------------------------------------------------------------
    def train_step(self, batches: list[Batch]) -> dict[str, float]:
        acc, model = self.accelerator, self.model
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
            with self._grad_sync(i == len(batches) - 1), self.autocast():
                loss_sum, metrics = self.objective(model, batch)
                # DDP averages gradients over processes; scale back up so the step is a true mean
                loss = loss_sum * (acc.num_processes / total_units)
                if self.zero:
                    zero.backward(model, loss, last=i == len(batches) - 1)
                else:
                    acc.backward(loss)
            loss_total += loss_sum.detach().item()
            tokens += _count_tokens(batch)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        # metrics of the whole step: every rank's micro-batches (a rank's own counts are a fraction of it)
        glob = distributed.sum_over_ranks({"loss": loss_total, "tokens": tokens,
                                           **{f"m/{k}": sums.get(k, 0.0) for k in self._metric_keys(sums)}})
        loss_mean, tokens = glob.pop("loss") / total_units, int(glob.pop("tokens"))
        sums = {k[2:]: v for k, v in glob.items()}
        if not math.isfinite(loss_mean):
            self._stop(f"non-finite loss ({loss_mean})")
        grad_norm = None
        if self.zero:  # ZeRO clips and steps in one call, and refuses the update itself on a bad norm
            try:
                grad_norm = zero.step(model)
            except FloatingPointError as e:
                self._stop(str(e))
        else:
            if self.cfg.max_grad_norm is not None:
                grad_norm = self._clip_grad_norm()
                if not math.isfinite(grad_norm):
                    self._stop(f"non-finite gradient norm ({grad_norm})")
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        out = {"loss": loss_mean, "lr": self.scheduler.get_last_lr()[0], "units": total_units, "tokens": tokens}
        if grad_norm is not None:
            out["grad_norm"] = grad_norm
        out.update(_reduce_metrics(sums, total_units))
        return out

    def _grad_sync(self, sync: bool):
        """Gradients are reduced across processes only at a step's last micro-batch."""
        if self.sharded:
            self.model.set_requires_gradient_sync(sync)
            return nullcontext()
        if self.zero:  # the accumulation boundary is given to its backward
            return nullcontext()
        return nullcontext() if sync else self.accelerator.no_sync(self.model)

    def _clip_grad_norm(self) -> float:
        """Clip to train.max_grad_norm; the norm of the whole gradient before clipping. Under FSDP each rank
        holds a shard of every gradient (a DTensor): the squares are summed over ranks."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        grads = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad for p in params]
        norm = vector_norm(torch.stack([vector_norm(g) for g in grads])) if grads else torch.zeros(())
        if self.sharded:
            sq = norm.double() ** 2
            torch.distributed.all_reduce(sq)
            norm = sq.sqrt().to(torch.float32)
        torch.nn.utils.clip_grads_with_norm_(params, self.cfg.max_grad_norm, norm)
        return float(norm)

    @staticmethod
    def _metric_keys(sums: dict) -> list[str]:
        """The union of every rank's metric names (a rank with no eval batch, or an objective that reports a
        metric only for some batches, has fewer)."""
        if distributed.world() == 1:
            return sorted(sums)
        return sorted({k for part in distributed.gather_objects(sorted(sums)) for k in part})

    def _tell_step(self) -> None:
        set_step = getattr(self.objective, "set_step", None)
        if set_step is not None:
            set_step(self.step)

    def _stop(self, what: str) -> None:
        """Refuse the update: nothing is stepped or saved, the last checkpoint stays the good one."""
        self.optimizer.zero_grad(set_to_none=True)
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
            # each rank its shard of the batches, summed over ranks: the one-process sums. Unwrapped (and under
            # FSDP gathered): the ranks run different numbers of passes, which a wrapper would sync at each one
            with distributed.full_params(self.model):
                model = self.accelerator.unwrap_model(self.model)
                for s in distributed.shard(starts):
                    batch = self._to_device(self.collate(list(self.eval_data[s:s + bs])))
                    with self.autocast():
                        l, m = self.objective(model, batch)
                    loss, units = loss + float(l), units + float(self.objective.units(batch))
                    for k, v in m.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
            keys = self._metric_keys(sums)
            glob = distributed.sum_over_ranks({"loss": loss, "units": units,
                                               **{f"m/{k}": sums.get(k, 0.0) for k in keys}})
            loss, units = glob.pop("loss"), glob.pop("units")
            sums = {k[2:]: v for k, v in glob.items()}
            out["eval/loss"] = loss / max(units, 1e-12)
            out.update({f"eval/{k}": v for k, v in _reduce_metrics(sums, units).items()})
        if self.eval_fn is not None:
            with distributed.full_params(self.model):
                out.update({f"eval/{k}": v for k, v in self.eval_fn(self.accelerator.unwrap_model(self.model)).items()})
        self.model.train()
        return out

    # ---- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        final = checkpoint_dir(self.run_dir, self.step)
        rng_states = distributed.gather_objects(_rng_state())
        weights = optim = None
        if self.sharded:  # gathered from the shards by every rank, kept by rank 0
            weights = distributed.full_state_dict(self.model)
            optim = distributed.full_optimizer_state(self.model, self.optimizer)
        elif self.zero:
            weights = zero.full_state_dict(self.model) if self.zero == 3 else None
            optim = zero.full_optimizer_state(self.model)
        if not acc.is_main_process:
            acc.wait_for_everyone()
            return final
        with atomic_folder(final) as tmp:
            save_weights(acc.unwrap_model(self.model), tmp / "model", tokenizer=self.tokenizer, state_dict=weights)
            torch.save(optim if optim is not None else self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save(rng_states[0], tmp / "rng.pt")
            for r, state in enumerate(rng_states[1:], start=1):  # each rank resumes its own streams
                torch.save(state, tmp / f"rng-{r}.pt")
            if self.rollout is not None:
                torch.save({"hook": self.rollout.state_dict(), "data": list(self.train_data),
                            "metrics": self.rollout_metrics}, tmp / ROLLOUT_STATE)
            state = {"step": self.step, "seed": self.seed, "examples_seen": self.step * self._global_batch(),
                     "epoch": self.step * self._global_batch() / len(self.train_data)}
            (tmp / "state.json").write_text(json.dumps(state, indent=1))
        for old in checkpoints(self.run_dir)[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        if self.zero:
            zero.load_weights(self.model, lambda module: load_weights_(module, path / "model"))
        else:
            load_weights_(self.accelerator.unwrap_model(self.model), path / "model")
        self._load_optimizer(path / "optimizer.pt")
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        rank = distributed.rank()
        own = path / f"rng-{rank}.pt"
        if rank > 0 and not own.is_file():
            raise TrainingError(f"{path} has no {own.name}: written by a run with fewer processes; resume it "
                                f"with as many processes as wrote it")
        _set_rng_state(torch.load(own if rank > 0 else path / "rng.pt", weights_only=True))
        self.step = json.loads((path / "state.json").read_text())["step"]
        if self.rollout is not None:
            # checkpoints written before the hook's rename hold it as stage.pt under "stage"
            name = next((n for n in (ROLLOUT_STATE, "stage.pt") if (path / n).is_file()), None)
            if name is None:
                raise TrainingError(f"{path} has no {ROLLOUT_STATE}: written by a run without this method's "
                                    f"rollout hook?")
            saved = torch.load(path / name, weights_only=True)
            self.rollout.load_state_dict(saved["hook" if "hook" in saved else "stage"])
            self._set_data(saved["data"])
            self.rollout_metrics = dict(saved["metrics"])

    def _load_optimizer(self, path: Path) -> None:
        """An FSDP or ZeRO run saves the optimizer state keyed by parameter name (whole, whatever the number
        of processes), any other run keyed by position."""
        state = torch.load(path, weights_only=True)
        by_name = any(isinstance(k, str) for k in state.get("state", {}))
        if by_name != bool(self.sharded or self.zero):
            raise TrainingError(f"{path} was written by a run {'with' if by_name else 'without'} FSDP or ZeRO over "
                                f"several processes; resume it the same way (train.fsdp / train.zero_stage, "
                                f"number of processes)")
        if self.sharded:
            distributed.load_full_optimizer_state(self.model, self.optimizer, state)
        elif self.zero:
            zero.load_full_optimizer_state(self.model, state)
        else:
            self.optimizer.load_state_dict(state)

    def _set_data(self, data: Sequence[Any]) -> None:
        if len(data) == 0:
            raise TrainingError(f"step {self.step + 1}: the rollout hook returned an empty buffer")
        self.train_data = data
        self.plan = DataPlan(len(data), self.plan.global_batch, self.plan.steps, self.seed)

    def run_rollout(self) -> None:
        with distributed.full_params(self.model):
            out = self.rollout(self.accelerator.unwrap_model(self.model), self.step)
        if out is None:
            return
        if out.data is not None:
            self._set_data(out.data)
        self.rollout_metrics = {k: float(v) for k, v in out.metrics.items()}

    def _global_batch(self) -> int:
        return self.cfg.micro_batch_size * self.cfg.grad_accum * self.accelerator.num_processes

    # ---- the loop -----------------------------------------------------------------------------
    def train(self, *, resume: bool = True, stop_after: int | None = None) -> TrainResult:
        """Train to the configured length. `stop_after` ends early after that many steps in total
        (used to simulate an interruption); resume=True continues from the latest checkpoint."""
        start_time = time.time()
        ckpt = latest_checkpoint(self.run_dir) if resume else None
        if ckpt is not None:
            self.load_checkpoint(ckpt)
        log = MetricsLog(self.run_dir, self.step) if self.accelerator.is_main_process else None
        history: list[dict] = []
        end = min(self.steps, stop_after) if stop_after else self.steps
        bar = tqdm(total=self.steps, initial=self.step, disable=not (self.show_progress and
                   self.accelerator.is_main_process), desc=self.run_dir.name, unit="step", dynamic_ncols=True)
        last: dict[str, float] = {}
        last_ckpt = ckpt
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
                cfg = self.cfg
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
            if self.step == self.steps and (last_ckpt is None or not last_ckpt.name.endswith(f"{self.step:07d}")):
                last_ckpt = self.save_checkpoint()
        finally:
            bar.close()
            if log is not None:
                log.close()
        if self.sharded:  # what follows (evaluations, the next stage's sampling) runs rank by rank
            distributed.keep_full_params(self.model)
        elif self.zero:
            zero.keep_full_params(self.model)
        return TrainResult(self.step, last, history, time.time() - start_time, last_ckpt)


__all__ = ["Engine", "Objective", "RolloutHook", "RolloutOutput", "DataPlan", "TrainResult", "step_indices"]
