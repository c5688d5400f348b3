"""Smoke tests of the CLI's train and generate subcommands, in-process, on tiny models; and clean errors
for user mistakes in the data."""
import json

import pytest

from posttrain.cli import main
from tests.helpers import write_recipe


def test_train_runs_and_prints_summary(tmp_path, capsys):
    rc = main(["train", str(write_recipe(tmp_path)), f"output_dir={tmp_path}/runs", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert '"steps": 2' in out
    assert json.loads((tmp_path / "runs" / "cli-run" / "summary.json").read_text())["train"]["steps"] == 2


@pytest.mark.parametrize("content,needle", [
    ('{"messages": [{"role": "user", "content": "hi"}]}\n', "assistant"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}\n', "empty"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}]}\n', "string"),
    ('{"messages": [ not json\n', "JSON"),
])
def test_train_bad_data_names_file_and_line(tmp_path, capsys, content, needle):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "a"}, '
                    '{"role": "assistant", "content": "b"}]}\n'
                    + content)
    rc = main(["train", str(write_recipe(tmp_path, train="{path: bad.jsonl}")), f"output_dir={tmp_path}/runs",
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "bad.jsonl:2" in err and needle.lower() in err.lower(), err
    assert not (tmp_path / "runs" / "cli-run" / "checkpoints").exists()  # nothing trained, nothing written


def test_train_missing_data_file(tmp_path, capsys):
    rc = main(["train", str(write_recipe(tmp_path, train="{path: nowhere.jsonl}")), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "nowhere.jsonl" in err


def test_generate_prints_completions(capsys):
    assert main(["generate", "--model", "tiny-llama", "--prompt", "Hello", "--max-new-tokens", "4", "--n",
                 "2",
                 "--temperature", "0.8", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[0] ") and "\n[1] " in out



def test_generate_from_a_run_and_from_its_adapter(tmp_path, capsys):
    """`generate --run RUN` and `--model BASE --adapter CHECKPOINT/model` sample the trained model: the same
    greedy text, and not the base model's."""
    from posttrain.checkpoints import latest_checkpoint
    recipe = write_recipe(tmp_path)
    assert main(["train", str(recipe), f"output_dir={tmp_path}/runs", "model.lora.r=4", "model.lora.alpha=8",
                 "train.lr=0.05", "--quiet"]) == 0
    run = tmp_path / "runs" / "cli-run"
    prompt = ["--prompt", "What is 2 + 3?", "--max-new-tokens", "6"]
    capsys.readouterr()
    texts = []
    adapter = str(latest_checkpoint(run) / "model")
    for how in (["--run", str(run)], ["--model", "tiny-llama", "--adapter", adapter],
                ["--model", "tiny-llama"]):
        assert main(["generate", *how, *prompt]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and texts[0] != texts[2]

RSO_RECIPE = """
name: cli-rso
method:
  name: rso
  num_samples: 4
  rso_beta: 0.5
  sampling: {num_candidates: 6, temperature: 1.0, top_k: 0, max_new_tokens: 8, batch_size: 12}
  reward: {name: "tests.rso_helpers:LetterReward"}
model: {name: tiny-llama, lora: {r: 4, alpha: 8}}
data:
  train: {path: prompts.jsonl}
  max_length: 64
train: {lr: 1e-3, micro_batch_size: 4, max_steps: 2}
"""


def test_rso_follows_its_own_advice_to_restart_from(tmp_path, capsys):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"Say something about {w}."}) + "\n"
                                                    for w in ["cats", "dogs", "rain", "tea"]))
    (tmp_path / "rso.yaml").write_text(RSO_RECIPE)
    args = ["rso", str(tmp_path / "rso.yaml"), "--quiet", f"output_dir={tmp_path / 'runs'}"]
    assert main(args) == 0
    samples = (tmp_path / "runs" / "cli-rso" / "samples.jsonl").read_text()
    capsys.readouterr()
    assert main(args + ["method.rso_beta=0.25"]) == 2
    err = capsys.readouterr().err
    assert "--restart-from pairs" in err, err
    assert main([*args[:2], "--restart-from", "pairs", *args[2:], "method.rso_beta=0.25"]) == 0
    assert "pairs -> " in capsys.readouterr().out
    assert (tmp_path / "runs" / "cli-rso" / "samples.jsonl").read_text() == samples  # sampling kept
    assert main(args + ["method.rso_beta=0.25", "--until", "sample"]) == 0  # finished: reused


def test_train_options_between_overrides(tmp_path, capsys):
    rc = main(["train", str(write_recipe(tmp_path)), "--quiet", f"output_dir={tmp_path}/runs",
               "--until", "train", "train.max_steps=1"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "runs" / "cli-run" / "summary.json").read_text())["train"]["steps"] == 1
