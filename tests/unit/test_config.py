import pytest

from posttrain.config import apply_overrides, load_recipe
from posttrain.errors import RecipeError

GOOD = """
name: t
method: {name: sft}
model: {name: tiny-llama, lora: {r: 4}}
data:
  train: {synthetic: {task: arithmetic, n: 10}}
train: {max_steps: 2, micro_batch_size: 2}
"""


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_valid_recipe_and_overrides(tmp_path):
    r = load_recipe(write(tmp_path, GOOD), ["train.lr=3e-4", "model.lora.r=16", "data.packing=true"])
    assert r.train.lr == 3e-4 and r.model.lora.r == 16 and r.data.packing is True
    assert r.model.lora.alpha == 16 and r.train.schedule == "cosine"


def test_unknown_key_names_it_and_lists_allowed(tmp_path):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, GOOD), ["train.learning_rate=1e-3"])
    msg = str(e.value)
    assert "train.learning_rate: unknown key" in msg and "lr" in msg and "max_grad_norm" in msg


def test_bad_literal_lists_allowed_values(tmp_path):
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, GOOD), ["train.schedule=exponential"])
    assert "train.schedule" in str(e.value) and "'cosine'" in str(e.value) and "'linear'" in str(e.value)


def test_nested_unknown_key_and_type_errors(tmp_path):
    with pytest.raises(RecipeError,
                       match=r"model.lora.rank: unknown key; allowed keys here: "
                             r"alpha, dropout, r, rslora, targets"):
        load_recipe(write(tmp_path, GOOD), ["model.lora.rank=4"])
    with pytest.raises(RecipeError, match=r"train.max_steps: .*greater than 0"):
        load_recipe(write(tmp_path, GOOD), ["train.max_steps=0"])
    with pytest.raises(RecipeError, match=r"train.lr"):
        load_recipe(write(tmp_path, GOOD), ["train.lr=fast"])


def test_exactly_one_length_and_one_source(tmp_path):
    with pytest.raises(RecipeError, match="exactly one of 'max_steps' or 'epochs'"):
        load_recipe(write(tmp_path, GOOD), ["train.epochs=1"])
    with pytest.raises(RecipeError, match="exactly one of 'path', 'synthetic' or 'nlu'"):
        load_recipe(write(tmp_path, GOOD), ["data.train.path=x.jsonl"])


def test_bad_files(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(write(tmp_path, "name: [unclosed"))
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(RecipeError, match="expected key.sub=value"):
        apply_overrides({}, ["train.lr"])


def test_yaml_is_loaded_safely(tmp_path):
    with pytest.raises(RecipeError):
        load_recipe(write(tmp_path, GOOD + "\nextra: !!python/object/apply:os.system ['echo hacked']\n"))


def test_relative_data_paths_resolve_against_recipe(tmp_path):
    (tmp_path / "d.jsonl").write_text("{}\n")
    text = GOOD.replace("{synthetic: {task: arithmetic, n: 10}}", "{path: d.jsonl}")
    r = load_recipe(write(tmp_path, text))
    assert r.data.train.path == str(tmp_path / "d.jsonl")


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    text = GOOD.replace("train: {max_steps: 2, micro_batch_size: 2}",
                        "train: {max_steps: 2, micro_batch_size 2")  # unclosed, and a missing colon
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, text))
    msg = str(e.value)
    line = text.splitlines().index("train: {max_steps: 2, micro_batch_size 2") + 1
    assert msg.startswith(f"{tmp_path / 'r.yaml'}:") and "not valid YAML" in msg, msg
    # noticed at the end of the file; the line where the unclosed mapping began is quoted
    assert f"started at line {line}" in msg and f"\n  {line} | train: {{max_steps" in msg, msg
    with pytest.raises(RecipeError, match=r"r.yaml:3:16: not valid YAML: .*\n  3 \| method: \[sft"):
        load_recipe(write(tmp_path, "name: t\nseed: 1\nmethod: [sft: a: b]\n"))


def test_check_inputs_names_each_missing_file(tmp_path):
    from posttrain.config import check_inputs
    (tmp_path / "d.jsonl").write_text("{}\n")
    text = GOOD.replace("{synthetic: {task: arithmetic, n: 10}}", "{path: d.jsonl}")
    check_inputs(load_recipe(write(tmp_path, text)))  # present: fine
    check_inputs(load_recipe(write(tmp_path, GOOD)))  # a generator reads no file
    with pytest.raises(RecipeError) as e:
        check_inputs(load_recipe(write(tmp_path, text), ["data.eval.path=held_out.jsonl",
                                                         "model.adapter=runs/none"]))
    msg = str(e.value)
    assert f"data.eval.path: {tmp_path / 'held_out.jsonl'} does not exist" in msg
    assert "model.adapter: runs/none does not exist" in msg and "data.train.path" not in msg
