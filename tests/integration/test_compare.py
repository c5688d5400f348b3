"""`posttrain compare` on two real runs of the tiny model that differ in their learning rate."""
from posttrain.cli import main
from posttrain.config import load_recipe
from posttrain.runner import run_recipe
from tests.helpers import logged, write_recipe


def test_compare_two_runs(tmp_path, in_tmp_path, capsys):
    path = write_recipe(tmp_path)
    runs = []
    for name, lr in (("slow", "1.0e-4"), ("fast", "1.0e-2")):
        r = load_recipe(path, [f"output_dir={tmp_path / 'runs'}", f"name={name}", f"train.lr={lr}",
                               "train.report_to=[]"])
        run_recipe(r, show_progress=False)
        runs.append(r.run_dir)
    capsys.readouterr()
    assert main(["compare", *map(str, runs), "--plot", str(tmp_path / "cmp.png")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "|  | slow | fast |"
    assert "| train.lr | 0.0001 | 0.01 |" in out
    assert sum(line.startswith("| train.") or line.startswith("| model.") for line in out) == 1  # lr only
    finals = [f"{logged(r)[-1]['loss']:.4g}" for r in runs]
    assert f"| final loss | {finals[0]} | {finals[1]} |" in out
    assert "| steps | 2 | 2 |" in out
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
