"""The schema of a `posttrain synth math` recipe (recipes/synth_math.yaml); the stages are in
posttrain/synth/math.py."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from posttrain.config import DataSource, GenerationSettings, ModelSettings, PipelineSettings, Section

FEW_SHOT_MAX = 2  # posttrain.synth.math.FEW_SHOT holds this many examples


class SolutionSettings(Section):
    k: int = Field(4, gt=0)  # solutions per seed problem (paper: 64 per GSM8K problem)
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(320, gt=0)
    few_shot: int = Field(2, ge=0, le=FEW_SHOT_MAX)


class QuestionSettings(Section):
    enabled: bool = True
    # the model that writes new problems (default: the teacher). A teacher fine-tuned to answer may only
    # answer; its base model can still write problems (a deviation from the paper, which uses one teacher)
    model: ModelSettings | None = None
    per_seed: int = Field(2, gt=0)  # new problems per seed problem (paper: 10 per GSM8K problem)
    k: int = Field(4, gt=0)  # solutions per new problem (paper: 32)
    min_agreement: float = Field(0.5, gt=0, le=1)  # the majority answer's share of the solutions
    temperature: float = Field(1.0, ge=0)
    max_new_tokens: int = Field(160, gt=0)


class FilterSettings(Section):
    max_problem_tokens: int = Field(1024, gt=0)
    max_solution_tokens: int = Field(1024, gt=0)
    min_solution_tokens: int = Field(5, ge=0)
    near_duplicate_n: int = Field(3, gt=0)
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1)


class DecontamSettings(Section):
    test_sets: list[str] = ["gsm8k", "math500"]  # names (the shared data folder) or files
    ngram: int = Field(13, gt=0)
    ngram_threshold: float = Field(0.5, gt=0, le=1)
    embedding: Literal["auto", "on", "off"] = "auto"  # auto: on when the MiniLM wheel is installed
    embedding_threshold: float = Field(0.9, gt=0, le=1)
    top_k: int = Field(5, gt=0)


class SynthRecipe(Section):
    name: str
    seed: int = 0
    output_dir: str = "runs"
    model: ModelSettings = ModelSettings()  # the teacher
    seeds: list[DataSource]
    solutions: SolutionSettings = SolutionSettings()
    questions: QuestionSettings = QuestionSettings()
    filters: FilterSettings = FilterSettings()
    decontam: DecontamSettings = DecontamSettings()
    generation: GenerationSettings = GenerationSettings()
    batch_size: int = Field(16, gt=0)
    workers: int = Field(1, gt=0)
    pipeline: PipelineSettings = PipelineSettings()  # one iteration; here for the stage runner

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def load_synth_recipe(path, overrides: list[str] | None = None) -> SynthRecipe:
    from posttrain.config import read_recipe, relative_to_recipe
    recipe = read_recipe(path, overrides, SynthRecipe)
    for src in recipe.seeds:
        relative_to_recipe(src, path)
    return recipe
