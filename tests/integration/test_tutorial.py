"""docs/tutorial.md cannot rot: its blocks run in order, in a fresh folder, with the tiny model in place of
the embedded one and a few steps in place of many.

The tutorial's rules, which this test reads it by: a ```python or ```yaml block whose first line is
`# NAME.py` / `# NAME.yaml` is a file the reader saves; a ```bash block is commands, one a line, run in order
(`posttrain ...` in this process through `posttrain.cli.main`, `python FILE` in a fresh interpreter without
posttrain imported, anything else in bash); other blocks (```text) are only shown."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from posttrain.cli import main

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"

# what the tutorial says -> what the test runs: the tiny model, two or three steps, short generations. Each
# must be in the tutorial, so that a changed tutorial fails here rather than running at full length.
SUBSTITUTIONS = {
    "smollm2-135m-instruct": "tiny-llama",
    "max_steps: 60": "max_steps: 2",
    "train.max_steps=100": "train.max_steps=3",
    "warmup_steps: 5": "warmup_steps: 1",
    "save_every: 20": "save_every: 1",
    "range(1000)": "range(200)",
    "len(test) < 50": "len(test) < 6",
    "--max-new-tokens 64": "--max-new-tokens 8",
    "--max-new-tokens 48": "--max-new-tokens 8",
    "max_new_tokens=48": "max_new_tokens=8",
}
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
FILE_HEADER = re.compile(r"#\s*([\w.-]+\.(?:py|yaml))\b")


def tutorial_steps(text: str) -> list[tuple[str, str, str]]:
    """[("file", name, content) | ("run", command, "")] in the order the tutorial gives them."""
    steps = []
    for lang, body in BLOCK.findall(text):
        first = body.splitlines()[0] if body.strip() else ""
        header = FILE_HEADER.match(first)
        if lang in ("python", "yaml") and header:
            steps.append(("file", header.group(1), body))
        elif lang == "bash":
            steps += [("run", line.strip(), "") for line in body.splitlines()
                      if line.strip() and not line.strip().startswith("#")]
    return steps


def run_command(cmd: str, cwd: Path, capsys) -> str:
    """Run one tutorial command in `cwd`; its output. Fails the test on a non-zero exit."""
    argv = shlex.split(cmd)
    if argv[0] == "posttrain":
        rc = main(argv[1:])
        out = capsys.readouterr()
        assert rc == 0, f"{cmd!r} exited {rc}\n{out.out}\n{out.err}"
        return out.out
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if argv[0] == "python":  # a fresh interpreter: what the reader's python sees, posttrain not imported
        argv[0] = sys.executable
    else:
        argv = ["bash", "-c", cmd]
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd!r} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_tutorial_runs_end_to_end(tmp_path, cache, monkeypatch, capsys):
    text = TUTORIAL.read_text()
    for old, new in SUBSTITUTIONS.items():
        assert old in text, f"docs/tutorial.md no longer says {old!r}: update SUBSTITUTIONS"
        text = text.replace(old, new)
    steps = tutorial_steps(text)
    files = [name for kind, name, _ in steps if kind == "file"]
    commands = [cmd for kind, cmd, _ in steps if kind == "run"]
    assert files == ["make_data.py", "recipe.yaml", "load.py"], files
    assert sum(c.startswith("posttrain ") for c in commands) >= 8, commands

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    outputs, timings = {}, []
    for kind, what, content in steps:
        if kind == "file":
            (work / what).write_text(content)
            continue
        start = time.perf_counter()
        outputs[what] = run_command(what, work, capsys)
        timings.append((round(time.perf_counter() - start, 1), what))
    print("\n".join(f"{t:6.1f} s  {c}" for t, c in timings))

    # the data, the run, its extension, the second run
    assert (work / "data" / "train.jsonl").is_file() and (work / "data" / "test.jsonl").is_file()
    run = work / "runs" / "arith-sft"
    for name in ("recipe.yaml", "metrics.jsonl", "summary.json", "report.md", "report/loss.png"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    assert (run / "checkpoints" / "step-0000003" / "model" / "adapter_config.json").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train"]["steps"] == 3
    assert summary["train"]["continued"]["max_steps"] == {"from": 2, "to": 3}
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3]
    assert (work / "runs" / "arith-sft-r4" / "report.md").is_file()
    # the evaluations, the comparison
    for name in ("eval-base", "eval-sft"):
        assert (work / "runs" / name / "test" / "report.md").is_file(), name
        assert (work / "runs" / name / "test" / "graded.jsonl").is_file(), name
    assert any("greedy" in out for cmd, out in outputs.items() if cmd.startswith("posttrain eval math"))
    assert (work / "compare.png").is_file()
    # the export: a plain HF folder with its model card, loaded by transformers alone (load.py ran)
    export = work / "arith-sft-merged"
    for name in ("config.json", "README.md", "generation_config.json", "export.json", "tokenizer.json"):
        assert (export / name).is_file(), name
    assert "library_name: transformers" in (export / "README.md").read_text()
