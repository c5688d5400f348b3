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
