"""A run's report.md with its curves as PNG (posttrain/run_report.py), from metrics.jsonl alone."""
import json

from posttrain.run_report import curves, final_values, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def metrics(run, rows):
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


ROWS = [{"step": 1, "loss": 2.0, "lr": 1e-3, "grad_norm": 3.0, "tokens": 10, "step_time": 0.1},
        {"step": 2, "loss": 1.5, "lr": 5e-4, "grad_norm": 2.0, "tokens": 10, "step_time": 0.1,
         "eval/loss": 1.8, "eval/accuracy": 0.25},
        {"step": 3, "loss": 1.25, "lr": 0.0, "grad_norm": 1.0, "tokens": 10, "step_time": 0.1}]


def test_curves_and_final_values_leave_out_bookkeeping():
    c = curves(ROWS)
    assert set(c) == {"loss", "lr", "grad_norm", "eval/loss", "eval/accuracy"}
    assert c["eval/loss"] == ([2], [1.8])
    assert final_values(ROWS) == {"loss": 1.25, "lr": 0.0, "grad_norm": 1.0, "eval/loss": 1.8,
                                  "eval/accuracy": 0.25}


def test_report_on_any_run_folder(tmp_path):
    run = tmp_path / "my-run"
    metrics(run, ROWS)
    (run / "recipe.yaml").write_text("name: my-run\nmethod: {name: dpo}\n"
                                     "model: {name: tiny-llama, lora: {r: 4}}\n"
                                     "train: {lr: 0.001, max_steps: 3}\n")
    path = write_report(run)
    text = path.read_text()
    assert path == run / "report.md"
    assert "# Run my-run" in text and "dpo on `tiny-llama` (LoRA); 3 steps, lr 0.001" in text
    assert "![loss](report/loss.png)" in text and "![metrics](report/metrics.png)" in text
    assert "| loss | 3 | 1.25 |" in text and "| eval/loss | 2 | 1.8 |" in text
    for png in ("loss.png", "metrics.png"):
        assert (run / "report" / png).read_bytes()[:8] == PNG


def test_report_of_a_run_without_steps(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    assert "No step logged yet" in write_report(run).read_text()
    assert not (run / "report").exists()
