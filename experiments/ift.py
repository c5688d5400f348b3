"""SFT vs IFT on the same data and budget (issue 16, METHODS.md section 6, docs/results/ift.md).

The paper's claim: on the same data, IFT >= SFT, more so on reasoning. Every run is `posttrain train` of
recipes/ift_word_problems.yaml or recipes/ift_gsm8k.yaml plus the overrides in its run folder's recipe.yaml;
the SFT arm is the same recipe with `method={name: sft, normalization: sequence}` (per-sequence mean, the
official code's SFT and IFT's lambda = gamma = 0 limit). Greedy accuracy on held-out problems at the start,
along the run and at the end (generation_eval.during); a lambda sweep on one seed. Finished runs are reused,
so the work can be split over processes (`--tasks`, `--seeds`, `--no-sweep`) and reported with `--report`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments import RECIPES
from experiments.sweep import publish, run_variant
from posttrain.eval.report import markdown_table, plot_curves
from posttrain.stats import mean_ci, sign_test_p, wilson_interval

TASKS = {"word_problems": RECIPES / "ift_word_problems.yaml", "gsm8k": RECIPES / "ift_gsm8k.yaml"}
SFT = ["method={name: sft, normalization: sequence}"]
SWEEP = (0.0, 0.1, 0.2, 0.4)


def run(task: str, arm: str, seed: int, a, collect: bool = False) -> dict | None:
    """arm: "sft", "ift" (lambda 0.2) or "ift-lam<x>" (the sweep)."""
    over = SFT if arm == "sft" else ([f"method.lam={arm.split('lam')[1]}"] if "lam" in arm else [])
    row = run_variant(TASKS[task], [f"name={task}-{arm}-seed{seed}", f"seed={seed}", f"output_dir={a.runs}",
                                    *over, *a.overrides], collect=collect)
    if row is not None:
        summary = json.loads((Path(a.runs) / f"{task}-{arm}-seed{seed}" / "summary.json").read_text())
        row["correct"] = [s["correct"] for s in summary["after"]["samples"]]
        row["arm"], row["task"] = arm, task
    return row


def heldout_nll(row: dict) -> float:
    """Per-sequence-mean NLL of the gold held-out responses, comparable across arms: SFT's eval loss, and
    for IFT the NLL of its no-grad pass on plain embeddings (its eval loss is the mixed, weighted one)."""
    return row.get("eval/sft_nll", row.get("eval/loss"))


def accuracy_curve(rows: list[dict]) -> tuple[list[int], list[float]]:
    """Mean accuracy over seeds at step 0 (the start) and every evaluation."""
    steps = [0] + [h["step"] for h in rows[0]["history"] if "eval/accuracy" in h]
    means = []
    for s in steps:
        vals = [r["before_accuracy"] if s == 0
                else next(h["eval/accuracy"] for h in r["history"] if h["step"] == s)
                for r in rows]
        means.append(sum(vals) / len(vals))
    return steps, means


def ci(values: list[float]) -> str:
    m, half = mean_ci(values)
    return f"{m:.3f}" + ("" if half != half else f" ± {half:.3f}")


def task_section(task: str, sft: list[dict], ift: list[dict], out: Path) -> list[str]:
    n = sft[0]["eval_n"]
    wins = losses = 0
    for s, i in zip(sft, ift):  # (problem, seed) pairs, seeds matched
        wins += sum(x and not y for x, y in zip(i["correct"], s["correct"]))
        losses += sum(y and not x for x, y in zip(i["correct"], s["correct"]))
    diffs = [i["after_accuracy"] - s["after_accuracy"] for s, i in zip(sft, ift)]
    png = plot_curves({"SFT": accuracy_curve(sft), "IFT (lambda 0.2, gamma 0.95)": accuracy_curve(ift)},
                      out / f"ift_{task}_accuracy.png",
                      title=f"held-out greedy accuracy, {task} (mean over seeds)",
                      ylabel="accuracy")
    rows = []
    for label, rs in (("SFT", sft), ("IFT", ift)):
        rows.append([label, len(rs), f"{rs[0]['before_accuracy']:.3f}", ci([r["after_accuracy"] for r in rs]),
                     ci([heldout_nll(r) for r in rs]), f"{sum(r['train_time_s'] for r in rs) / len(rs):.0f}"])
    lo, hi = wilson_interval(round(sum(r["after_accuracy"] for r in sft) / len(sft) * n), n)
    along = []
    for label, rs in (("SFT", sft), ("IFT", ift)):
        steps, acc = accuracy_curve(rs)
        along.append(f"{label} " + ", ".join(f"step {s} {a:.3f}" for s, a in zip(steps, acc)))
    return [f"### {task.replace('_', ' ')}", "",
            markdown_table(["arm", "seeds", "accuracy at start", "accuracy at end (95% t over seeds)",
                            "held-out NLL per sequence", "train s per run"], rows), "",
            f"IFT - SFT at the end, per seed: {', '.join(f'{d:+.3f}' for d in diffs)} (mean {ci(diffs)}). "
            f"Paired over (problem, seed): IFT right and SFT wrong {wins}, the reverse {losses}, exact sign "
            f"test p = {sign_test_p(wins, losses):.3f}. The t intervals are over seeds on one fixed set of "
            f"{n} problems and exclude that set's own sampling error (SFT's mean accuracy on {n} problems: "
            f"Wilson {lo:.3f}-{hi:.3f}).",
            "", "Accuracy along the run (mean over seeds): " + "; ".join(along) + ".",
            "", f"![accuracy along the run]({png.name})", ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.ift", description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sweep-seed", type=int, default=0)
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--report", action="store_true", help="train nothing: report the finished runs")
    ap.add_argument("--runs", default="runs/ift")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides of every run (e.g. a tiny model)")
    a = ap.parse_args(argv)
    results: dict[tuple[str, str], list[dict]] = {}
    for task in a.tasks:
        for seed in a.seeds:
            for arm in ("sft", "ift"):
                row = run(task, arm, seed, a, collect=a.report)
                if row is not None:
                    results.setdefault((task, arm), []).append(row)
                    print(task, arm, seed, row["after_accuracy"], flush=True)
    sweep = {}
    if not a.no_sweep:
        for lam in SWEEP:
            arm = "ift" if lam == 0.2 else f"ift-lam{lam}"
            row = run("word_problems", arm, a.sweep_seed, a, collect=a.report)
            if row is not None:
                sweep[lam] = row
    if not a.report:
        return 0
    out = Path(a.out)
    lines = ["# IFT vs SFT on the embedded model", "",
             "Reproduce: `python -m experiments.ift --report` after `python -m experiments.ift` "
             "(or, in parallel processes, `--tasks word_problems --no-sweep` and "
             "`--tasks gsm8k --no-sweep`, then the sweep).", "",
             "- model: SmolLM2-135M-Instruct (embedded), LoRA r 16 on all linear layers, fresh per run; "
             "2 CPU cores",
             "- SFT: per-sequence-mean NLL of the gold response; IFT: lambda 0.2, gamma 0.95 "
             "(METHODS.md section 6, the official code's loss); same data order, steps, batch, lr and "
             "schedule per seed",
             "- evaluation: greedy, graded by the answer module, on held-out problems at the start, every "
             "`train.eval_every` steps and at the end", ""]
    for task in a.tasks:
        if (task, "sft") in results and (task, "ift") in results:
            rows = results[(task, "sft")]
            lines += [f"{task}: {rows[0]['steps']} steps per run, seeds {[r['seed'] for r in rows]}, "
                      f"recipe recipes/{TASKS[task].name}", ""]
            lines += task_section(task, rows, results[(task, "ift")], out)
    if sweep:
        png = plot_curves({f"lambda {lam}": accuracy_curve([r]) for lam, r in sweep.items()},
                          out / "ift_lambda_sweep.png", title="lambda sweep, word problems, one seed",
                          ylabel="accuracy")
        lines += [f"### lambda sweep (word problems, seed {a.sweep_seed}, gamma 0.95)", "",
                  markdown_table(["lambda", "accuracy at end", "held-out NLL per sequence", "train s"],
                                 [[lam, r["after_accuracy"], heldout_nll(r), r["train_time_s"]]
                                  for lam, r in sweep.items()]), "",
                  "One seed: a single run per lambda, no interval.", "", f"![lambda sweep]({png.name})", ""]
    lines += ["Per run: " + json.dumps([{k: v for k, v in r.items()
                                         if k in ('name', 'seed', 'after_accuracy', 'train_time_s')}
                                        for rs in results.values() for r in rs]), ""]
    return publish(out / "ift.md", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
