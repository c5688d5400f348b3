"""A training run's report: `<run>/report.md` with its loss and metric curves as PNG (`<run>/report/`), drawn
from its metrics.jsonl alone, so it can be written for any run folder, finished or not (`write_report`).
The runner writes it at the end of every training stage."""
from __future__ import annotations

import math
from pathlib import Path

import yaml

from posttrain.eval.report import markdown_table, plot_curves, plt
from posttrain.files import atomic_path, atomic_write_text, read_jsonl

REPORT = "report.md"
FIGURES = "report"  # the PNGs, beside report.md
# what a step logs about its own speed and size, not about training: left out of curves and comparisons
BOOKKEEPING = ("step", "tokens_per_s", "step_time", "elapsed", "units", "tokens")


def read_metrics(run_dir: Path) -> list[dict]:
    """The run's metrics.jsonl, one record per logged step ([] when it has none)."""
    return read_jsonl(Path(run_dir) / "metrics.jsonl", missing="empty")


def curves(history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """metric -> (steps, values) over the steps that logged it (evaluations log only at their steps)."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for h in history:
        for k, v in h.items():
            if k in BOOKKEEPING or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if not math.isfinite(v):
                continue
            xs, ys = out.setdefault(k, ([], []))
            xs.append(h["step"])
            ys.append(float(v))
    return out


def final_values(history: list[dict]) -> dict[str, float]:
    """Each metric's last logged value (an evaluation's from the last step that ran one)."""
    return {k: ys[-1] for k, (_, ys) in curves(history).items()}


def plot_grid(series: dict[str, tuple[list[int], list[float]]], path: Path, *, title: str = "") -> Path:
    """One small plot per metric, three to a row."""
    n = len(series)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), dpi=100, squeeze=False)
    for ax, (name, (xs, ys)) in zip(axes.flat, series.items()):
        ax.plot(xs, ys, linewidth=1.3, marker="o" if len(xs) < 20 else None, markersize=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _recipe_line(run_dir: Path) -> str:
    path = run_dir / "recipe.yaml"
    if not path.is_file():
        return ""
    r = yaml.safe_load(path.read_text()) or {}
    method = (r.get("method") or {}).get("name", "?")
    model = (r.get("model") or {}).get("name", "?")
    lora = "LoRA" if (r.get("model") or {}).get("lora") else "full fine-tune"
    train = r.get("train") or {}
    length = f"{train['max_steps']} steps" if train.get("max_steps") else f"{train.get('epochs')} epochs"
    return f"- {method} on `{model}` ({lora}); {length}, lr {train.get('lr')}, seed {r.get('seed', 0)}"


def write_report(run_dir: str | Path) -> Path:
    """`<run>/report.md` and its PNGs (`report/loss.png`: training loss, with eval/loss where evaluated;
    `report/metrics.png`: every other metric) from the run's metrics.jsonl."""
    run_dir = Path(run_dir)
    history = read_metrics(run_dir)
    series = curves(history)
    lines = [f"# Run {run_dir.name}", ""]
    recipe = _recipe_line(run_dir)
    if recipe:
        lines += [recipe, ""]
    if not history:
        lines += ["No step logged yet (metrics.jsonl is empty or missing).", ""]
        path = run_dir / REPORT
        atomic_write_text(path, "\n".join(lines))
        return path
    lines += [f"{len(history)} steps logged, last step {history[-1]['step']}.", ""]
    figures = run_dir / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    losses = {k: series[k] for k in ("loss", "eval/loss") if k in series}
    if losses:
        plot_curves({("train" if k == "loss" else "eval"): v for k, v in losses.items()},
                    figures / "loss.png", title=f"{run_dir.name}: loss per step")
        lines += [f"![loss]({FIGURES}/loss.png)", ""]
    others = {k: v for k, v in series.items() if k not in losses}
    if others:
        plot_grid(others, figures / "metrics.png", title=f"{run_dir.name}: metrics per step")
        lines += [f"![metrics]({FIGURES}/metrics.png)", ""]
    finals = final_values(history)
    lines += ["Final values (each metric's last logged value):", "",
              markdown_table(["metric", "step", "value"],
                             [[k, series[k][0][-1], finals[k]] for k in sorted(finals)]), ""]
    path = run_dir / REPORT
    atomic_write_text(path, "\n".join(lines))
    return path
