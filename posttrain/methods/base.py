"""The records a recipe's data section names, as a method's build reads them. The types a method hands
the engine and the pipeline (Built, MethodSpec, RunInfo) are posttrain.contracts'."""
from __future__ import annotations


def recipe_records(recipe, split: str = "train", kind: str | None = None) -> list:
    """The records of `data.<split>` ("train" or "eval"), of `kind` (default: the recipe method's
    MethodSpec.data_kind, so a recipe can be checked to load without building the method; a build that
    another method reuses — RSO trains through the preference build — names its kind)."""
    from posttrain.methods import get_method
    from posttrain.tasks.sources import load_source
    data = recipe.data
    return load_source(getattr(data, split), kind or get_method(recipe.method_name).data_kind,
                       instruction=data.instruction, system_prompt=data.system_prompt, key=f"data.{split}")
