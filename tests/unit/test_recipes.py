"""Every shipped recipe validates, its method params validate, and its data loads."""
from pathlib import Path

import pytest

from posttrain.config import load_recipe, validate_section
from posttrain.demo import demo_recipe_path
from posttrain.methods import get_method
from posttrain.methods.base import recipe_records
from tests.helpers import ROOT

RECIPES = [*sorted((ROOT / "recipes").glob("*.yaml")), demo_recipe_path()]


def is_synth(path) -> bool:
    import yaml
    return "seeds" in (yaml.safe_load(Path(path).read_text()) or {})


@pytest.mark.parametrize("path", [p for p in RECIPES if is_synth(p)], ids=lambda p: p.stem)
def test_synth_recipe_is_valid_and_its_seeds_load(path):
    from posttrain.synth.config import load_synth_recipe
    from posttrain.tasks.sources import load_source
    recipe = load_synth_recipe(path)
    for src in recipe.seeds:
        if src.path is not None and not Path(src.path).exists():
            pytest.skip(f"{src.path} is absent (../shared/data not present here)")
        records = load_source(src, "prompt")
        assert records and all(r.answer is not None for r in records)


@pytest.mark.parametrize("path", [p for p in RECIPES if not is_synth(p)], ids=lambda p: p.stem)
def test_recipe_is_valid_and_its_data_loads(path):
    recipe = load_recipe(path)
    spec = get_method(recipe.method_name)
    validate_section(spec.params, recipe.method, str(path))
    src = recipe.data.train
    if src.path is not None and not Path(src.path).exists():
        # ../shared/data, or a file an experiment's earlier stage writes under runs/
        pytest.skip(f"{src.path} is absent (shared data or an experiment's output not present here)")
    if src.nlu is not None:
        from posttrain.tasks.nlu import default_data_dir
        if not default_data_dir().exists():
            pytest.skip(f"{default_data_dir()} is absent (../shared/data not present here)")
    records = recipe_records(recipe)
    assert len(records) > 0
