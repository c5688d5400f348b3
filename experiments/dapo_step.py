"""Step-level DAPO vs rejection-sampling SFT and DPO on word problems (issue 18, METHODS.md section 5,
docs/results/dapo_step.md).

Every arm starts from the LoRA SFT model (recipes/sft_word_problems_lora.yaml, trained first if missing).
- dapo: recipes/dapo_step_word_problems.yaml, 2 iterations; accuracy after each;
- rs_sft: SFT on the correct responses among that run's own first-iteration samples (deduplicated);
- dpo: DPO on (correct, wrong) pairs from the same samples, up to `keep / 2` pairs per problem.
Greedy accuracy on the same held-out problems; paired sign tests over (problem, seed). Finished runs are
reused (`--report` trains nothing).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from experiments import RECIPES
from experiments.sweep import publish, run_variant
from posttrain.eval.report import markdown_table, plot_curves
from posttrain.files import read_jsonl, write_jsonl
from posttrain.stats import mean_ci, sign_test_p, wilson_interval

DAPO = RECIPES / "dapo_step_word_problems.yaml"
BASELINES = {"rs_sft": RECIPES / "dapo_step_rs_sft.yaml", "dpo": RECIPES / "dapo_step_dpo.yaml"}
SFT = RECIPES / "sft_word_problems_lora.yaml"
STAGES = ("sample", "states", "rollouts", "critic", "advantages", "train")


def baseline_data(run_dir: Path, out: Path, seed: int, keep: int) -> dict[str, Path]:
    """The baselines' training files from the DAPO run's first-iteration samples."""
    from posttrain.data.answers import grade
    paths = {"rs_sft": out / f"rs_sft-seed{seed}.jsonl", "dpo": out / f"dpo-seed{seed}.jsonl"}
    if all(p.is_file() for p in paths.values()):
        return paths
    by_prompt: dict[int, list[dict]] = {}
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        row = json.loads(line)
        by_prompt.setdefault(row["prompt_id"], []).append(row)
    sft, pairs = [], []
    for pid in sorted(by_prompt):
        rows = by_prompt[pid]
        right = list(dict.fromkeys(r["text"] for r in rows if r["text"] and grade(r["text"], r["answer"])))
        wrong = list(dict.fromkeys(r["text"] for r in rows if r["text"]
                                   and not grade(r["text"], r["answer"])))
        sft += [{"messages": rows[0]["prompt"] + [{"role": "assistant", "content": t}]} for t in right]
        rng = np.random.default_rng([seed, pid])
        for c, w in zip(rng.permutation(right)[:keep // 2], rng.permutation(wrong)[:keep // 2]):
            pairs.append({"prompt": rows[0]["prompt"], "chosen": str(c), "rejected": str(w)})
    out.mkdir(parents=True, exist_ok=True)
    # atomic: a file left half-written by a kill would be reused as complete above
    write_jsonl(paths["rs_sft"], sft)
    write_jsonl(paths["dpo"], pairs)
    return paths


def correct_of(result: dict) -> list[bool]:
    return [s["correct"] for s in result["samples"]]


def dapo_overrides(seed: int, a) -> list[str]:
    return [f"name=dapo-seed{seed}", f"seed={seed}", f"method.sampling.seed={seed}", f"output_dir={a.runs}",
            *a.overrides]


def run_baselines(seed: int, a) -> dict:
    """{arm label: its after-training eval} for the baselines whose data (the DAPO run's first-iteration
    samples) exists; trains the missing ones unless reporting."""
    from posttrain.config import load_recipe
    recipe = load_recipe(DAPO, dapo_overrides(seed, a))
    state = recipe.run_dir / "pipeline.json"
    if not state.is_file() or \
            json.loads(state.read_text())["stages"].get("sample", {}).get("status") != "done":
        return {}
    paths = baseline_data(recipe.run_dir, Path(a.runs) / "data", seed, recipe.method.get("keep", 6))
    arms = {}
    for arm, base in BASELINES.items():
        name = f"{arm}-seed{seed}"
        if run_variant(base, [f"name={name}", f"seed={seed}", f"data.train.path={paths[arm]}",
                              f"output_dir={a.runs}", *a.overrides], collect=a.report) is None:
            continue
        s = json.loads((Path(a.runs) / name / "summary.json").read_text())
        arms[{"rs_sft": "rejection-sampling SFT", "dpo": "DPO (correct vs wrong)"}[arm]] = s["after"] | {
            "steps": s["train"]["steps"], "examples": s["data"]["examples"], "wall_time_s": s["wall_time_s"]}
    return arms


def run_seed(seed: int, a) -> dict | None:
    """{arm: {"accuracy", "correct"}} for one seed, plus the DAPO run's stage records."""
    from posttrain.config import load_recipe
    over = dapo_overrides(seed, a)
    if run_variant(DAPO, over, collect=a.report) is None:
        return None
    recipe = load_recipe(DAPO, over)
    summary = json.loads((recipe.run_dir / "summary.json").read_text())
    its = summary["iterations"]
    arms = {"SFT start": its[0]["train"]["before"]}
    for t, it in enumerate(its, 1):
        arms[f"DAPO iteration {t}"] = it["train"]["after"]
    arms.update(run_baselines(seed, a))
    pipe = json.loads((recipe.run_dir / "pipeline.json").read_text())["stages"]
    folders = [(recipe.run_dir / f"iter-{t}") if t > 1 else recipe.run_dir for t in range(1, len(its) + 1)]
    critic = [json.loads((f / "critic_eval.json").read_text()) for f in folders]
    filters = [json.loads((f / "dapo_stats.json").read_text()) | {"data": data_spreads(f, recipe)}
               for f in folders]
    return {"seed": seed, "arms": arms, "pipeline": pipe, "critic": critic, "filters": filters,
            "train_steps": [it["train"]["train"]["steps"] for it in its]}


