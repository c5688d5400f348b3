"""Mixtures: `data.train` as a list of sources with `share` / `count`, drawn and shuffled by the recipe seed;
and the new DataSource keys as a recipe spells them."""
import pandas as pd
import pytest
import yaml

from posttrain.config import Recipe, load_recipe, validate_section
from posttrain.errors import RecipeError
from posttrain.tasks.sources import load_source

RECIPE = """
name: mix
seed: {seed}
data:
  train:
{train}
train: {{max_steps: 1}}
"""


def write_sources(tmp_path):
    pd.DataFrame({"text": [f"doc {i}" for i in range(30)]}).to_json(tmp_path / "docs.jsonl", orient="records",
                                                                    lines=True)
    pd.DataFrame({"instruction": [f"task {i}" for i in range(10)],
                  "output": [f"done {i}" for i in range(10)]}).to_csv(tmp_path / "alpaca.csv", index=False)


def recipe(tmp_path, train: str, seed: int = 0, overrides=()):
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE.format(seed=seed, train=train))
    return load_recipe(p, list(overrides))


SHARES = """    - {path: docs.jsonl, share: 0.75}
    - {path: alpaca.csv, share: 0.25}"""


def names(records):
    return [getattr(r, "text", None) or r.messages[0]["content"] for r in records]


def test_shares_draw_the_largest_mixture_and_shuffle_by_the_recipe_seed(tmp_path):
    write_sources(tmp_path)
    r = recipe(tmp_path, SHARES)
    assert r.data.train.seed == 0 and len(r.data.train.mixture) == 2
    recs = load_source(r.data.train, "sft")
    # docs (30) can fill 0.75 of 40, alpaca (10) 0.25 of 40
    assert len(recs) == 40 and sum(n.startswith("doc") for n in names(recs)) == 30
    assert names(load_source(recipe(tmp_path, SHARES).data.train, "sft")) == names(recs)  # deterministic
    other = names(load_source(recipe(tmp_path, SHARES, seed=1).data.train, "sft"))
    assert other != names(recs) and sorted(other) == sorted(names(recs))
    assert names(load_source(recipe(tmp_path, SHARES, overrides=["seed=1"]).data.train, "sft")) == other


def test_counts_and_too_large_a_count(tmp_path):
    write_sources(tmp_path)
    r = recipe(tmp_path, "    - {path: docs.jsonl, count: 5}\n    - {path: alpaca.csv, count: 2, limit: 4}")
    recs = load_source(r.data.train, "sft")
    assert len(recs) == 7 and sum(n.startswith("task") for n in names(recs)) == 2
    assert {n for n in names(recs) if n.startswith("task")} <= {f"task {i}" for i in range(4)}
    r = recipe(tmp_path, "    - {path: docs.jsonl, count: 5}\n    - {path: alpaca.csv, count: 11}")
    with pytest.raises(RecipeError, match=r"mixture \[1\]\.count: 11 records asked, .*alpaca.csv has 10"):
        load_source(r.data.train, "sft")


@pytest.mark.parametrize("train, words", [
    ("    - {path: a.jsonl, share: 0.5}\n    - {path: b.jsonl, share: 0.4}",
     "data.train: Value error, the shares must sum to 1 (within 1e-6), got 0.9: "
     "[0].share=0.5, [1].share=0.4"),
    ("    - {path: a.jsonl, share: 0.5}\n    - {path: b.jsonl, count: 4}",
     "every source of a mixture a 'share', or every source a 'count'"),
    ("    - {path: a.jsonl}\n    - {path: b.jsonl, share: 1.0}",
     "[0]: give each source of a mixture exactly one of 'share' or 'count'"),
    ("    - {path: a.jsonl, share: 1.0, shuffle: true}", "data.train.mixture.0.shuffle: unknown key"),
])
def test_bad_mixtures_name_the_key(tmp_path, train, words):
    with pytest.raises(RecipeError) as e:
        recipe(tmp_path, train)
    assert words in str(e.value)


def test_shares_within_1e6_are_accepted_and_new_keys_validate():
    data = yaml.safe_load("""
name: x
data:
  train: [{path: a.jsonl, share: 0.3333333}, {path: b.jsonl, share: 0.6666667}]
  eval: {hub: acme/toy, split: test, columns: {q: prompt}, on_invalid: skip, max_invalid_fraction: 0.1}
train: {max_steps: 1}
""")
    r = validate_section(Recipe, data, "r.yaml")
    assert r.data.eval.hub == "acme/toy" and r.data.eval.columns == {"q": "prompt"}
    data["data"]["eval"]["max_invalid_fraction"] = 2
    with pytest.raises(RecipeError, match="data.eval.max_invalid_fraction"):
        validate_section(Recipe, data, "r.yaml")


def test_text_records_take_no_system_prompt_and_skipped_rows_are_kept(tmp_path):
    from posttrain.config import DataSource
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(f'{{"text": "doc {i}"}}\n' for i in range(30)) + "{broken\n")
    src = DataSource(path=str(path), on_invalid="skip", skip=2, limit=3)
    recs = load_source(src, "sft", system_prompt="Be brief.")
    assert [r.text for r in recs] == ["doc 2", "doc 3", "doc 4"]
    full = load_source(DataSource(path=str(path), on_invalid="skip"), "sft")
    assert len(full) == 30 and [e.line for e in full.skipped] == [31]
