"""SFT end to end on a tiny model through the recipe runner (data → engine → eval → summary)."""
import json

from posttrain.config import load_recipe
from posttrain.runner import read_history, run_recipe

RECIPE = """
name: sft-tiny
seed: 0
method: {{name: sft, normalization: {norm}}}
model: {{name: tiny-llama{lora}}}
data:
  train: {{synthetic: {{task: arithmetic, n: 8, seed: 1}}}}
  eval: {{synthetic: {{task: arithmetic, n: 4, seed: 2}}}}
  max_length: 128
  packing: {packing}
train: {{lr: 3.0e-3, micro_batch_size: 4, max_steps: 40, warmup_steps: 0, schedule: constant, eval_every: 20,
        save_every: 20}}
generation_eval: {{n: 4, max_new_tokens: 8, batch_size: 4}}
"""


def run(tmp_path, norm="token", lora="", packing="false"):
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE.format(norm=norm, lora=lora, packing=packing))
    recipe = load_recipe(p, [f"output_dir={tmp_path / 'runs'}"])
    return recipe, run_recipe(recipe, show_progress=False)


def test_tiny_sft_memorises_and_writes_everything(tmp_path):
    recipe, summary = run(tmp_path)
    hist = read_history(recipe.run_dir)
    assert len(hist) == 40
    assert hist[-1]["loss"] < 0.35 * hist[0]["loss"], (hist[0]["loss"], hist[-1]["loss"])
    assert "eval/loss" in hist[19] and "eval/loss" in hist[39]
    assert summary["before"]["n"] == 4 and summary["after"]["n"] == 4
    saved = json.loads((recipe.run_dir / "summary.json").read_text())
    assert saved["train"]["steps"] == 40 and saved["data"]["examples"] == 8
    assert (recipe.run_dir / "checkpoints" / "step-0000040" / "model").is_dir()


def test_tiny_sft_with_lora_and_packing(tmp_path):
    recipe, summary = run(tmp_path, lora=", lora: {r: 8, alpha: 16}", packing="true")
    hist = read_history(recipe.run_dir)
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert (recipe.run_dir / "checkpoints" / "step-0000040" / "model" / "adapter_model.safetensors").exists()


def test_same_recipe_and_seed_give_the_same_numbers(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = run(tmp_path / "a")[0]
    b = run(tmp_path / "b")[0]
    la = [h["loss"] for h in read_history(a.run_dir)]
    lb = [h["loss"] for h in read_history(b.run_dir)]
    assert la == lb


def test_generation_eval_during_the_run_logs_accuracy_at_every_evaluation(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE.format(norm="token", lora="", packing="false").replace(
        "batch_size: 4}", "batch_size: 4, during: true}"))
    recipe = load_recipe(p, [f"output_dir={tmp_path / 'runs'}", "train.max_steps=4", "train.eval_every=2"])
    summary = run_recipe(recipe, show_progress=False)
    hist = read_history(recipe.run_dir)
    assert [h["step"] for h in hist if "eval/accuracy" in h] == [2, 4]
    # the final evaluation is the summary's "after": one generation pass, not two
    assert summary["after"]["accuracy"] == hist[-1]["eval/accuracy"] and summary["after"]["n"] == 4