def data_spreads(folder: Path, recipe) -> dict:
    """How many of an iteration's states the spread filter would keep if each candidate were valued by its own
    completions (dapo_step.data.mc_spreads), beside the critic's count."""
    from posttrain.methods.dapo_step import data as dd
    targets = read_jsonl(folder / "targets.jsonl")
    spreads = dd.mc_spreads(targets)
    min_spread = recipe.method.get("min_spread", 0.1)
    return {"states": len(targets), "with_two_or_more": len(spreads),
            "kept_by_mc": sum(x >= min_spread for x in spreads),
            "median_mc_spread": round(float(np.median(spreads)), 3) if spreads else None}


CALIBRATION_COLUMNS = ("Brier of the training states' mean target (baseline)",
                       "Brier of the held-out states' own mean target (lower bound)")


def calibration_row(c: dict) -> list[str]:
    """[states, Brier, Brier of the training states' mean, of the held-out states' own mean, train Brier] of
    one critic_eval.json; n/a where the file lacks a value (older files have no training-mean baseline and
    call the own-mean Brier `brier_of_the_mean`)."""
    h, tr = c["heldout"], c["train"]

    def f(x) -> str:
        return "n/a" if x is None else f"{x:.4f}"
    return [h["states"], f(h.get("brier")), f(h.get("brier_of_the_train_mean")),
            f(h.get("brier_of_own_mean", h.get("brier_of_the_mean"))), f(tr.get("brier"))]


def paired(x: list[list[bool]], y: list[list[bool]]) -> tuple[int, int]:
    w = sum(a and not b for xs, ys in zip(x, y) for a, b in zip(xs, ys))
    l_ = sum(b and not a for xs, ys in zip(x, y) for a, b in zip(xs, ys))
    return w, l_


