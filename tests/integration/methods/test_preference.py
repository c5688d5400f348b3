"""The preference method on tiny models: reference modes agree, DPO learns a separable preference,
the reference cache is reused, and bad input is refused before training."""

import pytest

from posttrain.config import load_recipe
from posttrain.errors import DataError, RecipeError
from posttrain.runner import read_history, run_recipe
from tests.helpers import THINGS, write_pairs

RECIPE = """
name: {name}
seed: 0
method: {{name: {loss}, beta: 0.5, reference_mode: {mode}}}
model: {{name: tiny-llama{lora}}}
data:
  train: {{path: train.jsonl}}
  eval: {{path: eval.jsonl}}
  max_length: 96
train: {{lr: {lr}, micro_batch_size: 4, max_steps: {steps}, warmup_steps: 0, schedule: constant,
        eval_every: {steps}, max_grad_norm: null}}
"""


def recipe(tmp_path, *, name="pref", loss="dpo", mode="precomputed", lora=True, steps=5, lr=1e-3, extra=()):
    write_pairs(tmp_path / "train.jsonl", THINGS[:16])
    write_pairs(tmp_path / "eval.jsonl", THINGS[16:])
    p = tmp_path / f"{name}.yaml"
    p.write_text(RECIPE.format(name=name, loss=loss, mode=mode, steps=steps, lr=lr,
                               lora=", lora: {r: 8, alpha: 16}" if lora else ""))
    return load_recipe(p, [f"output_dir={tmp_path / 'runs'}", *extra])


def losses(r):
    return [h["loss"] for h in read_history(r.run_dir)]


def test_reference_modes_give_the_same_training_curve_with_lora(tmp_path, cache):
    curves = {}
    for mode in ("precomputed", "live"):
        r = recipe(tmp_path, name=mode, mode=mode)
        run_recipe(r, show_progress=False)
        curves[mode] = losses(r)
    assert curves["precomputed"][0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1
    assert curves["live"] == pytest.approx(curves["precomputed"], rel=1e-5, abs=1e-6)


def test_reference_modes_agree_for_full_fine_tuning(tmp_path, cache):
    a, b = recipe(tmp_path, name="pre", lora=False), recipe(tmp_path, name="frozen", mode="live", lora=False)
    run_recipe(a, show_progress=False)
    run_recipe(b, show_progress=False)
    assert losses(a) == pytest.approx(losses(b), rel=1e-5, abs=1e-6)


def test_reference_cache_is_reused(tmp_path, cache):
    s1 = run_recipe(recipe(tmp_path, name="one", steps=1), show_progress=False)
    s2 = run_recipe(recipe(tmp_path, name="two", steps=1), show_progress=False)
    assert s1["data"]["reference_cache"] == "computed" and s2["data"]["reference_cache"] == "hit"
    assert len(list((cache / "reference_logps").glob("*.safetensors"))) == 2  # train + eval
    # another batching (layout, batch size) rounds differently: its own entry, never these values
    s3 = run_recipe(recipe(tmp_path, name="three", steps=1, extra=["method.padding_free=false"]),
                    show_progress=False)
    assert s3["data"]["pair_forward"] == "shared_prefix" and s2["data"]["pair_forward"] == "padding_free"
    assert s3["data"]["reference_cache"] == "computed"


@pytest.mark.parametrize("loss", ["dpo", "rdpo", "ipo", "hinge_norm", "rpo"])
def test_dpo_family_learns_a_separable_preference(tmp_path, cache, loss):
    extra = ["method.eps=0.1"] if loss == "rdpo" else []
    r = recipe(tmp_path, name=loss, loss=loss, steps=30, lr=3e-3, extra=extra)
    run_recipe(r, show_progress=False)
    hist = read_history(r.run_dir)
    assert hist[0]["rewards/accuracy"] <= 0.5
    assert hist[-1]["eval/rewards/accuracy"] == 1.0  # held-out things: "like" beats "hate"
    assert hist[-1]["eval/rewards/margins"] > 0


def test_hinge_needs_no_reference(tmp_path, cache):
    s = run_recipe(recipe(tmp_path, name="hinge", loss="hinge", steps=2), show_progress=False)
    assert "reference_cache" not in s["data"]


def test_bad_pairs_and_bad_eps_are_refused(tmp_path, cache):
    r = recipe(tmp_path)
    write_pairs(tmp_path / "train.jsonl", THINGS[:4], identical=True)
    with pytest.raises(DataError, match=r"train.jsonl:1.*identical"):
        run_recipe(r, show_progress=False)
    write_pairs(tmp_path / "train.jsonl", THINGS[:4], empty=True)
    with pytest.raises(DataError, match=r"train.jsonl:1.*rejected.*empty"):
        run_recipe(r, show_progress=False)
    with pytest.raises(RecipeError, match=r"eps.*0.5"):
        run_recipe(recipe(tmp_path, name="bad", loss="rdpo", extra=["method.eps=0.5"]), show_progress=False)
    with pytest.raises(RecipeError, match=r"reference: Input should be 'base', 'start' or 'previous'"):
        run_recipe(recipe(tmp_path, name="bad2", extra=["method.reference=frozen_copy"]), show_progress=False)
    with pytest.raises(RecipeError, match="method.loss"):
        run_recipe(recipe(tmp_path, name="bad3", extra=["method.name=preference"]), show_progress=False)


def test_precompute_covers_exactly_the_pairs_the_engine_plans(tmp_path, cache):
    from safetensors.torch import load_file

    from posttrain.contracts import step_indices
    r = recipe(tmp_path, steps=2)  # 2 steps x 4 pairs of 16
    s = run_recipe(r, show_progress=False)  # a batch without its reference would raise, not fall back
    assert s["data"]["reference_cache"] == "computed"
    assert len(load_file(s["data"]["reference_cache_file"])["chosen"]) == 8
    assert len(set(step_indices(16, 4, 0, 0) + step_indices(16, 4, 1, 0))) == 8


def test_a_batch_without_its_precomputed_reference_is_an_error(tmp_path, cache):
    from posttrain.config import validate_section
    from posttrain.errors import TrainingError
    from posttrain.methods import get_method
    from posttrain.models.start import load_policy
    r = recipe(tmp_path)
    spec = get_method("dpo")
    model, tok = load_policy(r)
    built = spec.build(r, validate_section(spec.params, r.method, "method"), model, tok)
    batch = built.collate(built.train_data[:2])  # prepare(plan) never ran: no reference attached
    with pytest.raises(TrainingError, match="no precomputed reference"):
        built.objective(model, batch)
