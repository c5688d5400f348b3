"""INPO vs iterative DPO on the embedded model (issue 17, experiment (b), docs/results/inpo.md).

Each run is `posttrain train` of recipes/inpo_arithmetic.yaml (a transitive oracle: the math reward) or
recipes/inpo_cyclic.yaml (the non-transitive length cycle), with `method.name=inpo` or `iterative_dpo`,
per seed. After training, the policy after each iteration (the start model for t = 0) answers the same
held-out prompts (one sample each, a fixed seed); the oracle compares every answer with the initial
policy's answer to the same prompt: win rate = (wins + ties / 2) / prompts. Finished runs and evaluations
are reused (`--report` trains nothing).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments import RECIPES
from experiments.sweep import publish, run_variant
from posttrain.stats import mean_ci, sign_test_p

ORACLES = {"math": RECIPES / "inpo_arithmetic.yaml", "cyclic": RECIPES / "inpo_cyclic.yaml"}
METHODS = {"inpo": [], "iterative_dpo": ["method.name=iterative_dpo", "method.beta=0.1"]}


def answers(recipe, t: int, records, a) -> list[str]:
    """One sampled answer per held-out prompt from the policy after t iterations (t = 0: the start)."""
    from posttrain.data.template import encode_prompt
    from posttrain.generation.sampler import SamplingParams, sample
    from posttrain.models.start import load_iteration
    model, tok = load_iteration(recipe, t)
    model.eval()
    s = params_of(recipe).sampling
    prompts = [encode_prompt(tok, r.prompt) for r in records]
    out, _ = sample(model, tok, prompts, SamplingParams(temperature=a.temperature,
                                                        max_new_tokens=s.max_new_tokens,
                                                        seed=10_000 + recipe.seed), batch_size=32)
    return [x[0].text for x in out]


def params_of(recipe):
    from posttrain.config import validate_section
    from posttrain.methods import get_method
    return validate_section(get_method(recipe.method_name).params, recipe.method, "method")


def win_counts(recipe, records, mine: list[str], base: list[str]) -> tuple[int, int, int]:
    """(wins, ties, losses) of `mine` against `base` under the recipe's oracle."""
    from posttrain.rewards import get_reward
    from posttrain.tasks.sources import prompt_text
    o = params_of(recipe).oracle
    oracle_kind = o.kind
    oracle = get_reward(o.name, **o.options)
    ps = [prompt_text(r) for r in records]
    meta = [{"answer": r.answer, **r.meta} for r in records]
    if oracle_kind == "reward":
        x, y = oracle.score(ps, mine, meta), oracle.score(ps, base, meta)
        p = [1.0 if u > v else 0.0 if u < v else 0.5 for u, v in zip(x, y)]
    else:
        p = oracle.compare(ps, mine, base, meta)
    return sum(q > 0.5 for q in p), sum(q == 0.5 for q in p), sum(q < 0.5 for q in p)


def overrides_of(oracle: str, method: str, seed: int, a) -> list[str]:
    return [f"name={oracle}-{method}-seed{seed}", f"seed={seed}", f"method.sampling.seed={seed}",
            f"output_dir={a.runs}", *METHODS[method], *a.overrides]


def load_recipe_of(row: dict, a):
    from posttrain.config import load_recipe
    return load_recipe(ORACLES[row["oracle"]], overrides_of(row["oracle"], row["method"], row["seed"], a))


def held_out(recipe, a) -> list:
    """The held-out prompts: the recipe's synthetic task under another seed."""
    from posttrain.tasks.sources import load_source
    return load_source(recipe.data.train.model_copy(update={
        "synthetic": recipe.data.train.synthetic.model_copy(update={"seed": 99, "n": a.prompts})}), "prompt")


