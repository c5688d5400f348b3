"""posttrain/export.py without a model: the model card (front matter, base model, how to load, data, metrics,
recipe) and how each kind of base model is named."""
import re

import pytest
import yaml

from posttrain.export import data_sources, model_card
from posttrain.models.embedded import GGUF_PRECISION, HUB_ID, INSTALL_COMMAND
from posttrain.models.registry import base_model_id, base_model_source

RECIPE = {"name": "gsm-sft", "seed": 3, "method": {"name": "dpo", "beta": 0.1},
          "model": {"name": "smollm2-135m-instruct", "dtype": "float32",
                    "lora": {"r": 8, "alpha": 16.0, "targets": ["q_proj", "v_proj"]}, "adapter": None},
          "data": {"train": {"path": "data/pairs.jsonl", "format": "auto", "skip": 0, "limit": 200,
                             "synthetic": None, "nlu": None},
                   "eval": {"path": None, "synthetic": None,
                            "nlu": {"task": "boolq", "split": "validation", "limit": 50, "shots": 0}}},
          "train": {"optimizer": "adamw", "lr": 5e-6, "schedule": "cosine", "max_steps": 40, "epochs": None}}


def facts(name="smollm2-135m-instruct", fmt="peft-adapter", **kw):
    recipe = {**RECIPE, "model": {**RECIPE["model"], "name": name}}
    return {"base": {**base_model_source(name), "seed": 5}, "format": fmt, "lora": True, "method": "dpo",
            "recipe": recipe, "step": 40, "iteration": 1, "iterations": 1,
            "metrics": {"loss": 0.61234567, "reward_accuracy": 0.75}, "evaluation": {}, "version": "9.9",
            **kw}


def split(card):
    head = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert head is not None, card[:200]
    return yaml.safe_load(head.group(1)), card[head.end():]


def test_base_model_names_mean_the_same_elsewhere(tmp_path):
    assert base_model_id("smollm2-135m-instruct") == HUB_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model_id("tiny-llama") == "tiny-llama"
    assert base_model_id("./models/mine") == "./models/mine"  # the path as given, not resolved
    assert base_model_id("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    src = base_model_source("smollm2-135m-instruct")
    assert src["kind"] == "embedded" and src["gguf_precision"] == GGUF_PRECISION == "Q4_1"
    assert src["gguf"].endswith(f".{GGUF_PRECISION}.gguf")
    assert base_model_source("tiny-llama")["kind"] == "tiny"
    assert base_model_source(str(tmp_path))["kind"] == "folder"
    assert base_model_source("./models/mine")["kind"] == "folder"
    assert base_model_source("Qwen/Qwen2.5-0.5B")["kind"] == "hub"


def test_adapter_card_of_the_embedded_model():
    meta, body = split(model_card(facts()))
    assert meta == {"base_model": HUB_ID, "library_name": "peft", "tags": ["posttrain", "dpo"],
                    "pipeline_tag": "text-generation"}
    assert f"dequantised from {GGUF_PRECISION} to float32" in body and INSTALL_COMMAND in body
    assert 'load_model("smollm2-135m-instruct")' in body
    assert 'PeftModel.from_pretrained(base, "path/to/this/folder")' in body
    assert "posttrain 9.9" in body and "40 optimisation steps" in body and "`dpo`" in body
    assert '- method: `dpo` ({"beta": 0.1})' in body and "- lr: 5e-06" in body
    assert "## Final metrics (step 40)" in body and "| loss | 0.612346 |" in body
    # the card's recipe block is the recipe
    assert yaml.safe_load(re.search(r"```yaml\n(.*?)```", body, re.S).group(1))["train"] == RECIPE["train"]
    # the How-to-load block is Python
    compile(re.search(r"## How to load\n\n```python\n(.*?)```", body, re.S).group(1), "card", "exec")


@pytest.mark.parametrize("name, kind", [("tiny-llama", "tiny"), ("./models/mine", "folder"),
                                        ("Qwen/Qwen2.5-0.5B", "hub")])
def test_cards_name_every_kind_of_base(name, kind):
    meta, body = split(model_card(facts(name)))
    assert meta["base_model"] == name and meta["library_name"] == "peft"
    if kind == "tiny":
        assert 'load_model("tiny-llama", seed=5)' in body and "not on the Hub" in body
    else:
        assert f'AutoModelForCausalLM.from_pretrained("{name}")' in body
    meta, body = split(model_card(facts(name, fmt="model")))
    assert meta["base_model"] == name and meta["library_name"] == "transformers"
    assert 'AutoModelForCausalLM.from_pretrained("path/to/this/folder")' in body
    assert "LoRA merged into the weights" in body


def test_card_of_an_iterated_run_with_evaluations():
    card = model_card(facts("tiny-llama", fmt="model", lora=False, iteration=2, iterations=3, metrics={},
                            evaluation={"after": {"accuracy": 0.5}}))
    _, body = split(card)
    assert "A full fine-tune" in body and "in iteration 2 of 3" in body
    assert "## Final metrics" not in body and "## Evaluation after training" in body
    assert '"accuracy": 0.5' in body


def test_data_sources():
    assert data_sources(RECIPE["data"]) == [
        "train: the file `data/pairs.jsonl` (format auto), limit 200",
        "eval: the NLU task `boolq`, split validation, limit=50"]
    assert data_sources({"train": {"synthetic": {"task": "arithmetic", "n": 8, "seed": 1, "options": {}}},
                         "eval": None}) == ["train: posttrain's synthetic `arithmetic` task, n=8, seed=1"]
    mixture = [{"path": "a.jsonl", "format": "alpaca", "share": 0.25}, {"hub": "org/set", "split": "test",
                                                                       "share": 0.75}]
    assert data_sources({"train": {"mixture": mixture}}) == data_sources({"train": mixture}) == [
        "train: a mixture of", "  - the file `a.jsonl` (format alpaca), share 0.25",
        "  - the Hub dataset `org/set`, split test, share 0.75"]


def test_portable_cuts_absolute_paths_to_their_names():
    from posttrain.export import portable
    recipe = {"output_dir": "/home/me/runs", "data": {"train": {"mixture": [
        {"path": "/srv/data/chat.jsonl", "share": 0.5}, {"path": "rel/docs.jsonl", "share": 0.5}]}},
        "model": {"name": "smollm2-135m-instruct", "adapter": None}}
    assert portable(recipe) == {"output_dir": "runs", "data": {"train": {"mixture": [
        {"path": "chat.jsonl", "share": 0.5}, {"path": "rel/docs.jsonl", "share": 0.5}]}},
        "model": {"name": "smollm2-135m-instruct", "adapter": None}}
