"""experiments/math_synth.py end to end on a fabricated synthesis run and a tiny model: each training
set trains and is evaluated per seed, and the report lands in its own page (math_synth_results.md) without
touching the hand-written math_synth.md."""
import pytest

from experiments.math_synth import main
from tests.data_helpers import require_data
from tests.synth_helpers import synth_run as _synth_run


def test_experiment_end_to_end_on_a_tiny_model_writes_only_its_own_page(tmp_path, monkeypatch):
    require_data("gsm8k", "test.jsonl")
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    run = _synth_run(tmp_path)
    out = tmp_path / "results"
    out.mkdir()
    hand = out / "math_synth.md"
    hand.write_text("# hand-written setup and reading\n")
    args = ["--synth-run", str(run), "--seeds", "0", "--steps", "1", "--eval-limit", "2", "--max-new-tokens",
            "4",
            "--runs", str(tmp_path / "runs"), "--out", str(out), "model.name=tiny-llama", "model.lora.r=2",
            "train.micro_batch_size=2"]
    with pytest.raises(SystemExit, match="--report: no finished evaluation .* gold-seed0"):
        main(args + ["--report"])  # nothing trained yet, and --report trains nothing
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["math_synth.md", "math_synth_results.md"]
    assert hand.read_text() == "# hand-written setup and reading\n"
    text = (out / "math_synth_results.md").read_text()
    assert ("| gold | 3 | " in text and "| synthetic | 3 | " in text
            and "| synthetic + new problems | 4 | " in text)
    assert "| synthetic + new problems | word problems | " in text
    # --report rewrites the same page from the finished evaluations, byte for byte
    (out / "math_synth_results.md").unlink()
    assert main(args + ["--report"]) == 0
    assert ((out / "math_synth_results.md").read_text() == text
            and hand.read_text().startswith("# hand-written"))
