"""RSO's claim (METHODS.md §2): rso-sample-rank > sft-sample-rank > direct, for sigmoid-norm (dpo) and
hinge-norm losses. Every row is `posttrain train` of recipes/rso_arithmetic.yaml (or rso_direct.yaml)
with the overrides in its run's recipe.yaml; the two sampled variants share one candidate file."""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from experiments import RECIPES
from experiments.sweep import curve, publish, run_variant
from posttrain.eval.report import markdown_table, plot_curves

SOURCES = {"direct": None, "sft-sample-rank": "sft_sample_rank", "rso-sample-rank": "rso"}
LOSSES = {"sigmoid-norm": "dpo", "hinge-norm": "hinge_norm"}


def per_prompt(run_dir: Path) -> tuple[dict[str, bool], dict[str, bool]]:
    """{prompt: correct} of the greedy answers before and after training."""
    s = json.loads((run_dir / "summary.json").read_text())
    return ({x["prompt"]: x["correct"] for x in s["before"]["samples"]},
            {x["prompt"]: x["correct"] for x in s["after"]["samples"]})


def scores_on(common: list[str], before: dict, after: dict) -> dict:
    """Gold accuracy before/after and the win rate against the starting policy on the prompts `common`:
    a prompt is won when only the trained policy is right, lost in reverse, tied otherwise (ties half)."""
    w = sum(after[p] and not before[p] for p in common)
    lo = sum(before[p] and not after[p] for p in common)
    n = len(common)
    return {"before": sum(before[p] for p in common) / n, "after": sum(after[p] for p in common) / n,
            "win_rate": (w + 0.5 * (n - w - lo)) / n, "wtl": (w, n - w - lo, lo)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.rso")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--runs", default="runs/rso")
    a = ap.parse_args(argv)
    t0 = time.time()
    rows, table = {}, []
    # one candidate pool: the two sampled sources differ only in selection
    samples = f"{a.runs}/candidates.jsonl"
    for seed in a.seeds:
        for src, selection in SOURCES.items():
            for loss_label, loss in LOSSES.items():
                label = f"{src} / {loss_label}"
                common = [f"seed={seed}", f"output_dir={a.runs}"]
                if selection is None:
                    base, ov = RECIPES / "rso_direct.yaml", [f"method.name={loss}"]
                else:
                    base, ov = RECIPES / "rso_arithmetic.yaml", [f"method.selection={selection}",
                                                                 f"method.loss={loss}",
                                                                f"method.sampling.samples_file={samples}"]
                name = f"rso-bench-{src}-{loss}-seed{seed}"
                r = run_variant(base, [*ov, f"name={name}", *common])
                run_dir = Path(a.runs) / name
                stats = json.loads((run_dir / "rso_stats.json").read_text()) if selection else {}
                rows.setdefault(label, []).append({**r, "run_dir": run_dir, "rso": stats})
                print(label, seed, r.get("after_accuracy"), flush=True)
    # runs exclude their own training questions from the eval set, so the sets differ a little between
    # sources: score every run on the prompts all of them evaluated
    answers = {(label, i): per_prompt(r["run_dir"]) for label, rs in rows.items() for i, r in enumerate(rs)}
    common = sorted(set.intersection(*(set(after) for _, after in answers.values())))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    sd = lambda xs: math.sqrt(sum((x - mean(xs)) ** 2
                                  for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")  # noqa: E731
    for label, rs in rows.items():
        sc = [scores_on(common, *answers[(label, i)]) for i in range(len(rs))]
        acc = [x["after"] for x in sc]
        st = rs[0]["rso"]
        table.append([label, mean([x["before"] for x in sc]), mean(acc), sd(acc),
                      mean([x["win_rate"] for x in sc]),
                      " / ".join("-".join(map(str, x["wtl"])) for x in sc),
                      st.get("pairs", "given"), st.get("mean_reward_accepted", ""),
                      st.get("acceptance_rate", ""),
                      round(mean([r["train_time_s"] for r in rs]))])
    out = Path(a.out)
    png = plot_curves({k: curve(rs[0], "loss") for k, rs in rows.items()}, out / "rso_loss.png",
                      title="training loss (first seed)", ylabel="loss")
    r0 = next(iter(rows.values()))[0]
    text = "\n".join([
        "# RSO: rso-sample-rank vs sft-sample-rank vs direct", "",
        f"Reproduce: `python -m experiments.rso --seeds {' '.join(map(str, a.seeds))}` (each row is "
        "`posttrain train recipes/rso_arithmetic.yaml` or `recipes/rso_direct.yaml` with the overrides in "
        "its run's `recipe.yaml`).", "",
        "- model: SmolLM2-135M-Instruct (embedded), LoRA r16 all-linear; "
        "reference = starting model (precomputed)",
        "- prompts: 96 built-in arithmetic problems (seed 1); candidates: 16 per prompt from the starting "
        "policy (temperature 0.7, top-k 40, 40 new tokens), one shared pool",
        "- reward (for selection and labelling): math correctness 1, a wrong number gets closeness credit "
        "0.5 / (1 + |pred - gold| / (1 + |gold|)); gold metric: exact correctness only",
        "- rso-sample-rank: statistical rejection sampling, beta 0.5, 8 accepted per prompt, first-round "
        "pairs; sft-sample-rank: the first 8 candidates, first-round pairs; direct: 384 given pairs "
        "(chosen = correct worked answer, rejected = a wrong one)",
        f"- training: {r0['steps']} steps x 8 pairs, lr 5e-4, beta 0.1 (dpo = sigmoid-norm), "
        f"gamma 0.05 (hinge-norm)",
        f"- eval: the {len(common)} held-out problems every run evaluated (each run drops its own training "
        "questions from a 128-problem eval set), greedy, 48 new tokens; win rate vs the starting policy "
        "counts a prompt won when only the trained policy is right, lost in reverse, tied otherwise "
        "(ties count half)",
        f"- seeds {a.seeds}; wall time on 2 CPU cores: "
        f"{sum(r['wall_time_s'] for rs in rows.values() for r in rs) / 60:.1f} "
        "min summed over the runs (the first sampled run includes drawing the shared candidates; "
        "sampling and eval included); this report took {:.1f} min "
        "(finished runs are reused)".format((time.time() - t0) / 60), "",
        markdown_table(["source / loss", "accuracy before", "accuracy after (mean)", "sd over seeds",
                        "win rate vs start",
                        "wins-ties-losses per seed", "pairs", "mean reward of accepted", "acceptance rate",
                        "train s"], table), "",
        f"![loss]({png.name})", ""])
    return publish(out / "rso.md", text)


if __name__ == "__main__":
    sys.exit(main())
