"""`posttrain demo`: what this library does, shown in about five minutes on two CPU cores.

1. Robust DPO's claim where its theory lives (seconds): the rDPO paper's log-linear bandit with 20% of the
   preference labels flipped; DPO, cDPO and rDPO fitted on the same pairs over 20 seeds (posttrain.bandit);
   the error of the learned parameter against the true one, with 95% intervals over seeds and rDPO's
   paired difference to DPO.
2. A real gain on the embedded model (minutes): LoRA SFT of SmolLM2-135M-Instruct on built-in arithmetic
   word problems; greedy answer accuracy on held-out problems before and after. The recipe ships with the
   package (posttrain/demo.yaml): `posttrain train` runs it on its own.

A table on stdout and <out>/report.md with the training-loss plot. Whether the embedded-model gain holds
across seeds is measured by experiments/demo_seeds.py in a checkout (docs/results/demo.md)."""
from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from posttrain.bandit import BanditConfig, run_sweep, summarize
from posttrain.config import load_recipe
from posttrain.eval.report import markdown_table, plot_curves
from posttrain.files import atomic_write_text
from posttrain.runner import read_history, run_recipe
from posttrain.stats import sign_test_p

BANDIT = BanditConfig(eps_values=(0.2,), methods=("dpo", "cdpo", "rdpo"), seeds=20)


def demo_recipe_path() -> Path:
    """The demo recipe shipped inside the package (works from a checkout and from an installed wheel)."""
    return Path(str(resources.files("posttrain") / "demo.yaml"))


def _pm(mean: float | None, ci: float | None) -> str:
    return "n/a" if mean is None else f"{mean:.3f} ± {ci:.3f}"


def bandit_part(cfg: BanditConfig = BANDIT) -> dict:
    """Fit every method on every seed; the summary rows and the per-seed rDPO-vs-DPO win count."""
    t0 = time.perf_counter()
    rows = run_sweep(cfg)
    summary = summarize(rows)
    by = {(r["method"], r["seed"]): r["param_error"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    pairs = [(by[("rdpo", s)], by[("dpo", s)]) for s in seeds
             if by.get(("rdpo", s)) is not None and by.get(("dpo", s)) is not None]
    wins = sum(r < d for r, d in pairs)
    losses = sum(r > d for r, d in pairs)
    return {"summary": summary, "wins": wins, "losses": losses, "p": sign_test_p(wins, losses),
            "wall_s": time.perf_counter() - t0, "cfg": cfg}


def bandit_table(part: dict) -> tuple[list[str], list[list]]:
    headers = ["method", "flip rate", "‖β·θ − θ*‖ (lower is better)", "scale (1 = right)",
               "expected true reward", "‖β·θ − θ*‖ minus DPO's (paired)", "seeds used"]
    rows = [[s["method"], s["eps"], _pm(s["param_error_mean"], s["param_error_ci"]),
             _pm(s["scale_mean"], s["scale_ci"]), _pm(s["reward_mean"], s["reward_ci"]),
             "" if s["method"] == "dpo" else _pm(s["param_error_minus_dpo_mean"],
                                                 s["param_error_minus_dpo_ci"]),
             f"{s['used']}/{s['n']}"] for s in part["summary"]]
    return headers, rows


def sft_table(summary: dict) -> tuple[list[str], list[list]]:
    headers = ["model", "accuracy before", "accuracy after", "held-out problems", "train time (s)"]
    return headers, [["SmolLM2-135M-Instruct + LoRA SFT", round(summary["before"]["accuracy"], 3),
                      round(summary["after"]["accuracy"], 3), summary["after"]["n"],
                      round(summary["train"]["wall_time_s"], 1)]]


def write_report(bandit: dict, sft: dict, recipe, out_dir: Path, total_s: float) -> Path:
    hist = read_history(recipe.run_dir)
    png = plot_curves({"training loss": ([h["step"] for h in hist], [h["loss"] for h in hist])},
                      out_dir / "training.png", title="LoRA SFT on arithmetic: loss per step", ylabel="loss")
    cfg = bandit["cfg"]
    lora = recipe.model.lora
    samples = sft["after"]["samples"][:4]
    text = "\n".join([
        "# posttrain demo", "",
        "## 1. Robust DPO under flipped preference labels (log-linear bandit)", "",
        f"The setting of the rDPO paper's theory: d = {cfg.d} features, K = {cfg.n_actions} actions, "
        f"n = {cfg.n_pairs} pairs, β = {cfg.beta}, {cfg.seeds} seeds; each loss minimised by L-BFGS "
        f"on the same pairs; cDPO and rDPO are given the true flip rate. Mean ± 95% t-interval over seeds; "
        f"{bandit['wall_s']:.1f} s.", "",
        markdown_table(*bandit_table(bandit)), "",
        f"rDPO has the smaller parameter error than DPO on {bandit['wins']} of "
        f"{bandit['wins'] + bandit['losses']} seeds (two-sided sign test p = {bandit['p']:.2g}).", "",
        "## 2. LoRA SFT of the embedded model on arithmetic", "",
        f"- model: `{recipe.model.name}`, " + (f"LoRA r={lora.r}, alpha={lora.alpha}, targets={lora.targets}"
                                               if lora else "full fine-tune"),
        f"- data: {recipe.data.train.synthetic.n} built-in arithmetic problems (data seed "
        f"{recipe.data.train.synthetic.seed}); greedy answers on {sft['after']['n']} held-out problems",
        f"- seed {recipe.seed}; {recipe.train.max_steps} steps of "
        f"{recipe.train.micro_batch_size * recipe.train.grad_accum} examples; lr {recipe.train.lr}", "",
        markdown_table(*sft_table(sft)), "",
        f"![training]({png.name})", "",
        "Sample completions after training:", "",
        *[f"- {s['prompt']!r} → {s['completion']!r} (gold {s['gold']}, {'✓' if s['correct'] else '✗'})"
          for s in samples], "",
        f"One seed here; the gain over seeds is in docs/results/demo.md of the posttrain repository. "
        f"Total wall time {total_s:.0f} s.", ""])
    path = out_dir / "report.md"
    atomic_write_text(path, text)
    return path


def run_demo(out_dir: Path = Path("runs/demo"), overrides: list[str] | None = None, quiet: bool = False,
             bandit: BanditConfig = BANDIT) -> dict:
    t0 = time.time()
    out_dir = Path(out_dir)
    if not quiet:
        print(f"== 1/2 DPO, cDPO, rDPO on a log-linear bandit, {bandit.seeds} seeds, "
              f"flip rate {bandit.eps_values}")
    part1 = bandit_part(bandit)
    if not quiet:
        print(markdown_table(*bandit_table(part1)))
        print(f"\n== 2/2 LoRA SFT of the embedded model on arithmetic ({demo_recipe_path()})")
    recipe = load_recipe(demo_recipe_path(), [f"output_dir={out_dir}", "name=sft", *(overrides or [])])
    sft = run_recipe(recipe, resume=False, show_progress=not quiet)
    report = write_report(part1, sft, recipe, out_dir, time.time() - t0)
    print()
    print(markdown_table(*bandit_table(part1)))
    print(f"rDPO beats DPO on parameter error on {part1['wins']}/{part1['wins'] + part1['losses']} seeds "
          f"(sign test p = {part1['p']:.2g})\n")
    print(markdown_table(*sft_table(sft)))
    print(f"\nreport: {report}")
    return {"bandit": part1, "sft": sft}
