"""Noisy preferences on the embedded model (METHODS.md section 1, claim (b)).

Pairs come from built-in arithmetic: the chosen reply has the right answer, the rejected one a
wrong answer, then each label is flipped with probability eps. DPO, cDPO and rDPO (the last two
told the true eps) train the embedded model with LoRA from the same start; the gold reward is the
accuracy of greedy answers on held-out problems, and the reward accuracy on clean held-out pairs.
Every cell is `posttrain train recipes/noisy_preferences_lm.yaml` plus the overrides in its row.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments import RECIPES
from experiments.sweep import run_variant
from posttrain.bandit import SECTION_B
from posttrain.eval.report import markdown_table, plot_curves
from posttrain.files import atomic_write_text
from posttrain.stats import mean_ci

BASE = RECIPES / "noisy_preferences_lm.yaml"
METHODS = ("dpo", "cdpo", "rdpo")


def overrides(method: str, eps: float, seed: int, output_dir: str) -> list[str]:
    ov = [f"name=noisy-{method}-eps{eps:g}-seed{seed}", f"seed={seed}", f"method.name={method}",
          f"data.train.synthetic.options.flip_rate={eps}", f"output_dir={output_dir}"]
    if method in ("cdpo", "rdpo"):
        ov.append(f"method.eps={eps}")
    return ov


def run(eps_values: list[float], seeds: list[int], methods=METHODS, base: Path = BASE,
        output_dir: str = "runs/noisy_lm") -> list[dict]:
    rows = []
    for seed in seeds:
        for eps in eps_values:
            for m in methods:
                if m != "dpo" and eps == 0:
                    continue  # at eps = 0 cdpo and rdpo are dpo (tested); no need to train them again
                row = run_variant(base, overrides(m, eps, seed, output_dir))
                row.update(method=m, eps=eps)
                rows.append(row)
                print(json.dumps({k: row.get(k) for k in ("method", "eps", "seed", "before_accuracy",
                                                          "after_accuracy", "eval/rewards/accuracy",
                                                          "wall_time_s")}),
                      flush=True)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    for eps in sorted({r["eps"] for r in rows}):
        for m in METHODS:
            cell = [r for r in rows if r["eps"] == eps
                    and (r["method"] == m or (eps == 0 and r["method"] == "dpo"))]
            if not cell:
                continue
            acc = mean_ci([r["after_accuracy"] for r in cell])
            pref = mean_ci([r["eval/rewards/accuracy"] for r in cell if "eval/rewards/accuracy" in r])
            out.append({"method": m, "eps": eps, "n": len(cell), "accuracy": acc, "pair_accuracy": pref})
    return out


def _cell(m_ci: tuple[float, float]) -> str:
    m, ci = m_ci
    return f"{m:.3f}" if ci != ci else f"{m:.3f} ± {ci:.3f}"


READING_MARK = "Reading:"


def kept_reading(existing: str) -> str:
    """The hand-written "Reading: ..." paragraph of an earlier section (b), kept when the table is rewritten:
    a reading is written by a person after the numbers, never by this code."""
    if SECTION_B not in existing:
        return f"{READING_MARK} pending — write it after reading the numbers above."
    section = existing[existing.index(SECTION_B):]
    for para in section.split("\n\n"):
        if para.startswith(READING_MARK):
            return para.strip()
    return f"{READING_MARK} pending — write it after reading the numbers above."


def write_section(rows: list[dict], out_dir: Path, wall: float) -> Path:
    summary = summarize(rows)
    before = sorted({r["before_accuracy"] for r in rows})
    eps_values = sorted({s["eps"] for s in summary})
    seeds = sorted({r["seed"] for r in rows})
    has_pairs = any(s["pair_accuracy"][0] == s["pair_accuracy"][0] for s in summary)  # not all nan
    table = [[s["method"] + (" (= dpo run)" if s["eps"] == 0 and s["method"] != "dpo" else ""),
              f"{s['eps']:g}",
              s["n"],
              _cell(s["accuracy"])] + ([_cell(s["pair_accuracy"])] if has_pairs else []) for s in summary]
    series = {}
    for m in METHODS:
        pts = [(s["eps"], s["accuracy"][0]) for s in summary if s["method"] == m]
        series[m] = ([p[0] for p in pts], [p[1] for p in pts])
    png = plot_curves(series, out_dir / "noisy_preferences_lm.png",
                      title="embedded model: gold accuracy vs flip rate",
                      xlabel="label flip rate eps", ylabel="held-out answer accuracy")
    base = BASE.read_text()
    path = out_dir / "noisy_preferences.md"
    existing = path.read_text() if path.exists() else ""
    r0 = rows[0]
    lines = [SECTION_B, "",
             "Reproduce: `python -m experiments.noisy_lm` (each cell is "
             "`posttrain train recipes/noisy_preferences_lm.yaml` with the overrides listed in the run's "
             "`recipe.yaml`).", "",
             "- model: SmolLM2-135M-Instruct (embedded), LoRA; reference = the starting model (precomputed)",
             "- data: built-in arithmetic pairs (chosen = correct answer, rejected = a wrong answer in the "
             "same format), labels flipped at rate eps; cDPO and rDPO are given the true eps",
             f"- steps per run: {r0['steps']}; seeds: {seeds}; eps: {eps_values}; "
             f"total wall time of the runs {wall / 60:.1f} min on 2 CPU cores, one torch thread, sharing the "
             f"CPU with another job (about {r0['train_time_s']:.0f} s of training per run)",
             f"- gold reward: greedy answer accuracy on {rows[0]['eval_n']} held-out problems "
             f"(start: {before[0]:.3f})" + ("; pair accuracy: share of clean held-out pairs where the "
                                            "implicit reward ranks the correct reply first"
                                            if has_pairs else ""), "",
             markdown_table(["method", "eps", "runs",
                             "answer accuracy (mean ± 95% CI over runs; one run: no interval, and none "
                             "includes the eval set's sampling error)"]
                            + (["clean pair accuracy"] if has_pairs else []), table), "",
             kept_reading(existing), "",
             f"![accuracy vs eps]({png.name})", "", "Base recipe:", "", "```yaml", base.strip(), "```", ""]
    head = existing.split(SECTION_B)[0] if SECTION_B in existing else existing + "\n"
    atomic_write_text(path, head + "\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.noisy_lm")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.0, 0.2, 0.4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--runs", default="runs/noisy_lm")
    a = ap.parse_args(argv)
    rows = run(a.eps, a.seeds, output_dir=a.runs)
    print(write_section(rows, Path(a.out), sum(r["wall_time_s"] for r in rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
