"""NLU tasks through the library: recipe data sources, label-only SFT, and `posttrain eval nlu`."""
import json

import pytest

from posttrain.cli import main
from posttrain.config import DataSource, NLUSource, load_recipe
from posttrain.data.sources import load_source
from posttrain.runner import read_history, run_recipe
from tests.data_helpers import require_data


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))


def test_nlu_sources_give_prompt_and_sft_records():
    require_data("superglue")
    prompts = load_source(DataSource(nlu=NLUSource(task="cb", split="validation", limit=5, shots=2)), "prompt")
    assert len(prompts) == 5 and prompts[0].meta["assistant_prefix"] == "<Judgement>"
    assert prompts[0].meta["labels"] == ["Entailment", "Contradiction", "Neutral"]
    assert sum(m["role"] == "assistant" for m in prompts[0].prompt) == 2  # the two shots
    sft = load_source(DataSource(nlu=NLUSource(task="rte", split="train")), "sft")
    assert len(sft) == 32 and sft[0].messages[-1]["content"].startswith("<Judgement>")
    with pytest.raises(Exception, match="give exactly one"):
        DataSource(nlu=NLUSource(task="rte"), path="x.jsonl")


def test_label_only_sft_recipe_trains_on_the_label_tokens(tmp_path):
    require_data("superglue")
    p = tmp_path / "sft.yaml"
    p.write_text("""
name: nlu-sft
method: {name: sft}
model: {name: tiny-llama, lora: {r: 4, alpha: 8, rslora: true, targets: [q_proj, v_proj]}}
data:
  train: {nlu: {task: cb, split: train, limit: 8}}
  max_length: 512
train: {lr: 1e-3, micro_batch_size: 4, max_steps: 2, warmup_steps: 0}
""")
    r = load_recipe(p, [f"output_dir={tmp_path / 'runs'}"])
    summary = run_recipe(r, show_progress=False)
    assert summary["data"]["label_only"] is True
    hist = read_history(r.run_dir)
    # supervised tokens per example: the label word(s), </Judgement> and <|im_end|>: a handful, not the prompt
    assert 4 * 3 <= hist[0]["units"] <= 4 * 10


def test_cli_eval_nlu(tmp_path, capsys):
    require_data("superglue")
    out = tmp_path / "res.json"
    assert main(["eval", "nlu", "--tasks", "cb", "--model", "tiny-llama", "--limit", "4", "--out", str(out)]) == 0
    res = json.loads(out.read_text())["cb"]
    assert res["n"] == 4 and 0 <= res["accuracy"] <= 1 and res["invalid_rate"] >= 0
    assert "cb" in capsys.readouterr().out
