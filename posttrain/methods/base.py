"""What a method hands the engine: data, collation, an objective and optional hooks."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel


@dataclass
class Built:
    objective: Any
    train_data: list
    collate: Callable
    eval_data: list | None = None
    rollout: Callable | None = None  # the engine's per-step rollout hook (posttrain.engine.RolloutHook)
    stats: dict = field(default_factory=dict)  # e.g. truncation counts, reported in the summary
    model: Any = None  # what the engine trains when it is not the loaded LM itself (e.g. LM + scalar head)
    eval_fn: Callable | None = None  # model -> {metric: value}, run at each engine evaluation
    prepare: Callable | None = None  # DataPlan -> None, run once before training (see Engine)


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
    data_kind: str = "preference"  # what data.train holds: "sft", "preference" or "prompt" records (recipe_records)
    # the stages before training, as posttrain.pipeline.StageDef (e.g. RSO's sample -> pairs); the
    # pipeline appends the training stage itself
    stages: Callable[..., list] | None = None  # (recipe, params, IterationContext) -> [StageDef]


def recipe_records(recipe, split: str = "train", kind: str | None = None) -> list:
    """The records of `data.<split>` ("train" or "eval"), of `kind` (default: the recipe method's
    MethodSpec.data_kind, so a recipe can be checked to load without building the method; a build that
    another method reuses — RSO trains through the preference build — names its kind)."""
    from posttrain.data.sources import load_source
    from posttrain.methods import get_method
    data = recipe.data
    return load_source(getattr(data, split), kind or get_method(recipe.method_name).data_kind,
                       instruction=data.instruction, system_prompt=data.system_prompt)
