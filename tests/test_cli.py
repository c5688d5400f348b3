"""Smoke tests of every CLI subcommand, in-process, on tiny models; and clean errors for user mistakes."""
import json

import pytest

from posttrain.cli import main

RECIPE = """
name: cli-run
method: {{name: sft}}
model: {{name: tiny-llama}}
data:
  train: {train}
  max_length: 96
train: {{lr: 1.0e-3, micro_batch_size: 2, max_steps: 2}}
"""


def write_recipe(tmp_path, train="{synthetic: {task: arithmetic, n: 4}}"):
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE.format(train=train))
    return p


def test_train_runs_and_prints_summary(tmp_path, capsys):
    rc = main(["train", str(write_recipe(tmp_path)), f"output_dir={tmp_path}/runs", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert '"steps": 2' in out
    assert json.loads((tmp_path / "runs" / "cli-run" / "summary.json").read_text())["train"]["steps"] == 2


def test_train_bad_key_is_a_clean_error(tmp_path, capsys):
    rc = main(["train", str(write_recipe(tmp_path)), "train.lr_typo=1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "train.lr_typo: unknown key" in err and "Traceback" not in err


@pytest.mark.parametrize("content,needle", [
    ('{"messages": [{"role": "user", "content": "hi"}]}\n', "assistant"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}\n', "empty"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}]}\n', "string"),
    ('{"messages": [ not json\n', "JSON"),
])
def test_train_bad_data_names_file_and_line(tmp_path, capsys, content, needle):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n'
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


def test_generate_unknown_model(capsys):
    assert main(["generate", "--model", "no-such-model", "--prompt", "x"]) == 2
    assert "tiny-llama" in capsys.readouterr().err  # the error lists known names


def test_models_list(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "tiny-llama" in out


def test_demo_runs_on_a_tiny_model(tmp_path, capsys):
    import posttrain.demo as demo
    small = demo.BanditConfig(eps_values=(0.2,), methods=("dpo", "cdpo", "rdpo"), seeds=3, n_pairs=300)
    out_dir = tmp_path / "demo"
    result = demo.run_demo(out_dir, ["model.name=tiny-llama", "model.lora=null", "train.max_steps=2",
                                     "data.train.synthetic.n=16", "data.eval.synthetic.n=8",
                                     "generation_eval.n=4",
                                     "generation_eval.max_new_tokens=4"], quiet=True, bandit=small)
    out = capsys.readouterr().out
    assert "| rdpo | 0.2 |" in out and "accuracy after" in out
    assert [s["method"] for s in result["bandit"]["summary"]] == ["dpo", "cdpo", "rdpo"]
    assert result["bandit"]["wins"] + result["bandit"]["losses"] == 3
    assert result["sft"]["train"]["steps"] == 2
    report = (out_dir / "report.md").read_text()
    assert "training.png" in report and (out_dir / "training.png").stat().st_size > 1000
    assert (out_dir / "sft" / "summary.json").exists()


def test_demo_recipe_ships_with_the_package():
    from posttrain.config import load_recipe
    from posttrain.demo import demo_recipe_path
    path = demo_recipe_path()
    assert path.is_file() and path.parent.name == "posttrain"  # inside the package, not the checkout
    recipe = load_recipe(path, [])
    assert recipe.method_name == "sft" and recipe.model.name == "smollm2-135m-instruct"


def test_cli_demo_passes_overrides(tmp_path, monkeypatch):
    import posttrain.demo as demo
    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda out_dir, overrides, quiet: seen.update(out=out_dir,
                                                                                        ov=overrides))
    assert main(["demo", "--out", str(tmp_path), "--quiet", "train.max_steps=3"]) == 0
    assert seen == {"out": tmp_path, "ov": ["train.max_steps=3"]}


def test_models_convert_rejects_other_names(capsys):
    assert main(["models", "convert", "tiny-llama"]) == 2
    assert "only the embedded model" in capsys.readouterr().err


def test_python_dash_m_posttrain_runs_the_cli():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "posttrain", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "export" in out.stdout and "train" in out.stdout
