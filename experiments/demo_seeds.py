"""The demo's embedded-model part over several seeds: LoRA SFT on arithmetic (posttrain/demo.yaml), greedy
accuracy on the held-out problems before and after, per seed, with the interval over seeds, a sign test on
the per-seed gains, and the eval set's own sampling error stated beside. Writes docs/results/demo.md and
demo_loss.png. Run from a checkout:

    python -m experiments.demo_seeds --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.sweep import curve, publish, run_variant
from posttrain.demo import bandit_part, bandit_table, demo_recipe_path
from posttrain.eval.report import markdown_table, plot_curves
from posttrain.stats import mean_ci, sign_test_p, wilson_interval


def _pm(values: list[float]) -> str:
    m, ci = mean_ci(values)
    return f"{m:.3f}" if ci != ci else f"{m:.3f} ± {ci:.3f}"


def report(rows: list[dict], bandit: dict, out: Path, wall_s: float, command: str,
           timing_note: str = "") -> Path:
    gains = [r["after_accuracy"] - r["before_accuracy"] for r in rows]
    wins, losses = sum(g > 0 for g in gains), sum(g < 0 for g in gains)
    n = rows[0]["eval_n"]
    after_mean = mean_ci([r["after_accuracy"] for r in rows])[0]
    lo, hi = wilson_interval(round(after_mean * n), n)
    png = plot_curves({f"seed {r['seed']}": curve(r, "loss") for r in rows}, out / "demo_loss.png",
                      title="demo: LoRA SFT on arithmetic, training loss", ylabel="loss")
    table = markdown_table(["seed", "accuracy before", "accuracy after", "gain", "train time (s)",
                            "run time (s)"],
                           [[r["seed"], round(r["before_accuracy"], 3), round(r["after_accuracy"], 3),
                             round(g, 3), round(r["train_time_s"], 1), round(r["wall_time_s"], 1)]
                            for r, g in zip(rows, gains)])
    text = "\n".join([
        "# Demo: LoRA SFT of the embedded model on arithmetic, over seeds", "",
        f"Reproduce: `{command}` (each row is `posttrain train posttrain/demo.yaml seed=S`).", "",
        "- model: SmolLM2-135M-Instruct (embedded, float32), LoRA r=16, alpha=32, all linear layers",
        "- data: 2,000 built-in arithmetic problems (data seed 1, the same for every row); evaluation: "
        f"greedy answers (32 new tokens) on {n} held-out problems (data seed 2), the same problems for "
        f"every row",
        f"- seeds (LoRA initialisation and batch order): {', '.join(str(r['seed']) for r in rows)}; "
        f"{rows[0]['steps']} steps of 8 examples, AdamW lr 1e-3, cosine",
        f"- machine: 2 CPU cores; wall time of the runs, summed: {wall_s:.0f} s"
        + (f" ({timing_note})" if timing_note else ""),
        "",
        table, "",
        f"Over {len(rows)} seeds: accuracy after {_pm([r['after_accuracy'] for r in rows])}, gain "
        f"{_pm(gains)} (mean ± 95% t-interval over seeds). The gain is positive on {wins} of {len(rows)} "
        f"seeds (two-sided sign test p = {sign_test_p(wins, losses):.2g}; with 3 seeds the smallest "
        "possible p is 0.25, so the sign test alone cannot reach significance here and the t-interval "
        "carries the claim).", "",
        f"The interval is over seeds on one fixed set of {n} problems: it leaves out the eval set's own "
        f"sampling error, which for the mean accuracy after training is about {lo:.3f}–{hi:.3f} (95% Wilson "
        f"interval for {n} problems).", "",
        f"![loss]({png.name})", "",
        "## The bandit part of the demo", "",
        f"DPO, cDPO and rDPO in the rDPO paper's log-linear bandit at flip rate 0.2, {bandit['cfg'].seeds} "
        f"seeds ({bandit['wall_s']:.1f} s; the full sweep is docs/results/noisy_preferences.md):", "",
        markdown_table(*bandit_table(bandit)), "",
        f"rDPO has the smaller parameter error on {bandit['wins']} of {bandit['wins'] + bandit['losses']} "
        f"seeds (each seed's rDPO error against its own DPO error; sign test p = {bandit['p']:.2g}).", ""])
    path = out / "demo.md"
    publish(path, text)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.demo_seeds", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs", default="runs/demo-seeds",
                    help="folder for the runs (finished runs are reused)")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--timing-note", default="",
                    help="how the runs were timed (e.g. whether the machine was shared)")
    ap.add_argument("overrides", nargs="*",
                    help="key.sub=value overrides for every run (e.g. a tiny model in a test)")
    a = ap.parse_args(argv)
    rows = [run_variant(demo_recipe_path(), [f"seed={s}", f"output_dir={a.runs}", f"name=seed{s}",
                                             *a.overrides])
            for s in a.seeds]
    bandit = bandit_part()
    command = f"python -m experiments.demo_seeds --seeds {' '.join(map(str, a.seeds))}"
    wall_s = sum(r["wall_time_s"] for r in rows) + bandit["wall_s"]
    path = report(rows, bandit, Path(a.out), wall_s, command, a.timing_note)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
