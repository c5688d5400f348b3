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


# ---------------------------------------------------------------- one set of run options, anywhere

RUN_OPTIONS = {"--restart-from", "--until", "--nproc", "--quiet"}


def verbs():
    import argparse

    from posttrain.cli import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_recipe_verbs_share_the_run_options():
    from posttrain.cli import run_options
    shared = {a.option_strings[0]: (a.help, a.metavar, a.type) for a in run_options()._actions}
    assert set(shared) == RUN_OPTIONS
    for verb in ("train", "rso", "synth"):
        actions = {a.option_strings[0]: (a.help, a.metavar, a.type)
                   for a in verbs()[verb]._actions if a.option_strings}
        assert {k: actions[k] for k in RUN_OPTIONS} == shared, verb


def test_run_options_stand_anywhere_among_overrides():
    from posttrain.cli import build_parser
    for argv in (["train", "r.yaml", "--quiet", "name=x", "--nproc", "2", "train.lr=1", "--until", "sample",
                  "--restart-from", "pairs"],
                 ["rso", "--until", "sample", "r.yaml", "name=x", "--restart-from", "pairs", "--nproc=2",
                  "train.lr=1", "--quiet"],
                 ["synth", "math", "r.yaml", "name=x", "--quiet", "train.lr=1", "--restart-from", "pairs",
                  "--nproc", "2", "--until", "sample"]):
        a = build_parser().parse_args(argv)
        assert (a.recipe, a.overrides) == ("r.yaml", ["name=x", "train.lr=1"]), argv
        assert (a.quiet, a.nproc, a.until, a.restart_from) == (True, 2, "sample", "pairs"), argv


def test_train_quiet_before_an_override_reaches_the_recipe(tmp_path, capsys):
    rc = main(["train", str(write_recipe(tmp_path)), "--quiet", "train.lr_typo=1"])
    err = capsys.readouterr().err
    assert rc == 2 and "train.lr_typo: unknown key" in err and "unrecognized" not in err


def test_rso_takes_restart_from_and_until(tmp_path, monkeypatch, capsys):
    import posttrain.runner as runner
    seen = {}

    def fake_run(recipe, **kw):
        seen.update(kw)
        return {"stages": {"pairs": {"pairs": 3}}}
    monkeypatch.setattr(runner, "run_recipe", fake_run)
    recipe = str(write_recipe(tmp_path))
    assert main(["rso", recipe, "--restart-from", "pairs", "method.name=rso", "--quiet"]) == 0
    assert seen == {"show_progress": False, "restart_from": "pairs", "until": "pairs"}
    assert "pairs -> " in capsys.readouterr().out
    assert main(["rso", recipe, "--until", "sample", "method.name=rso"]) == 0
    assert seen["until"] == "sample" and seen["restart_from"] is None


def test_nproc_relaunches_the_same_command_without_it(tmp_path, monkeypatch):
    import subprocess
    launched = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, env: launched.append(cmd) or
                        subprocess.CompletedProcess(cmd, 0))
    recipe = str(write_recipe(tmp_path))
    assert main(["train", recipe, "--nproc", "2", "name=x", "--quiet"]) == 0
    assert main(["rso", recipe, "method.name=rso", "--nproc=2", "--restart-from", "pairs"]) == 0
    (train, rso) = launched
    assert "--nproc_per_node=2" in train and train[-4:] == ["train", recipe, "name=x", "--quiet"]
    assert rso[-5:] == ["rso", recipe, "method.name=rso", "--restart-from", "pairs"]


def test_synth_nproc_is_its_workers_and_until_stops_early(tmp_path, monkeypatch, capsys):
    import posttrain.synth.config as synth_config
    import posttrain.synth.math as synth_math
    seen = {}
    recipe = type("R", (), {"run_dir": tmp_path})
    monkeypatch.setattr(synth_config, "load_synth_recipe", lambda path, overrides: seen.update(ov=overrides)
                        or recipe)
    monkeypatch.setattr(synth_math, "run_synth", lambda recipe, path, **kw: seen.update(kw) or {})
    argv = ["synth", "math", "s.yaml", "--nproc", "3", "a=1", "--restart-from", "filter", "--quiet"]
    assert main(argv) == 0
    assert seen == {"ov": ["a=1", "workers=3"], "overrides": ["a=1", "workers=3"], "restart_from": "filter",
                    "until": None, "progress": False}
    capsys.readouterr()
    assert main(["synth", "math", "s.yaml", "--until", "filter", "--quiet"]) == 0
    assert seen["until"] == "filter" and "stopped after filter (--until)" in capsys.readouterr().out


def test_every_option_of_every_verb_has_help():
    import argparse
    missing = [f"{verb} {a.option_strings or a.dest}" for verb, parser in verbs().items()
               for a in parser._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not missing, missing


# ---------------------------------------------------------------- errors name the recipe key

def test_unknown_format_names_the_recipe_key(tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"messages": []}\n')
    rc = main(["train", str(write_recipe(tmp_path, train="{path: d.jsonl}")), "data.train.format=chatml"])
    err = capsys.readouterr().err
    assert rc == 2 and "data.train.format: unknown format 'chatml'" in err and "messages" in err, err
    (tmp_path / "e.jsonl").write_text('{"messages": []}\n')
    mixture = "[{path: d.jsonl, share: 0.5}, {path: e.jsonl, share: 0.5, format: chatml}]"
    rc = main(["train", str(write_recipe(tmp_path, train=mixture))])
    err = capsys.readouterr().err
    assert rc == 2 and "data.train[1].format: unknown format 'chatml'" in err, err


def test_missing_input_is_reported_before_the_recorded_stages(tmp_path, capsys):
    import json
    run = tmp_path / "runs" / "cli-run"
    run.mkdir(parents=True)  # a finished run whose recorded settings differ from the recipe's
    (run / "pipeline.json").write_text(json.dumps({"stages": {"train": {
        "status": "done", "settings": {"train.lr": 1}, "inputs": {}, "start": {}}}}))
    for override, key in (("data.train.path=gone.jsonl", "data.train.path"),
                          ("model.adapter=runs/no-such-run", "model.adapter")):
        rc = main(["train", str(write_recipe(tmp_path)), f"output_dir={tmp_path}/runs", override, "--quiet",
                   *(["data.train.synthetic=null"] if key == "data.train.path" else [])])
        err = capsys.readouterr().err
        assert rc == 2 and f"{key}: " in err and "does not exist" in err and "stage" not in err, err


def test_run_recipe_checks_inputs_first(tmp_path):
    import pytest

    from posttrain.config import load_recipe
    from posttrain.errors import RecipeError
    from posttrain.runner import run_recipe
    recipe = load_recipe(write_recipe(tmp_path), ["model.adapter=nowhere", f"output_dir={tmp_path}/runs"])
    with pytest.raises(RecipeError, match="model.adapter: nowhere does not exist"):
        run_recipe(recipe)
    assert not (tmp_path / "runs").exists()


def test_method_errors_name_method_keys(tmp_path, capsys):
    rc = main(["train", str(write_recipe(tmp_path)), f"output_dir={tmp_path}/runs", "method.name=dpo",
               "method.beta=-1", "method.sampling.num_candidates=4", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "method.beta: Input should be greater than 0" in err, err
    assert "method.sampling: unknown key; allowed keys here: " in err and "reference" in err, err
    assert not (tmp_path / "runs").exists()  # refused before the run folder is made
