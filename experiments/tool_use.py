"""TL-Training ablation on tool use (issue 19, METHODS.md section 7, docs/results/tool_use.md).

`--prepare` writes the data under <runs>/data: Seal-Tools dev examples (their gold tools plus 2 same-domain
distractors in the system prompt) as trajectories where ~30% carry an erroneous call, its error feedback and
then the corrected call (posttrain/tools/trajectories.py) -> train.jsonl; the same queries as PPO prompts
with their tools and gold calls -> ppo_prompts.jsonl. Arms, each a run per seed from the embedded model:
- sft: recipes/tool_sft_seal.yaml (every assistant turn trained, erroneous ones included);
- mae, pkt, mae_pkt: the same with method.mae / method.pkt;
- irm: PPO with the `tool_call` reward (recipes/tool_ppo_seal.yaml) from the sft run;
- all: the same PPO from the mae_pkt run.
Evaluation: greedy, on BFCL categories and Seal-Tools test_in_domain (the loaders' prompts: the tool list in
the system prompt, as in training); paired sign tests against sft over (example, seed). Finished runs and
evaluations are reused; `--report` trains nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments import RECIPES
from experiments.sweep import publish, run_variant
from posttrain.eval.report import markdown_table
from posttrain.stats import mean_ci, sign_test_p

SFT_ARMS = {"sft": [], "mae": ["method.mae=true"], "pkt": ["method.pkt=true"],
            "mae_pkt": ["method.mae=true", "method.pkt=true"]}
PPO_ARMS = {"irm": "sft", "all": "mae_pkt"}
BFCL = ("simple_python", "multiple", "parallel", "parallel_multiple", "live_simple", "irrelevance")
DISTRACTORS = 2


def data_dir(a) -> Path:
    return Path(a.runs) / "data"


def prepare(a) -> None:
    from posttrain.files import write_jsonl
    from posttrain.rewards.tool_call import irm_meta
    from posttrain.tools.loaders import load_seal_tools
    from posttrain.tools.prompt import with_tool_system
    from posttrain.tools.trajectories import make_trajectories, write_trajectories
    out = data_dir(a)
    examples = load_seal_tools(Path(a.data) / "seal-tools" / "dev.jsonl", distractors=DISTRACTORS, seed=0,
                               limit=a.train_examples)
    write_trajectories(make_trajectories(examples, error_rate=a.error_rate, seed=0), out / "train.jsonl")
    rows = [{"prompt": with_tool_system(e.messages, e.tools), "id": e.id,
             **{k: json.dumps(v) for k, v in irm_meta(e).items()}} for e in examples]
    write_jsonl(out / "ppo_prompts.jsonl", rows)


def eval_sets(a) -> list:
    from posttrain.tools.loaders import load_bfcl, load_seal_tools
    root = Path(a.data)
    sets = [ex for c in BFCL for ex in load_bfcl(root / "bfcl" / f"BFCL_v4_{c}.json",
                                                 limit=a.bfcl_per_category)]
    sets += load_seal_tools(root / "seal-tools" / "test_in_domain.jsonl", distractors=DISTRACTORS, seed=0,
                            limit=a.seal_examples)
    return sets


def train_arm(arm: str, seed: int, a) -> Path | None:
    name = f"{arm}-seed{seed}"
    base = [f"name={name}", f"seed={seed}", f"output_dir={a.runs}", *a.overrides]
    if arm in SFT_ARMS:
        ok = run_variant(RECIPES / "tool_sft_seal.yaml",
                         base + [f"data.train.path={data_dir(a) / 'train.jsonl'}",
                                 f"train.max_steps={a.sft_steps}",
                                 *([f"train.micro_batch_size={a.sft_micro_batch}",
                                    f"train.grad_accum={4 // a.sft_micro_batch}"]
                                   if a.sft_micro_batch else []),
                                 *SFT_ARMS[arm]], collect=a.report)
    else:
        start = Path(a.runs) / f"{PPO_ARMS[arm]}-seed{seed}"
        if not (start / "summary.json").is_file():
            return None
        ok = run_variant(RECIPES / "tool_ppo_seal.yaml",
                         base + [f"model.adapter={start}", f"train.max_steps={a.ppo_steps}",
                                 f"data.train.path={data_dir(a) / 'ppo_prompts.jsonl'}"], collect=a.report)
    return Path(a.runs) / name if ok is not None else None


def evaluate(run: Path | None, label: str, examples: list, a) -> dict | None:
    """Scores of a run's final model (None: the embedded model itself) on the evaluation sets, with the
    run's training steps and wall time: a file in --evals, which is committed, so a later session's seeds
    and the report can join an earlier session's (the runs themselves do not survive a session)."""
    import time

    from posttrain.eval.tools import generate_completions, score
    from posttrain.files import atomic_write_text
    out = Path(a.evals) / f"{label}.json"
    if out.is_file():
        return json.loads(out.read_text())
    if a.report:
        return None
    t0 = time.perf_counter()
    if run is None:
        from posttrain.models import load_model
        model, tok = load_model("smollm2-135m-instruct")
    else:
        from posttrain.export import load_run
        model, tok, *_ = load_run(run)
    res = score(examples, generate_completions(model, tok, examples, max_new_tokens=a.max_new_tokens,
                                               batch_size=a.batch_size))
    res["eval_seconds"] = round(time.perf_counter() - t0, 1)
    res["date"] = time.strftime("%Y-%m-%d")
    if run is not None:
        summary = json.loads((run / "summary.json").read_text())
        res["train"] = {"steps": summary["train"]["steps"], "wall_time_s": round(summary["wall_time_s"], 1)}
    atomic_write_text(out, json.dumps(res))
    return res


