"""What a method hands the engine: data, collation, an objective and optional hooks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel


@dataclass
class Built:
    objective: Any
    train_data: list
    collate: Callable
    eval_data: list | None = None
    stage: Callable | None = None
    stats: dict = field(default_factory=dict)  # e.g. truncation counts, reported in the summary
    model: Any = None  # what the engine trains when it is not the loaded LM itself (e.g. LM + scalar head)
    eval_fn: Callable | None = None  # model -> {metric: value}, run at each engine evaluation
    prepare: Callable | None = None  # DataPlan -> None, run once before training (see Engine)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    params: type[BaseModel]
    build: Callable[..., Built]  # (recipe, params, model, tokenizer) -> Built
    description: str = ""
    data_kind: str = "preference"  # what data.train holds: "sft", "preference" or "prompt" records
