"""`posttrain train | generate | models | demo` — a thin layer over the library."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from posttrain.errors import PosttrainError


def cmd_train(args) -> int:
    from posttrain.config import load_recipe
    from posttrain.runner import run_recipe
    recipe = load_recipe(args.recipe, args.overrides)
    summary = run_recipe(recipe, resume=not args.no_resume, show_progress=not args.quiet)
    print(json.dumps({k: summary[k] for k in ("name", "train", "wall_time_s") if k in summary}, indent=1, default=str))
    for phase in ("before", "after"):
        if phase in summary:
            print(f"{phase}: accuracy {summary[phase]['accuracy']:.3f} on {summary[phase]['n']} held-out prompts")
    return 0


def cmd_generate(args) -> int:
    from posttrain.generation import generate_chat
    from posttrain.models import load_model
    model, tok = load_model(args.model, trust_remote_code=args.trust_remote_code)
    conv = ([{"role": "system", "content": args.system}] if args.system else []) + \
        [{"role": "user", "content": args.prompt}]
    outs = generate_chat(model, tok, [conv] * args.n, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    for i, text in enumerate(outs):
        print(text if args.n == 1 else f"[{i}] {text}")
    return 0


def cmd_models(args) -> int:
    from posttrain.models import ensure_converted, list_models
    if args.action == "convert":
        if args.name != "smollm2-135m-instruct":
            raise PosttrainError(f"only the embedded model needs converting; got {args.name!r}")
        print(ensure_converted(progress=True))
        return 0
    for m in list_models():
        print(f"{m['name']:28s} {m['kind']:10s} {'ready' if m.get('available') else '-':6s} {m.get('description', '')}")
    return 0


def cmd_demo(args) -> int:
    from posttrain.demo import run_demo
    run_demo(out_dir=Path(args.out), overrides=args.overrides, quiet=args.quiet)
    return 0


BENCHES = {
    # name -> (module, what it measures); each module has main(argv)
    "noisy-preferences": "DPO / cDPO / rDPO (+ IPO) under label flips: --part bandit | lm",
    "rpo": "DPO vs RPO on the same pairs: chosen log-likelihood and gold accuracy",
}


def cmd_bench(args) -> int:
    if args.name == "noisy-preferences":
        part, rest = "bandit", list(args.rest)
        if "--part" in rest:
            i = rest.index("--part")
            part = rest[i + 1] if i + 1 < len(rest) else ""
            del rest[i:i + 2]
        if part not in ("bandit", "lm"):
            raise PosttrainError(f"--part must be 'bandit' or 'lm', got {part!r}")
        if part == "bandit":
            from posttrain.bench.noisy_bandit import main as bench_main
        else:
            from posttrain.bench.noisy_lm import main as bench_main
        return bench_main(rest)
    from posttrain.bench.rpo import main as bench_main
    return bench_main(list(args.rest))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="posttrain", description="Post-training for language models.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train from a YAML recipe")
    t.add_argument("recipe")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.lr=3e-4")
    t.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints in the run folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)

    g = sub.add_parser("generate", help="chat with a model")
    g.add_argument("--model", default="smollm2-135m-instruct")
    g.add_argument("--prompt", required=True)
    g.add_argument("--system", default=None)
    g.add_argument("--n", type=int, default=1)
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--trust-remote-code", action="store_true")
    g.set_defaults(fn=cmd_generate)

    m = sub.add_parser("models", help="list models, or convert the embedded one")
    m.add_argument("action", choices=["list", "convert"], nargs="?", default="list")
    m.add_argument("name", nargs="?", default="smollm2-135m-instruct")
    m.set_defaults(fn=cmd_models)

    b = sub.add_parser("bench", help="experiments that check a method's claim; writes docs/results",
                       description="\n".join(f"{k}: {v}" for k, v in BENCHES.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("name", choices=sorted(BENCHES))
    b.add_argument("rest", nargs=argparse.REMAINDER, help="options of the benchmark (see its --help)")
    b.set_defaults(fn=cmd_bench)

    d = sub.add_parser("demo", help="the flagship run on the embedded model, with a report")
    d.add_argument("overrides", nargs="*", help="key.sub=value overrides of the demo recipe")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # per-shard bars from transformers drown our own progress output
    try:
        return args.fn(args)
    except PosttrainError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
