"""The contracts between the layers: what a method hands the engine and the pipeline, and what they give back.

Read this file first. A method (posttrain/methods/) builds an `Objective` and its data (a `Built`),
optionally a `RolloutHook` (fresh training data during the run, e.g. PPO's rollouts) and `StageDef`s
(work between engine runs, e.g. RSO's sampling). The engine (posttrain/engine.py) trains any `Objective`
in the order of a `DataPlan`; the pipeline (posttrain/pipeline.py) runs the stages and records each
one's `StageOutput`. A `Reference` is the model a KL or a log-ratio is taken against
(posttrain/references.py decides which one).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
from pydantic import BaseModel

from posttrain.models import reference_model, unwrap
from posttrain.models.fingerprint import weights_hash

Batch = dict[str, Any]
StageOutput = dict[str, Any]  # a stage's stats, recorded in pipeline.json and shown in the run's summary


class Objective(Protocol):
    """batch -> (loss summed over units, metrics summed over units); `units(batch)` is the normaliser.

    The units come only from `units(batch)`, without a forward pass, so the engine knows a step's total
    before the first backward. Metrics named `*_count` are totals; all others are reported as means.
    An objective with a schedule over steps (IFT's lambda) may define `set_step(step)`: the engine calls
    it with the number of optimisation steps done before every step and every evaluation, so the
    schedule is a function of the checkpointed step and a resumed run continues it exactly."""

    def __call__(self, model, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]: ...

    def units(self, batch: Batch) -> float: ...


@dataclass
class RolloutOutput:
    """What a rollout hook hands back: a new training buffer (None: keep the current one) and metrics,
    which the engine logs with every step until the hook's next output."""
    data: Sequence[Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class RolloutHook(Protocol):
    """A method's per-step rollout hook (e.g. PPO's rollouts at each iteration start), run before each
    optimisation step; not a pipeline stage (`StageDef`), which runs between engine runs.

    The hook never touches the engine: it returns its buffer and metrics, and the engine swaps the
    buffer, logs the metrics, counts steps and checkpoints the buffer with `state_dict()` (controllers,
    iteration counters, RNG: whatever else the hook needs to go on exactly as if never stopped).
    `buffer_size` is the number of examples in each buffer: with `train.epochs` (no `max_steps`) it
    sizes the run as a data set of that size would."""

    buffer_size: int

    def __call__(self, model, step: int) -> RolloutOutput | None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


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
class StageDef:
    """A pipeline stage: work between engine runs (sampling, pairing, a critic's training...)."""
    name: str
    settings: dict[str, Any]  # flat recipe keys -> values that decide this stage's output
    run: Callable[[], StageOutput]  # does (or resumes) the work; returns stats for the summary
    outputs: list[str]  # paths relative to the iteration folder, deleted when the stage is redone
    inputs: list[str] = field(default_factory=list)  # outputs of earlier stages it reads
    uses_weights: bool = True  # whether the starting weights decide its output
    # under N processes: True = every rank runs it and it splits its own work (training, sampling);
    # False = rank 0 runs it alone while the others wait for its files and stats
    parallel: bool = False


@dataclass
class Built:
    """What a method hands the engine: data, collation, an objective and optional hooks."""
    objective: Objective
    train_data: Sequence[Any] | None  # None: the rollout hook gives every buffer
    collate: Callable[[list[Any]], Batch]
    eval_data: list | None = None
    rollout: RolloutHook | None = None
    stats: dict = field(default_factory=dict)  # e.g. truncation counts, reported in the summary
    model: Any = None  # what the engine trains when it is not the loaded LM itself (e.g. LM + scalar head)
    eval_fn: Callable | None = None  # model -> {metric: value}, run at each engine evaluation
    prepare: Callable[[DataPlan], None] | None = None  # run once before training (see Engine)


@dataclass(frozen=True)
class RunInfo:
    """Where in a run a method is built: the iteration's folder and index (0-based)."""
    dir: Path
    iteration: int = 0
    iterations: int = 1


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: type[BaseModel]
    build: Callable[..., Built]  # (recipe, params, model, tokenizer, run: RunInfo | None) -> Built
    description: str = ""
    # what data.train holds: "sft", "preference" or "prompt" records (recipe_records)
    data_kind: str = "preference"
    # the stages before training (e.g. RSO's sample -> pairs); the pipeline appends the training stage itself
    stages: Callable[..., list[StageDef]] | None = None  # (recipe, params, IterationContext) -> [StageDef]


REFERENCES = ("base", "start", "previous")


class Reference:
    """A reference policy for log-probs: `with ref.use(policy) as m:` gives the model to score with."""

    def __init__(self, kind: str, frozen=None):
        self.kind, self.frozen = kind, frozen  # frozen None: the policy with its adapter off

    @contextlib.contextmanager
    def use(self, policy) -> Iterator:
        if self.frozen is not None:
            # built on the CPU with the recipe; the policy may since have moved to an accelerator
            device = next(unwrap(policy).parameters()).device
            if next(self.frozen.parameters()).device != device:
                self.frozen.to(device)
            yield self.frozen
        else:
            with reference_model(unwrap(policy)) as ref:
                yield ref

    def weights_hash(self, policy) -> str:
        """The reference's own weights (an adapter that is switched off does not count)."""
        return weights_hash(self.frozen if self.frozen is not None else policy, adapter=False)