def evaluate(oracle: str, method: str, seed: int, a) -> dict | None:
    from posttrain.config import load_recipe
    over = overrides_of(oracle, method, seed, a)
    if run_variant(ORACLES[oracle], over, collect=a.report) is None:
        return None
    recipe = load_recipe(ORACLES[oracle], over)
    done = recipe.run_dir / f"winrate_{a.prompts}.json"
    if done.is_file():
        return json.loads(done.read_text())
    held = held_out(recipe, a)
    base = answers(recipe, 0, held, a)
    out = {"name": recipe.name, "oracle": oracle, "method": method, "seed": seed, "iterations": [],
           "answers": [base]}
    for t in range(1, recipe.pipeline.iterations + 1):
        out["answers"].append(answers(recipe, t, held, a))
        w, ties, l_ = win_counts(recipe, held, out["answers"][-1], base)
        out["iterations"].append({"t": t, "wins": w, "ties": ties, "losses": l_,
                                  "win_rate": (w + ties / 2) / len(held)})
    done.write_text(json.dumps(out))
    return out


def class_mix(recipe, texts: list[str]) -> list[float]:
    """Shares of the cyclic oracle's length classes among `texts`."""
    from posttrain.rewards import get_reward
    o = params_of(recipe).oracle
    oracle = get_reward(o.name, **o.options)
    cats = [oracle.category(t) for t in texts]
    return [cats.count(k) / len(cats) for k in range(3)]


def exploitability(mix: list[float]) -> float:
    """max_c P(c > pi) - 1/2 under the cyclic matrix, for pi = mix over (short, medium, long)."""
    from posttrain.rewards.cyclic import MATRIX
    return max(sum(MATRIX[c][k] * mix[k] for k in range(3)) for c in range(3)) - 0.5


def train_log(row: dict, a) -> list[str]:
    """Table rows of one run's training, per iteration, from its metrics.jsonl files: the loss at the first
    and the last step, the gradient norm's range, the steps whose norm exceeded train.max_grad_norm
    (clipped), and the last step's mean margin h (INPO: nats, against its target 1/(2 eta); DPO: the
    implicit reward margin)."""
    from posttrain.checkpoints import iteration_dir
    from posttrain.runner import read_history
    recipe = load_recipe_of(row, a)
    params, limit = params_of(recipe), recipe.train.max_grad_norm
    scale = params.eta if row["method"] == "inpo" else 1.0
    out = []
    for t in range(recipe.pipeline.iterations):
        steps = [h for h in read_history(iteration_dir(recipe.run_dir, t)) if "loss" in h]
        if not steps:
            continue
        norms = [h["grad_norm"] for h in steps if "grad_norm" in h]
        clipped = sum(g > limit for g in norms) if limit is not None else 0
        margin = steps[-1].get("rewards/margins", float("nan")) / scale
        target = f" (target {1 / (2 * params.eta):g})" if row["method"] == "inpo" else ""
        out.append(f"| {row['name']} | {t + 1} | {steps[0]['loss']:.5g} -> {steps[-1]['loss']:.5g} "
                   f"(min {min(h['loss'] for h in steps):.5g}) | {min(norms):.4g}-{max(norms):.4g} | "
                   f"{clipped} / {len(norms)} (norm > {limit}) | {margin:.3g}{target} |")
    return out


