"""The schema of a `posttrain synth math` recipe (recipes/synth_math.yaml); the stages are in
posttrain/synth/math.py."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from posttrain.config import DataSource, GenerationSettings, ModelSettings, PipelineSettings, Section
from posttrain.errors import RecipeError

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


class DecontamSet(Section):
    """One test set to decontaminate against: a built-in by `name` (posttrain.eval.math.BUILTIN, found under
    the shared data folder), or a file or folder of problems by `path`."""
    # alone: a built-in; beside a path: the set's label in removed.jsonl and the report
    name: str | None = None
    # jsonl/json/parquet/arrow file or a folder of them; relative to the recipe's folder
    path: str | None = None
    field: str | None = None  # the problem's field; default: the first of posttrain.eval.math.PROBLEM_FIELDS

    @model_validator(mode="after")
    def _one_source(self):
        if self.name is None and self.path is None:
            raise ValueError("give 'name' (a built-in test set) or 'path' "
                             "(a file or folder of test problems)")
        if self.path is None and self.field is not None:
            raise ValueError("'field' goes with 'path' (a built-in's field is known)")
        return self

    @property
    def label(self) -> str:
        return self.name or self.path


# what the shared data holds: of the paper's GSM8K, MATH, AMC23 and AIME24, the last two (and MATH beyond
# MATH-500) are absent and nothing downloads them, so a recipe gives them as files
DEFAULT_TEST_SETS = ("gsm8k", "math500")


class DecontamSettings(Section):
    # an entry is a mapping (DecontamSet) or a string: a built-in's name, else a path
    test_sets: list[DecontamSet] = Field(default_factory=lambda: [DecontamSet(name=n)
                                                                  for n in DEFAULT_TEST_SETS])
    ngram: int = Field(13, gt=0)
    ngram_threshold: float = Field(0.5, gt=0, le=1)
    embedding: Literal["auto", "on", "off"] = "auto"  # auto: on when the MiniLM wheel is installed
    embedding_threshold: float = Field(0.9, gt=0, le=1)
    top_k: int = Field(5, gt=0)

    @field_validator("test_sets", mode="before")
    @classmethod
    def _strings(cls, value):
        from posttrain.eval.math import BUILTIN
        if not isinstance(value, list):
            return value
        return [({"name": v} if v in BUILTIN else {"path": v}) if isinstance(v, str) else v for v in value]


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
    for ts in recipe.decontam.test_sets:
        if ts.path is not None:
            written = ts.path
            relative_to_recipe(ts, path)
            ts.name = ts.name or written  # the label stays what the recipe says, not the resolved path
    # a wrong name or a missing file fails here, not after hours of sampling; a built-in's file is
    # looked for only when the run starts (it depends on the machine, not on the recipe)
    resolve_test_sets(recipe, source=str(path), builtins=False)
    return recipe


def resolve_test_sets(recipe: SynthRecipe, *, source: str | None = None,
                      builtins: bool = True) -> list[Path | None]:
    """The file or folder of every decontamination test set (None for a built-in when `builtins` is
    False); RecipeError naming the recipe key of one that is unknown or not there."""
    from posttrain.eval.math import BUILTIN
    from posttrain.tasks.nlu import default_data_dir
    where = f"{source}: " if source else ""
    out: list[Path | None] = []
    for i, ts in enumerate(recipe.decontam.test_sets):
        key = f"decontam.test_sets[{i}]"
        if ts.path is not None:
            if not Path(ts.path).exists():
                raise RecipeError(f"{where}{key}.path: file not found: {ts.path} (a relative path is "
                                  f"looked for beside the recipe, then in the working directory)")
            out.append(Path(ts.path))
        elif ts.name not in BUILTIN:
            raise RecipeError(f"{where}{key}.name: {ts.name!r} is not a built-in test set (those are "
                              f"{', '.join(BUILTIN)}); give a file of its problems as {key}.path")
        elif not builtins:
            out.append(None)
        else:
            p = default_data_dir().joinpath(*BUILTIN[ts.name])
            if not p.is_file():
                raise RecipeError(f"{where}{key}: the built-in test set {ts.name!r} is not on this "
                                  f"machine ({p} not found): set POSTTRAIN_SHARED_DATA to the shared "
                                  f"data folder, or give the file as {key}.path")
            out.append(p)
    return out