def report(rows: list[dict], a) -> int:
    out = Path(a.out)
    arms = [k for k in rows[0]["arms"] if all(k in r["arms"] for r in rows)]
    n = rows[0]["arms"]["SFT start"]["n"]
    start = [correct_of(r["arms"]["SFT start"]) for r in rows]
    table = []
    for arm in arms:
        acc = [r["arms"][arm]["accuracy"] for r in rows]
        m, half = mean_ci(acc)
        cor = [correct_of(r["arms"][arm]) for r in rows]
        w, l_ = paired(cor, start)
        table.append([arm, f"{m:.3f}" + ("" if half != half else f" ± {half:.3f}"),
                      ", ".join(f"{x:.2f}" for x in acc),
                      "" if arm == "SFT start" else f"{w} / {l_}, p = {sign_test_p(w, l_):.3f}"])
    last = f"DAPO iteration {max(int(k.split()[-1]) for k in arms if k.startswith('DAPO'))}"
    versus = []
    for arm in arms:
        if arm.startswith("DAPO") or arm == "SFT start":
            continue
        w, l_ = paired([correct_of(r["arms"][last]) for r in rows],
                       [correct_of(r["arms"][arm]) for r in rows])
        versus.append(f"{last} vs {arm}: {w} / {l_} discordant (DAPO right only / {arm} right only), "
                      f"sign test p = {sign_test_p(w, l_):.3f}")
    lo, hi = wilson_interval(round(np.mean([r["arms"]["SFT start"]["accuracy"] for r in rows]) * n), n)
    # stage counts and times
    stage_rows = []
    for r in rows:
        for key, rec in r["pipeline"].items():
            it, _, st = key.rpartition("/")
            st_stats = rec.get("stats", {})
            keep = {k: v for k, v in st_stats.items() if isinstance(v, (int, float)) and k in (
                "states", "completions", "responses", "responses_correct", "problems_all_correct",
                "problems_all_wrong", "states_kept", "actions", "dropped_single_candidate",
                "dropped_small_spread",
                "sampling_new_tokens", "mean_mc_target", "mean_candidates_per_state", "steps",
                "heldout_brier")}
            if st == "train":
                keep["actor steps"] = r["train_steps"][int(it.split("-")[1]) - 1 if it else 0]
            stage_rows.append([r["seed"], it or "iter-1", st, rec.get("wall_time_s", ""),
                               ", ".join(f"{k} {round(v, 4) if isinstance(v, float) else v}"
                                         for k, v in keep.items())])
    calib_rows, curves = [], {}
    for r in rows:
        for t, c in enumerate(r["critic"], 1):
            h = c["heldout"]
            calib_rows.append([r["seed"], t, *calibration_row(c)])
            rel = h.get("reliability", [])
            curves[f"seed {r['seed']} iteration {t}"] = ([b["mean_value"] for b in rel],
                                                         [b["mean_target"] for b in rel])
    curves["ideal"] = ([0.0, 1.0], [0.0, 1.0])
    png = plot_curves(curves, out / "dapo_step_reliability.png",
                      title="critic reliability, held-out problems' states",
                      xlabel="predicted V(s)", ylabel="MC target (fraction correct)")
    filter_rows = [[r["seed"], t, f["states"], f["data"]["with_two_or_more"], f["states_kept"],
                    " / ".join(map(str, f.get("spread_quantiles") or [])), f["data"]["kept_by_mc"],
                    f["data"]["median_mc_spread"]] for r in rows for t, f in enumerate(r["filters"], 1)]
    seeds = [r["seed"] for r in rows]
    lines = ["## Results", "",
             f"Reproduce: `python -m experiments.dapo_step --seeds {' '.join(map(str, seeds))}` "
             f"then `--report`.", "",
             f"Greedy accuracy on the same {n} held-out word problems (seeds {seeds}; ± is a 95% t interval "
             f"over seeds and excludes the eval set's own sampling error: the start's Wilson interval on {n} "
             f"problems is {lo:.3f}-{hi:.3f}). Paired = (problem, seed) pairs where the arm is right and the "
             "start wrong / the reverse, exact sign test.", "",
             markdown_table(["arm", "accuracy", "per seed", "paired vs start (W / L)"], table), "",
             *[f"- {v}" for v in versus], "",
             "### Critic calibration (held-out problems' states)", "",
             ("Brier = the critic's on the held-out problems' states. Baseline = always predicting the "
              "training states' mean target, the constant a predictor could know (n/a: a critic_eval.json "
              "written before it was recorded). Own mean = always predicting the held-out states' own mean "
              "target: the lowest Brier of any constant, a lower bound rather than a baseline. Train Brier = "
              "the critic's on its training states."), "",
             markdown_table(["seed", "iteration", "states", "Brier", *CALIBRATION_COLUMNS, "train Brier"],
                            calib_rows), "",
             f"![reliability]({png.name})", "",
             "### The spread filter: the critic's values against the completions' own returns", "",
             "Kept = states with an advantage spread of at least the recipe's min_spread. By the critic: "
             "what the actor trained on. By MC: the same rule when each candidate step is valued by the "
             "fraction of the state's completions that began with it and were correct (1-4 completions per "
             "candidate, so noisy and biased towards large spreads; a diagnostic of the data, not of the "
             "method).", "",
             markdown_table(["seed", "iteration", "states", "states with >= 2 candidates",
                             "kept by the critic",
                             "critic spread median / p90 / max", "kept by MC", "MC spread median"],
                            filter_rows), "",
             "### Stages: counts and wall time (s)", "",
             markdown_table(["seed", "iteration", "stage", "wall s", "counts"], stage_rows), "",
             "Baselines: " + "; ".join(f"{arm} seed {r['seed']}: {r['arms'][arm].get('examples')} examples, "
                                      f"{r['arms'][arm].get('steps')} steps, "
                                      f"{r['arms'][arm].get('wall_time_s')} s"
                                      for r in rows for arm in arms if "steps" in r["arms"][arm]), ""]
    return publish(out / "dapo_step_results.md", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.dapo_step", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--baselines-only", action="store_true",
                    help="train only the baselines (they need just the DAPO run's first-iteration samples)")
    ap.add_argument("--runs", default="runs/dapo_step")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args(argv)
    if not a.report:
        run_variant(SFT, [])  # the starting model (reused when runs/sft-word-problems-lora is there)
    if a.baselines_only:
        for s in a.seeds:
            print(s, {k: v["accuracy"] for k, v in run_baselines(s, a).items()}, flush=True)
        return 0
    rows = [r for s in a.seeds if (r := run_seed(s, a)) is not None]
    if a.report and rows:
        return report(rows, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