def report(results: dict[str, list[dict]], a) -> int:
    arms = [k for k in ["start", *SFT_ARMS, *PPO_ARMS] if results.get(k)]
    header = ["arm", "seeds", "train steps", "train min", *[f"BFCL {c}" for c in BFCL], "Seal tool F1",
              "Seal param F1", "Seal content F1", "exact (W / L vs sft)",
              "exact (W / L vs its SFT start)"]
    rows = []
    for arm in arms:
        rs = results[arm]
        trained = [r["train"] for r in rs if "train" in r]
        cells = [arm, " ".join(str(r["seed"]) for r in rs) if arm != "start" else "-",
                 "/".join(sorted({str(t["steps"]) for t in trained})) or "0",
                 " / ".join(f"{t['wall_time_s'] / 60:.0f}" for t in trained) or "-"]
        for c in BFCL:
            m, h = mean_ci([r["bfcl"][c]["accuracy"] for r in rs if c in r.get("bfcl", {})] or [float("nan")])
            cells.append(f"{m:.3f}" + ("" if h != h else f" ± {h:.3f}"))
        for key in ("tool_selection", "parameter_identification", "content_filling"):
            vals = [r["seal_tools"]["all"][key]["f1"] for r in rs]
            m, h = mean_ci(vals)
            cells.append(f"{m:.3f}" + ("" if h != h else f" ± {h:.3f}"))
        cells.append(_paired(rs, results.get("sft", []), arm) if arm not in ("sft", "start") else "")
        cells.append(_paired(rs, results.get(PPO_ARMS[arm], []), arm) if arm in PPO_ARMS else "")
        rows.append(cells)
    n = results[arms[0]][0]["n"]
    dates = sorted({r.get("date", "?") for rs in results.values() for r in rs})
    lines = ["## Results", "", f"Reproduce: `python -m experiments.tool_use --prepare`, "
             f"then `python -m experiments.tool_use --seeds {' '.join(map(str, a.seeds))} "
             f"--sft-steps {a.sft_steps} --ppo-steps {a.ppo_steps}`, then `--report`. "
             f"Per-example results: `{a.evals}/` (evaluated {', '.join(dates)}). "
             "train min: wall time of each seed's training run (one thread, two jobs on 2 cores).", "",
             f"Greedy decoding, {n} evaluation examples ({a.bfcl_per_category} per BFCL category, "
             f"{a.seal_examples} Seal-Tools test_in_domain); ± = 95% t interval over seeds (excludes the "
             "eval sets' own sampling error). Paired: (example, seed) pairs correct under the arm but not "
             "under sft (last column: the SFT run a PPO arm starts from) / the reverse (BFCL AST-correct or "
             "Seal-Tools exact match), exact sign test.", "",
             markdown_table(header, rows), ""]
    plot = Path(a.out) / "tool_use.png"
    _plot(results, arms, plot)
    lines += [f"![per arm: BFCL accuracy and Seal-Tools content F1, one dot per seed]({plot.name})", ""]
    return publish(Path(a.out) / "tool_use_results.md", "\n".join(lines))


