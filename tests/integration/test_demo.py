"""The demo runs on a tiny model: the bandit, SFT, its report."""
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
