"""experiments/demo_seeds.py: the demo's embedded-model run over seeds, reported with intervals."""
from experiments.demo_seeds import main

TINY = ["model.name=tiny-llama", "model.lora=null", "train.max_steps=2", "data.train.synthetic.n=16",
        "data.eval.synthetic.n=8", "generation_eval.n=4", "generation_eval.max_new_tokens=4"]


def test_demo_seeds_reports_every_seed_with_intervals(tmp_path, capsys):
    assert main(["--seeds", "0", "1", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path),
                 "--timing-note", "a test", *TINY]) == 0
    text = (tmp_path / "demo.md").read_text()
    assert "| 0 |" in text and "| 1 |" in text and "(a test)" in text
    assert "Over 2 seeds" in text and "Wilson" in text and "sign test" in text
    assert (tmp_path / "demo_loss.png").stat().st_size > 1000
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {"seed0", "seed1"}
