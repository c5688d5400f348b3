"""DPO vs RPO on the same pairs (METHODS.md section 1: "DPO drives logp(chosen) down during training,
RPO keeps it up and wins"). Every variant is `posttrain train recipes/rpo_vs_dpo.yaml` plus overrides."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from experiments import RECIPES
from experiments.sweep import curve, publish, run_variant
from posttrain.eval.report import markdown_table, plot_curves

BASE = RECIPES / "rpo_vs_dpo.yaml"
VARIANTS = {
    "dpo": ["method.name=dpo"],
    "rpo (eta 0.005, paper)": ["method.name=rpo", "method.eta=0.005"],
    "rpo (eta 1)": ["method.name=rpo", "method.eta=1.0"],
    "rpo_token_mean (alpha 0.2)": ["method.name=rpo_token_mean", "method.alpha=0.2"],
}
TOKEN_MEAN = "rpo_token_mean (alpha 0.2)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.rpo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--runs", default="runs/rpo")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    a = ap.parse_args(argv)
    t0 = time.time()
    variants = "" if a.variants == list(VARIANTS) else " --variants " + " ".join(f'"{v}"' for v in a.variants)
    rows = {}
    for label in a.variants:
        slug = label.split(" ")[0] + ("" if "(" not in label
                                      else "-" + label.split("(")[1].split(")")[0].replace(" ", ""))
        rows[label] = run_variant(BASE, [*VARIANTS[label], f"name=rpo-bench-{slug}-seed{a.seed}",
                                         f"seed={a.seed}", f"output_dir={a.runs}"])
        print(label, {k: rows[label].get(k) for k in ("after_accuracy", "eval/logps/chosen")}, flush=True)
    out = Path(a.out)
    png = plot_curves({k: curve(r, "logps/chosen") for k, r in rows.items()}, out / "rpo_logp_chosen.png",
                      title="policy log-prob of the chosen reply (training batches)",
                      ylabel="logp(chosen), summed")
    r0 = next(iter(rows.values()))
    table = [[k, r.get("before_accuracy", float("nan")), r["after_accuracy"], curve(r, "logps/chosen")[1][0],
              curve(r, "logps/chosen")[1][-1], r.get("eval/logps/chosen"), r.get("eval/rewards/accuracy")]
             for k, r in rows.items()]
    text = "\n".join([
        "# RPO vs DPO: chosen log-likelihood and gold accuracy", "",
        f"Reproduce: `python -m experiments.rpo --seed {a.seed}{variants}` (each row is `posttrain train "
        "recipes/rpo_vs_dpo.yaml` with the overrides in its run's `recipe.yaml`).", "",
        "- model: SmolLM2-135M-Instruct (embedded), LoRA; reference = starting model (precomputed)",
        "- data: built-in arithmetic pairs (chosen = correct answer, rejected = wrong answer, no flips); "
        "held-out problems for the gold accuracy (greedy) and held-out pairs for eval log-probs",
        f"- seed {a.seed}; {r0['steps']} steps per run; total wall time "
        f"{(time.time() - t0) / 60:.1f} min on 2 CPU cores",
        "- RPO = DPO + eta*beta*(summed NLL of chosen) (paper and official code; beta 0.1, so eta 1 is a "
        "coefficient of 0.1); rpo_token_mean = DPO + alpha*(token-mean NLL of chosen) (OpenRLHF variant)"
        + ("" if TOKEN_MEAN in rows else ", not run here"), "",
        markdown_table(["variant", "accuracy before", "accuracy after", "logp(chosen) step 1",
                        "logp(chosen) last step",
                        "eval logp(chosen)", "eval pair accuracy"], table), "",
        f"![logp chosen]({png.name})", ""])
    return publish(out / "rpo.md", text)


if __name__ == "__main__":
    sys.exit(main())