def command(a, flags: str = "") -> str:
    """The command line of these runs for the page's Reproduce line: the arguments that differ from the
    defaults, then `flags`, then the overrides."""
    extra = [f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
             for k, v, d in (("runs", a.runs, "runs/inpo"), ("oracles", a.oracles, list(ORACLES)),
                             ("methods", a.methods, list(METHODS)), ("page", a.page, "inpo_lm.md")) if v != d]
    return (f"python -m experiments.inpo_lm --seeds {' '.join(map(str, a.seeds))}"
            + "".join(f" {x}" for x in extra)
            + flags + ("" if not a.overrides else " -- " + " ".join(a.overrides)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.inpo_lm", description=__doc__.split("\n")[0])
    ap.add_argument("--oracles", nargs="+", default=list(ORACLES), choices=list(ORACLES))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--runs", default="runs/inpo")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--page", default="inpo_lm.md", help="the report's file name under --out")
    ap.add_argument("--train-log", action="store_true",
                    help="add each run's training per iteration "
                         "(loss, gradient norms, clipped steps, margin)")
    ap.add_argument("overrides", nargs="*", help="key.sub=value overrides of every run; put them after `--`")
    a = ap.parse_args(argv)
    rows = [r for o in a.oracles for m in a.methods for s in a.seeds
            if (r := evaluate(o, m, s, a)) is not None]
    if not a.report:
        return 0
    lines = ["## (b) The embedded model: win rate against the initial policy", "",
             f"Reproduce: `{command(a)}` then " + (f"`{command(a, ' --report --train-log')}`." if a.train_log
                                                    else "`--report`."), "",
             "| oracle | method | seeds | " + " | ".join(f"win rate after iteration {t}"
                                                         for t in (1, 2, 3)) + " |",
             "|---|---|---:|---:|---:|---:|"]
    for o in a.oracles:
        for m in a.methods:
            rs = [r for r in rows if r["oracle"] == o and r["method"] == m]
            if not rs:
                continue
            cells = []
            for k in range(len(rs[0]["iterations"])):
                mean, half = mean_ci([r["iterations"][k]["win_rate"] for r in rs])
                w = sum(r["iterations"][k]["wins"] for r in rs)
                l_ = sum(r["iterations"][k]["losses"] for r in rs)
                cells.append(f"{mean:.3f}" + ("" if half != half else f" ± {half:.3f}") +
                             f" (W {w} / L {l_}, sign p {sign_test_p(w, l_):.3f})")
            lines.append(f"| {o} | {m} | {len(rs)} | " + " | ".join(cells) + " |")
    head_to_head = []
    for o in a.oracles:
        pairs = [(r,
                  q) for r in rows for q in rows if r["oracle"] == q["oracle"] == o and r["seed"] == q["seed"]
                 and r["method"] == "inpo" and q["method"] == "iterative_dpo" and "answers" in r
                 and "answers" in q]
        if not pairs:
            continue
        cells = []
        setups = [(load_recipe_of(r, a), r, q) for r, q in pairs]
        setups = [(recipe, held_out(recipe, a), r, q) for recipe, r, q in setups]
        for t in range(1, len(pairs[0][0]["answers"])):
            w = ties = l_ = 0
            for recipe, held, r, q in setups:
                x, y, z = win_counts(recipe, held, r["answers"][t], q["answers"][t])
                w, ties, l_ = w + x, ties + y, l_ + z
            cells.append(f"t = {t}: {w} / {ties} / {l_} (p {sign_test_p(w, l_):.3f})")
        head_to_head.append(f"- {o} ({len(pairs)} seeds): " + "; ".join(cells))
    if head_to_head:
        lines += ["",
                  "INPO against iterative DPO directly, the same held-out prompts, each policy's answer "
                  "against the other's under the oracle (wins / ties / losses of INPO, summed over seeds; "
                  "sign test on wins vs losses):", "", *head_to_head]
    cyc = [r for r in rows if r["oracle"] == "cyclic" and "answers" in r]
    if cyc:
        lines += ["",
                  "Under the cyclic oracle, each policy's class mix (short / medium / long) on the held-out "
                  "answers and its exploitability, max over classes c of P(c > pi) - 1/2 (0 at the Nash "
                  "policy, 1/3 each; 1/2 for a pure policy), mean over seeds:", "",
                  "| method | t = 0 | t = 1 | t = 2 | t = 3 |", "|---|---|---|---|---|"]
        for m in a.methods:
            rs = [r for r in cyc if r["method"] == m]
            if rs:
                cells = []
                for t in range(len(rs[0]["answers"])):
                    mixes = [class_mix(load_recipe_of(r, a), r["answers"][t]) for r in rs]
                    mix = [sum(x[k] for x in mixes) / len(mixes) for k in range(3)]
                    ex = sum(exploitability(x) for x in mixes) / len(mixes)
                    cells.append(" / ".join(f"{p:.2f}" for p in mix) + f", {ex:.3f}")
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if a.train_log:
        lines += ["", "Training per iteration (metrics.jsonl of the run and its iter-K folders):", "",
                  "| run | iteration | loss, first -> last step | gradient norm before clipping | "
                  "steps clipped | last step's mean margin |", "|---|---:|---|---|---|---|"]
        for r in rows:
            lines += train_log(r, a)
    lines += ["", "Per run: " + json.dumps([{k: v for k, v in r.items() if k != "answers"} for r in rows]),
              ""]
    return publish(Path(a.out) / a.page, "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
