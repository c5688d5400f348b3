"""experiments/math_synth.py on a fabricated synthesis run and a tiny model: the three training sets are
built at equal count, each trains and is evaluated per seed, and the report lands."""
import json

from experiments.math_synth import gold_rows, main, synthetic_rows
from posttrain.synth.math import sft_row, write_jsonl
from tests.data_helpers import require_data


def _synth_run(tmp_path):
    run = tmp_path / "synth"
    run.mkdir()
    seeds_file = tmp_path / "seeds.in.jsonl"
    seeds_file.write_text("".join(json.dumps({"question": f"What is {i} + 2?", "answer": f"{i} + 2 = {i + 2}.\n#### {i + 2}"})
                                  + "\n" for i in range(3)))
    (run / "recipe.yaml").write_text(json.dumps({"name": "synth", "model": {"name": "tiny-llama"},
                                                 "seeds": [{"path": str(seeds_file), "format": "gsm8k"}]}))
    write_jsonl(run / "seeds.jsonl", [{"id": i, "problem": f"What is {i} + 2?", "answer": str(i + 2), "source": 0}
                                      for i in range(3)])
    rows = [sft_row("What is 0 + 2?", f"0 + 2 = 2 \\boxed{{2}} v{k}", origin="seed", problem_id="seed-0", answer="2")
            for k in range(2)]
    rows += [sft_row("What is 2 + 2?", "\\boxed{4}", origin="seed", problem_id="seed-2", answer="4"),
             sft_row("What is 7 + 1?", "\\boxed{8}", origin="new", problem_id="new-0", answer="8")]
    write_jsonl(run / "synth.jsonl", rows)
    return run


def test_sets_have_equal_counts_and_questions_add(tmp_path):
    run = _synth_run(tmp_path)
    gold = gold_rows(run)
    assert len(gold) == 3 and gold[0]["messages"][1]["content"].startswith("0 + 2 = 2")
    syn = synthetic_rows(run, len(gold), False)
    assert len(syn) == 3 and [r["problem_id"] for r in syn] == ["seed-0", "seed-2", "seed-0"]
    assert syn[0]["messages"][1]["content"] != syn[2]["messages"][1]["content"]  # cycles through kept solutions
    assert len(synthetic_rows(run, len(gold), True)) == 4


def test_experiment_end_to_end_on_a_tiny_model(tmp_path, monkeypatch):
    require_data("gsm8k", "test.jsonl")
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    run = _synth_run(tmp_path)
    assert main(["--synth-run", str(run), "--seeds", "0", "--steps", "1", "--eval-limit", "2", "--max-new-tokens", "4",
                 "--runs", str(tmp_path / "runs"), "--out", str(tmp_path), "model.name=tiny-llama", "model.lora.r=2",
                 "train.micro_batch_size=2"]) == 0
    text = (tmp_path / "math_synth.md").read_text()
    assert "| gold | 3 | 1 |" in text and "| synthetic+questions | 4 | 1 |" in text
