"""`posttrain demo`: a short LoRA SFT of the embedded model on built-in arithmetic, evaluated before
and after on held-out problems, with a table on stdout and runs/demo/report.md + a loss curve PNG.
It is a thin wrapper over recipes/demo.yaml: everything it does, `posttrain train` does too."""
from __future__ import annotations

from pathlib import Path

from posttrain.config import load_recipe
from posttrain.errors import RecipeError
from posttrain.eval.report import atomic_write_text, markdown_table, plot_curves
from posttrain.runner import read_history, run_recipe

DEMO_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"


def demo_table(summary: dict) -> tuple[list[str], list[list]]:
    headers = ["", "accuracy", "no-answer rate", "held-out problems"]
    rows = [[phase, summary[phase]["accuracy"], summary[phase]["no_answer_rate"], summary[phase]["n"]]
            for phase in ("before", "after") if phase in summary]
    return headers, rows


def write_report(summary: dict, recipe, run_dir: Path) -> Path:
    history = read_history(run_dir)
    png = plot_curves({"train loss": ([h["step"] for h in history], [h["loss"] for h in history])},
                      run_dir / "loss.png", title=f"{recipe.name}: SFT loss")
    headers, rows = demo_table(summary)
    t = summary["train"]
    lora = recipe.model.lora
    samples = summary.get("after", {}).get("samples", [])[:5]
    text = "\n".join([
        f"# posttrain demo: {recipe.name}", "",
        f"- model: `{recipe.model.name}` with LoRA (r={lora.r}, alpha={lora.alpha}, targets={lora.targets})"
        if lora else f"- model: `{recipe.model.name}`, full fine-tune",
        f"- data: built-in `{recipe.data.train.synthetic.task}` problems, {summary['data']['examples']} train"
        f" (seed {recipe.data.train.synthetic.seed}), held-out eval seed {recipe.data.eval.synthetic.seed}",
        f"- seed {recipe.seed}; {t['steps']} steps of {recipe.train.micro_batch_size * recipe.train.grad_accum}"
        f" examples; lr {recipe.train.lr}; training wall time {t['wall_time_s']} s"
        f" ({t.get('tokens_per_s', 0)} tokens/s); total wall time {summary['wall_time_s']} s", "",
        markdown_table(headers, rows), "",
        f"![loss]({png.name})", "",
        "## Sample completions after training", "",
        *[f"- {s['prompt']!r} → {s['completion']!r} (gold {s['gold']}, {'✓' if s['correct'] else '✗'})" for s in samples],
        "", f"Reproduce: `posttrain train recipes/demo.yaml output_dir={run_dir.parent}` "
            f"(or `make demo`).", ""])
    path = run_dir / "report.md"
    atomic_write_text(path, text)
    return path


def run_demo(out_dir: Path = Path("runs/demo"), overrides: list[str] | None = None, quiet: bool = False) -> dict:
    if not DEMO_RECIPE.is_file():
        raise RecipeError(f"demo recipe {DEMO_RECIPE} is missing; run from a posttrain checkout")
    out_dir = Path(out_dir)
    recipe = load_recipe(DEMO_RECIPE, [f"output_dir={out_dir.parent}", f"name={out_dir.name}", *(overrides or [])])
    summary = run_recipe(recipe, resume=False, show_progress=not quiet)
    report = write_report(summary, recipe, recipe.run_dir)
    headers, rows = demo_table(summary)
    print()
    print(markdown_table(headers, rows))
    print(f"\ntrained {summary['train']['steps']} steps in {summary['train']['wall_time_s']} s; "
          f"report: {report}")
    return summary