def _paired(rs: list[dict], base: list[dict], arm: str) -> str:
    """Wins / losses of `rs` against `base` over (example, seed) pairs on exact correctness, with the exact
    sign test; seeds missing on either side are left out."""
    by_seed = {r["seed"]: r for r in base}
    w = l_ = 0
    for r in rs:
        b = by_seed.get(r["seed"])
        if b is None:
            continue
        for x, y in zip(r["rows"], b["rows"], strict=True):
            assert x["id"] == y["id"], (arm, x["id"], y["id"])
            w += x["correct"] and not y["correct"]
            l_ += y["correct"] and not x["correct"]
    return f"{w} / {l_}, p = {sign_test_p(w, l_):.3f}"


def _plot(results: dict[str, list[dict]], arms: list[str], path: Path) -> None:
    """Per arm: BFCL accuracy over every category and Seal-Tools content-filling F1, one dot per seed."""
    import matplotlib.pyplot as plt  # the headless backend: posttrain.eval.report, imported above

    from posttrain.files import atomic_path
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for ax, title, value in ((axes[0], "BFCL accuracy (all categories)", lambda r: r.get("bfcl_accuracy")),
                             (axes[1], "Seal-Tools content-filling F1",
                              lambda r: r["seal_tools"]["all"]["content_filling"]["f1"])):
        for x, arm in enumerate(arms):
            ys = [v for v in (value(r) for r in results[arm]) if v is not None]
            if ys:
                ax.bar(x, sum(ys) / len(ys), color="#9ab" if arm != "start" else "#ccc", width=0.6)
                ax.scatter([x] * len(ys), ys, color="k", s=12, zorder=3)
        ax.set_xticks(range(len(arms)), arms)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.tool_use", description=__doc__.split("\n")[0])
    ap.add_argument("--prepare", action="store_true", help="write the training data and stop")
    ap.add_argument("--arms", nargs="+", default=[*SFT_ARMS, *PPO_ARMS], choices=[*SFT_ARMS, *PPO_ARMS])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--no-start", action="store_true",
                    help="do not evaluate the embedded model here (another process does; --report reads it)")
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--runs", default="runs/tool_use")
    ap.add_argument("--evals", default="docs/results/tool_use_eval",
                    help="evaluation results, one JSON per (arm, seed): committed with the report")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--train-examples", type=int, default=700)
    ap.add_argument("--sft-steps", type=int, default=12, help="optimizer steps of each SFT arm (batch 4)")
    ap.add_argument("--sft-micro-batch", type=int, choices=[1, 2, 4],
                    help="split each SFT step's 4 rows into micro-batches of this size "
                         "(memory; the same step)")
    ap.add_argument("--ppo-steps", type=int, default=6,
                    help="PPO optimizer steps of each IRM arm (2 per iteration of 8 rollouts)")
    ap.add_argument("--error-rate", type=float, default=0.3)
    ap.add_argument("--bfcl-per-category", type=int, default=10)
    ap.add_argument("--seal-examples", type=int, default=30)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args(argv)
    if a.prepare:
        prepare(a)
        print(data_dir(a))
        return 0
    examples = [] if a.report else eval_sets(a)
    results: dict[str, list[dict]] = {}
    start = None if a.no_start and not a.report else evaluate(None, "start", examples, a)
    if start is not None:
        results["start"] = [{**start, "seed": 0}]
    for seed in a.seeds:
        for arm in a.arms:
            run = None
            if not a.report:  # a report reads the evaluation files only
                run = train_arm(arm, seed, a)
                if run is None:
                    continue
            res = evaluate(run, f"{arm}-seed{seed}", examples, a)
            if res is not None:
                results.setdefault(arm, []).append({**res, "seed": seed})
                print(arm, seed, res.get("bfcl_accuracy"), flush=True)
    if a.report and results:
        return report(results, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
