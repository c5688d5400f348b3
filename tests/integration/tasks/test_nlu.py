"""NLU tasks through the library on the tiny model: label-only SFT, and `posttrain eval nlu`."""
import json
import re
from types import SimpleNamespace

import pytest

from posttrain.cli import main
from posttrain.config import DataSource, NLUSource, load_recipe
from posttrain.generation.sampler import SamplingStats
from posttrain.runner import read_history, run_recipe
from posttrain.tasks.sources import load_source
from tests.data_helpers import require_data

pytestmark = pytest.mark.usefixtures("cache")


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


def graded(completion: str, gold: str, labels: list[str]) -> str:
    """'correct', 'wrong' or 'invalid', by the rule written out here: the text before the first
    </Judgement> must name exactly one label word."""
    if "</Judgement>" not in completion:
        return "invalid"
    text = completion.split("</Judgement>")[0].lower()
    named = {lab for lab in labels if re.search(rf"\b{re.escape(lab.lower())}\b", text)}
    if len(named) != 1:
        return "invalid"
    return "correct" if named == {gold} else "wrong"


def test_cli_eval_nlu(tmp_path, capsys, monkeypatch):
    require_data("superglue")
    gold = [r.meta["label"] for r in
            load_source(DataSource(nlu=NLUSource(task="cb", split="validation", limit=4)), "prompt")]
    labels = ["Entailment", "Contradiction", "Neutral"]
    out = tmp_path / "res.json"
    assert main(["eval", "nlu", "--tasks", "cb", "--model", "tiny-llama", "--limit", "4", "--out",
                 str(out)]) == 0
    res = json.loads(out.read_text())["cb"]
    assert "cb" in capsys.readouterr().out
    # the reported numbers are the grades of the reported completions, against the right gold labels
    assert res["n"] == 4 and [s["gold"] for s in res["samples"]] == gold
    grades = [graded(s["completion"], s["gold"], labels) for s in res["samples"]]
    assert res["accuracy"] == grades.count("correct") / 4
    assert res["invalid_rate"] == grades.count("invalid") / 4

    # scripted completions, in prompt order: correct, wrong, two label words (invalid), no closing tag
    def scripted(model, tokenizer, prompts, params, **kw):
        assert len(prompts) == 4
        def other(i):
            return next(lab for lab in labels if lab != gold[i])
        texts = [f"{gold[0]}</Judgement>", f" {other(1)} </Judgement>",
                 f"{gold[2]} or {other(2)}</Judgement>",
                 gold[3]]
        return [[SimpleNamespace(text=t)] for t in texts], SamplingStats()

    monkeypatch.setattr("posttrain.eval.nlu.sample", scripted)
    assert main(["eval", "nlu", "--tasks", "cb", "--model", "tiny-llama", "--limit", "4", "--out",
                 str(out)]) == 0
    res = json.loads(out.read_text())["cb"]
    assert (res["accuracy"], res["invalid_rate"], res["n"]) == (0.25, 0.5, 4)
