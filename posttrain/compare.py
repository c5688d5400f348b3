"""`posttrain compare RUN...`: the recipe settings in which runs differ and their final metrics, as one table
(a row per setting or metric, a column per run), and their training-loss curves on one plot.

Read from what every run folder holds: `recipe.yaml` (written by the runner) and `metrics.jsonl`."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import yaml

from posttrain.config import flat
from posttrain.errors import PosttrainError
from posttrain.eval.report import markdown_table, plot_curves
from posttrain.run_report import curves, final_values, read_metrics

UNSET = "-"
# settings that name a run or say where it is, not how it trains
NOT_SETTINGS = ("name", "output_dir")


def run_label(run_dir: Path, runs: Sequence[Path]) -> str:
    """The folder's name, or its path where two runs share a name."""
    return run_dir.name if sum(r.name == run_dir.name for r in runs) == 1 else str(run_dir)


def settings_of(run_dir: Path) -> dict:
    path = run_dir / "recipe.yaml"
    if not path.is_file():
        return {}
    return {k: v for k, v in flat(yaml.safe_load(path.read_text()) or {}).items() if k not in NOT_SETTINGS}


def differing(settings: list[dict]) -> list[str]:
    """The keys whose value is not the same in every run (a key some runs lack counts as differing)."""
    keys = sorted({k for s in settings for k in s})
    return [k for k in keys if len({repr(s.get(k, UNSET)) for s in settings}) > 1]


def compare_runs(run_dirs: Sequence[str | Path]) -> dict:
    """{"labels", "settings": [key, values...] rows, "metrics": [name, values...] rows, "curves": label ->
    (steps, losses)} for the runs, in the order given."""
    runs = [Path(r) for r in run_dirs]
    for r in runs:
        if not (r / "metrics.jsonl").is_file():
            raise PosttrainError(f"{r}: not a run folder with metrics (no metrics.jsonl)")
    labels = [run_label(r, runs) for r in runs]
    histories = [read_metrics(r) for r in runs]
    settings = [settings_of(r) for r in runs]
    setting_rows = [[k, *[s.get(k, UNSET) for s in settings]] for k in differing(settings)]
    finals = [final_values(h) for h in histories]
    names = sorted({k for f in finals for k in f}, key=lambda k: (k != "loss", not k.startswith("eval/"), k))
    metric_rows = [["steps", *[h[-1]["step"] if h else 0 for h in histories]]]
    metric_rows += [[k, *[f.get(k, UNSET) for f in finals]] for k in names]
    losses = {label: curves(h).get("loss", ([], [])) for label, h in zip(labels, histories)}
    return {"labels": labels, "settings": setting_rows, "metrics": metric_rows, "curves": losses}


def format_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return yaml.safe_dump(v, default_flow_style=True).strip()
    return str(v)


def comparison_table(result: dict) -> str:
    """Markdown: the differing settings, then the final metrics (each metric's last logged value)."""
    headers = ["", *result["labels"]]
    rows = [[k, *[format_value(v) for v in vals]] for k, *vals in result["settings"]]
    if not rows:
        rows = [["(settings)", *["same" for _ in result["labels"]]]]
    rows += [[f"final {k}" if k != "steps" else k, *[format_value(v) for v in vals]]
             for k, *vals in result["metrics"]]
    return markdown_table(headers, rows)


def plot_losses(result: dict, path: str | Path) -> Path:
    """The runs' training-loss curves on one plot."""
    series = {label: xy for label, xy in result["curves"].items() if xy[0]}
    if not series:
        raise PosttrainError("none of the runs logged a training loss")
    return plot_curves(series, Path(path), title="training loss per step", ylabel="loss")
