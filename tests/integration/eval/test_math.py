"""`posttrain eval math` end to end on the tiny model: on a predictions file and on a run."""
import json

from posttrain.cli import main
from tests.data_helpers import write_lines as _jsonl


def test_cli_eval_math_on_a_file_and_a_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    data = _jsonl(tmp_path / "probs.jsonl", [{"question": f"What is {i} + 1?", "answer": f"#### {i + 1}",
                                              "subject": "add", "level": 1} for i in range(3)])
    assert main(["eval", "math", "--data", str(data), "--model", "tiny-llama", "--k", "2",
                 "--max-new-tokens", "4", "--out-dir", str(tmp_path / "out"), "--quiet"]) == 0
    assert "greedy" in capsys.readouterr().out
    report = (tmp_path / "out" / "probs" / "report.md").read_text()
    assert "\\boxed{}" in report and "maj@2" in report and "## By subject" in report
    rows = [json.loads(x) for x in (tmp_path / "out" / "probs" / "graded.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["samples"]) == 2 for r in rows)
    # a run folder is evaluated as training built it
    from posttrain.config import load_recipe
    from posttrain.runner import run_recipe
    sft = _jsonl(tmp_path / "sft.jsonl", [{"messages": [{"role": "user", "content": "1+1?"},
                                                         {"role": "assistant", "content": "2"}]}] * 4)
    (tmp_path / "r.yaml").write_text(f"name: r\noutput_dir: {tmp_path}\nmethod: {{name: sft}}\n"
                                     "model: {name: tiny-llama}\n"
                                     f"data: {{train: {{path: {sft}}}}}\n"
                                     "train: {max_steps: 1, micro_batch_size: 2}\n")
    run_recipe(load_recipe(tmp_path / "r.yaml"), show_progress=False)
    assert main(["eval", "math", "--data", str(data), "--run", str(tmp_path / "r"), "--max-new-tokens", "4",
                 "--out-dir", str(tmp_path / "out2"), "--quiet"]) == 0
    assert (tmp_path / "out2" / "probs" / "graded.jsonl").exists()
