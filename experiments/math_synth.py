"""The math-synthesis experiment (issue 15, docs/results/math_synth.md): does SFT on the teacher's filtered
synthetic solutions match SFT on the original gold solutions at equal count, and does question augmentation
add? Run from a checkout after `posttrain synth math recipes/synth_math.yaml`:

    python -m experiments.math_synth --synth-run runs/synth-math --seeds 0 1

It writes its tables to docs/results/math_synth_results.md (`--out` names the folder) and nothing else
there: math_synth.md, the setup and the reading, is written by hand. Finished runs and evaluations are
reused; `--report` trains and evaluates nothing and writes the page from the finished evaluations.

Training sets, each one row per (problem, solution), the user turn = the `eval math` prompt:
- gold: every seed problem with its original gold solution (built-in word problems: the generator's
  worked solution; GSM8K: the cleaned reference solution);
- synthetic: the synthetic solutions of seed problems, one per problem in problem order, cycling through
  each problem's kept solutions until the count equals gold's (problems with none kept are left out);
- synthetic+questions: synthetic plus one kept solution per new problem.
Each set trains a fresh LoRA on the base model for the same number of steps and batch; accuracy (greedy,
`eval math`) on held-out word problems and a GSM8K test subset, per seed, with intervals over seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.sweep import publish
from posttrain.stats import mean_ci, sign_test_p, wilson_interval


def gold_rows(synth_run: Path) -> list[dict]:
    from posttrain.files import read_jsonl
    from posttrain.synth.config import load_synth_recipe
    from posttrain.synth.math import sft_row
    from posttrain.tasks.sources import load_source
    recipe = load_synth_recipe(synth_run / "recipe.yaml")
    seeds = read_jsonl(synth_run / "seeds.jsonl")
    convs = [c for src in recipe.seeds for c in load_source(src, "sft")]
    if len(convs) != len(seeds):
        raise SystemExit(f"{len(convs)} gold conversations for {len(seeds)} seed problems: "
                         f"the seed sources changed")
    return [sft_row(s["problem"], c.messages[-1]["content"], origin="gold") for s, c in zip(seeds, convs)]


def synthetic_rows(synth_run: Path, count: int, with_questions: bool) -> list[dict]:
    rows = [json.loads(x) for x in (synth_run / "synth.jsonl").read_text().splitlines() if x.strip()]
    by_problem: dict[str, list[dict]] = {}
    for r in rows:
        if r["origin"] == "seed":
            by_problem.setdefault(r["problem_id"], []).append(r)
    groups = list(by_problem.values())
    out, k = [], 0
    while groups and len(out) < count:
        g = groups[k % len(groups)]
        out.append(g[(k // len(groups)) % len(g)])
        k += 1
    if with_questions:
        seen = set()
        for r in rows:
            if r["origin"] == "new" and r["problem_id"] not in seen:
                seen.add(r["problem_id"])
                out.append(r)
    return out


def write_set(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"messages": r["messages"]}) + "\n" for r in rows))
    return path


RESULTS_PAGE = "math_synth_results.md"
ARMS = {"gold": "gold", "synthetic": "synthetic", "synthetic+questions": "synthetic + new problems"}
EVALS = {"word_problems": "word problems", "gsm8k": "GSM8K"}
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


def run_name(arm: str) -> str:
    return arm.replace("+", "_")


def train_and_eval(data: Path, name: str, seed: int, a) -> dict | None:
    """The run's evaluation (trained and evaluated unless finished before); None under --report when
    it is not finished."""
    from experiments.sweep import run_variant
    from posttrain.eval.math import evaluate, load_items
    from posttrain.export import load_run
    run = Path(a.runs) / f"{name}-seed{seed}"
    done = run / f"eval_math_{a.eval_limit}_{a.max_new_tokens}.json"  # a rerun reuses finished evaluations
    if done.is_file():
        prev = json.loads(done.read_text())
        if "gsm8k_correct" in prev:  # older files lack the per-problem grades the paired test needs
            return prev
    if a.report:
        return None
    base = Path(__file__).resolve().parents[1] / "recipes" / "sft_word_problems_lora.yaml"
    row = run_variant(base, [f"name={name}-seed{seed}", f"output_dir={a.runs}", f"seed={seed}",
                             f"data.train={{path: {data}}}", "data.eval=null", "generation_eval=null",
                             f"train.max_steps={a.steps}", *a.overrides])
    model, tok, *_ = load_run(run)
    out = {"name": name, "seed": seed, "train_time_s": row["train_time_s"]}
    for label, path in (("word_problems", a.heldout), ("gsm8k", "gsm8k")):
        res = evaluate(model, tok, load_items(path, limit=a.eval_limit), max_new_tokens=a.max_new_tokens,
                       batch_size=32)
        out[label] = res["greedy_accuracy"]
        out[f"{label}_n"] = res["n"]
        out[f"{label}_correct"] = [bool(r["correct"]) for r in res["rows"]]
    done.write_text(json.dumps(out))
    return out


def paired_counts(results: list[dict], arm: str, base: str, key: str) -> tuple[int, int]:
    """(arm right and base wrong, base right and arm wrong) over every problem of every seed both ran."""
    by = {(r["name"], r["seed"]): r[f"{key}_correct"] for r in results}
    wins = losses = 0
    for (name, seed), arm_ok in by.items():
        if name != arm or (base, seed) not in by:
            continue
        for x, y in zip(arm_ok, by[(base, seed)]):
            wins += x and not y
            losses += y and not x
    return wins, losses


def heldout_file(path: Path, n: int) -> Path:
    """Held-out built-in word problems (generator seed 2, never a seed problem) as an eval file."""
    from posttrain.tasks.synthetic import generate, to_prompt_rows
    rows = to_prompt_rows(generate("word_problems", n, seed=2, steps=[2, 3]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"problem": r["prompt"], "answer": r["answer"]}) + "\n" for r in rows))
    return path


def accuracy_cell(acc: float, n: int) -> str:
    # two decimals as the page shows them; past 100 problems one problem moves an accuracy by under 0.01
    return f"{acc:.2f}" if n <= 100 else f"{acc:.3f}"


def report(results: list[dict], a) -> str:
    """The results page: accuracies per arm and seed with a t interval over seeds, and the paired sign
    tests against gold. `results`: one evaluation per (arm, seed), with "rows" (the arm's training rows)."""
    seeds = sorted({r["seed"] for r in results})
    arms = [arm for arm in ARMS if any(r["name"] == run_name(arm) for r in results)]
    per_seed = ", ".join(f"seed {s}" for s in seeds)
    command = (f"python -m experiments.math_synth --synth-run {a.synth_run} "
               f"--seeds {' '.join(map(str, a.seeds))} --steps {a.steps} --eval-limit {a.eval_limit}"
               + (f" --max-new-tokens {a.max_new_tokens}" if a.max_new_tokens != 256 else "")
               + "".join(f" {o}" for o in a.overrides))
    lines = ["# Math synthesis part 2: SFT on gold vs synthetic solutions (results)", "",
             f"Written by `{command}` (`--report`: from the finished evaluations alone); do not edit by "
             "hand. The setup and the reading: [math_synth.md](math_synth.md).", "",
             f"| training set | rows | word problems: {per_seed} | mean ± 95% t ({len(seeds)} "
             f"seed{'s' if len(seeds) != 1 else ''}) | GSM8K: {per_seed} | mean ± 95% t |",
             "|---|---:|---:|---:|---:|---:|"]
    for arm in arms:
        rs = sorted((r for r in results if r["name"] == run_name(arm)), key=lambda r: r["seed"])
        cells = []
        for k in EVALS:
            cells.append(", ".join(accuracy_cell(r[k], r[f"{k}_n"]) for r in rs))
            m, ci = mean_ci([r[k] for r in rs])
            cells.append(f"{m:.3f}" + ("" if ci != ci else f" ± {ci:.3f}"))
        lines.append(f"| {ARMS[arm]} | {rs[0]['rows']} | " + " | ".join(cells) + " |")
    lines += ["",
              "Paired against gold over the same (problem, seed) pairs — problems one arm solved and the "
              "other did not,", "exact two-sided sign test:", "",
              "| arm vs gold | eval set | arm only | gold only | sign test p |", "|---|---|---:|---:|---:|"]
    for arm in arms[1:]:
        for k, label in EVALS.items():
            wins, losses = paired_counts(results, run_name(arm), "gold", k)
            lines.append(f"| {ARMS[arm]} | {label} | {wins} | {losses} | {sign_test_p(wins, losses):.3f} |")
    n = results[0]["gsm8k_n"]
    lo, hi = wilson_interval(n // 10, n)
    dof = len(seeds) - 1
    wilson = f"(10% accuracy on {n} problems alone has a Wilson interval of {lo:.3f}–{hi:.3f})."
    if dof:
        lines += ["",
                  f"The t intervals ({NUMBERS.get(dof, str(dof))} degree{'s' if dof != 1 else ''} "
                  "of freedom) are over seeds on fixed eval sets and exclude the eval sets' own",
                  f"sampling error {wilson}", ""]
    else:
        lines += ["", f"One seed: no interval over seeds; the eval sets' own sampling error {wilson}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.math_synth", description=__doc__.split("\n")[0])
    ap.add_argument("--synth-run", default="runs/synth-math")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--eval-limit", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--runs", default="runs/math-synth")
    ap.add_argument("--out", default="docs/results", help=f"the folder {RESULTS_PAGE} is written to")
    ap.add_argument("--report", action="store_true",
                    help="train and evaluate nothing: write the page from the "
                                                          "finished evaluations under --runs")
    ap.add_argument("overrides", nargs="*",
                    help="key.sub=value overrides of every training run (e.g. a tiny model)")
    a = ap.parse_args(argv)
    synth_run, runs = Path(a.synth_run), Path(a.runs)
    if not a.report:
        a.heldout = str(heldout_file(runs / "heldout_word_problems.jsonl", a.eval_limit))
    gold = gold_rows(synth_run)
    sets = {"gold": gold, "synthetic": synthetic_rows(synth_run, len(gold), False),
            "synthetic+questions": synthetic_rows(synth_run, len(gold), True)}
    results, missing = [], []
    for name, rows in sets.items():
        data = runs / "data" / f"{run_name(name)}.jsonl"
        if not a.report:
            write_set(rows, data)
        for seed in a.seeds:
            r = train_and_eval(data, run_name(name), seed, a)
            if r is None:
                missing.append(f"{run_name(name)}-seed{seed}")
            else:
                results.append({**r, "rows": len(rows)})
    if missing:
        raise SystemExit(f"--report: no finished evaluation "
                         f"(eval_math_{a.eval_limit}_{a.max_new_tokens}.json) for {', '.join(missing)} "
                         f"under {runs}; run without --report to train and evaluate them")
    return publish(Path(a.out) / RESULTS_PAGE, report(results, a))


if __name__ == "__main__":
    sys.exit(main())
