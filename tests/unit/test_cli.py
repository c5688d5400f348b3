"""The CLI without a model: clean errors for user mistakes, the model list, demo overrides, and
`python -m posttrain`."""
from posttrain.cli import main
from tests.helpers import write_recipe


def test_train_bad_key_is_a_clean_error(tmp_path, capsys):
    rc = main(["train", str(write_recipe(tmp_path)), "train.lr_typo=1", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "train.lr_typo: unknown key" in err and "Traceback" not in err


def test_generate_unknown_model(capsys):
    assert main(["generate", "--model", "no-such-model", "--prompt", "x"]) == 2
    assert "tiny-llama" in capsys.readouterr().err  # the error lists known names


def test_models_list(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "tiny-llama" in out


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
