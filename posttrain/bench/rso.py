"""RSO's claim (METHODS.md §2): rso-sample-rank > sft-sample-rank > direct, for sigmoid-norm (dpo) and
hinge-norm losses. Every row is `posttrain train` of recipes/rso_arithmetic.yaml (or rso_direct.yaml)
with the overrides in its run's recipe.yaml; the two sampled variants share one candidate file."""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from posttrain.bench.sweep import curve, run_variant
from posttrain.eval.report import atomic_write_text, markdown_table, plot_curves

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SOURCES = {"direct": None, "sft-sample-rank": "sft_sample_rank", "rso-sample-rank": "rso"}
LOSSES = {"sigmoid-norm": "dpo", "hinge-norm": "hinge_norm"}


def win_rate(run_dir: Path) -> tuple[float, int, int, int]:
    """Against the starting policy on the same held-out prompts: (win rate with ties as half, wins, ties,
    losses), from per-prompt gold correctness of the greedy answers before and after training."""
    s = json.loads((run_dir / "summary.json").read_text())
    before, after = s["before"]["samples"], s["after"]["samples"]
    assert [b["prompt"] for b in before] == [a["prompt"] for a in after]
    w = sum(a["correct"] and not b["correct"] for a, b in zip(after, before))
    lo = sum(b["correct"] and not a["correct"] for a, b in zip(after, before))
    t = len(after) - w - lo
    return (w + 0.5 * t) / len(after), w, t, lo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="posttrain bench rso")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--runs", default="runs/rso")
    a = ap.parse_args(argv)
    t0 = time.time()
    rows, table = {}, []
    samples = f"{a.runs}/candidates.jsonl"  # one candidate pool: the two sampled sources differ only in selection
    for seed in a.seeds:
        for src, selection in SOURCES.items():
            for loss_label, loss in LOSSES.items():
                label = f"{src} / {loss_label}"
                common = [f"seed={seed}", f"output_dir={a.runs}"]
                if selection is None:
                    base, ov = RECIPES / "rso_direct.yaml", [f"method.name={loss}"]
                else:
                    base, ov = RECIPES / "rso_arithmetic.yaml", [f"method.selection={selection}", f"method.loss={loss}",
                                                                f"method.sampling.samples_file={samples}"]
                name = f"rso-bench-{src}-{loss}-seed{seed}"
                r = run_variant(base, [*ov, f"name={name}", *common])
                run_dir = Path(a.runs) / name
                wr, w, t, lo = win_rate(run_dir)
                stats = json.loads((run_dir / "rso_stats.json").read_text()) if selection else {}
                rows.setdefault(label, []).append({**r, "win_rate": wr, "wtl": (w, t, lo), "rso": stats})
                print(label, seed, r.get("after_accuracy"), wr, flush=True)
    for label, rs in rows.items():
        acc = [r["after_accuracy"] for r in rs]
        wrs = [r["win_rate"] for r in rs]
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        sd = lambda xs: math.sqrt(sum((x - mean(xs)) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")  # noqa: E731
        st = rs[0]["rso"]
        table.append([label, rs[0].get("before_accuracy"), mean(acc), sd(acc), mean(wrs),
                      " / ".join("-".join(map(str, r["wtl"])) for r in rs),
                      st.get("pairs", "given"), st.get("mean_reward_accepted", ""), st.get("acceptance_rate", ""),
                      round(mean([r["train_time_s"] for r in rs]))])
    out = Path(a.out)
    png = plot_curves({k: curve(rs[0], "loss") for k, rs in rows.items()}, out / "rso_loss.png",
                      title="training loss (first seed)", ylabel="loss")
    r0 = next(iter(rows.values()))[0]
    text = "\n".join([
        "# RSO: rso-sample-rank vs sft-sample-rank vs direct", "",
        f"Reproduce: `posttrain bench rso --seeds {' '.join(map(str, a.seeds))}` (each row is `posttrain train "
        "recipes/rso_arithmetic.yaml` or `recipes/rso_direct.yaml` with the overrides in its run's `recipe.yaml`).", "",
        "- model: SmolLM2-135M-Instruct (embedded), LoRA r16 all-linear; reference = starting model (precomputed)",
        "- prompts: 96 built-in arithmetic problems (seed 1); candidates: 16 per prompt from the starting policy "
        "(temperature 0.7, top-k 40, 40 new tokens), one shared pool",
        "- reward (for selection and labelling): math correctness 1, a wrong number gets closeness credit "
        "0.5 / (1 + |pred - gold| / (1 + |gold|)); gold metric: exact correctness only",
        "- rso-sample-rank: statistical rejection sampling, beta 0.5, 8 accepted per prompt, first-round pairs; "
        "sft-sample-rank: the first 8 candidates, first-round pairs; direct: 384 given pairs (chosen = correct "
        "worked answer, rejected = a wrong one)",
        f"- training: {r0['steps']} steps x 8 pairs, lr 5e-4, beta 0.1 (dpo = sigmoid-norm), gamma 0.05 (hinge-norm)",
        f"- eval: {r0.get('eval_n')} held-out problems, greedy, 48 new tokens; win rate vs the starting policy counts a "
        "prompt won when only the trained policy is right, lost in reverse, tied otherwise (ties count half)",
        f"- seeds {a.seeds}; total wall time {(time.time() - t0) / 60:.1f} min on 2 CPU cores (runs reused when "
        "already finished)", "",
        markdown_table(["source / loss", "accuracy before", "accuracy after (mean)", "sd over seeds", "win rate vs start",
                        "wins-ties-losses per seed", "pairs", "mean reward of accepted", "acceptance rate",
                        "train s"], table), "",
        f"![loss]({png.name})", ""])
    atomic_write_text(out / "rso.md", text)
    print(out / "rso.md")
    return 0
