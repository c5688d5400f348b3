"""`posttrain train | generate | rso | eval | synth | export | models | demo` — a thin layer over the
library."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from posttrain.errors import PosttrainError


def launch_command(nproc: int, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) that runs `posttrain <argv>` in `nproc` processes on this machine with torchrun:
    the same as `torchrun --standalone --nproc_per_node N -m posttrain.cli <argv>`."""
    import os
    env = dict(os.environ)
    # torchrun would set 1 thread per process; share the cores out instead (CPU runs)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "posttrain.cli", *argv], env


def strip_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def load_run_recipe(args):
    """The recipe of a verb that runs one (`args.recipe` with `args.overrides`), its input files checked."""
    from posttrain.config import check_inputs, load_recipe
    from posttrain.trackers import check_installed
    recipe = load_recipe(args.recipe, args.overrides)
    check_inputs(recipe)
    check_formats(recipe)
    check_installed(recipe.train.report_to)  # once, before `--nproc` starts its processes
    return recipe


def check_formats(recipe) -> None:
    """Every `format` of `data.train` / `data.eval` (and of their mixture members) names a known reader
    format, else an error naming the key. Which formats fit which records depends on the method: the
    reader checks that when the data loads."""
    from posttrain.config import recipe_sources
    from posttrain.data.converters import FORMATS
    from posttrain.errors import RecipeError
    known = sorted({"auto", *(f for _, f in FORMATS)})
    for key, src in recipe_sources(recipe):
        if src.path is not None and src.format not in known:
            raise RecipeError(f"{key}.format: unknown format {src.format!r}; known: {', '.join(known)}")


def launch(args) -> int | None:
    """With `--nproc N`: check the recipe once, then run this same command in N processes (its exit status);
    None without `--nproc` (run here)."""
    if args.nproc is None:
        return None
    import os
    import subprocess
    if args.nproc < 1:
        raise PosttrainError(f"--nproc must be at least 1, got {args.nproc}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PosttrainError("--nproc inside a launched process: drop it, the launcher already started "
                             f"{os.environ['WORLD_SIZE']} processes")
    load_run_recipe(args)  # a bad recipe fails here, once, not in every process
    cmd, env = launch_command(args.nproc, strip_nproc(args.argv))
    return subprocess.run(cmd, env=env).returncode


def cmd_train(args) -> int:
    from posttrain.runner import run_recipe
    launched = launch(args)
    if launched is not None:
        return launched
    from posttrain import distributed
    distributed.init()
    recipe = load_run_recipe(args)
    summary = run_recipe(recipe, resume=not args.no_resume, show_progress=not args.quiet,
                         restart_from=args.restart_from, until=args.until)
    if not distributed.is_main():
        return 0
    if "train" not in summary:
        print(json.dumps(summary["stages"], indent=1, default=str))
        return 0
    print(json.dumps({k: summary[k] for k in ("name", "train", "wall_time_s") if k in summary}, indent=1,
                     default=str))
    for phase in ("before", "after"):
        if phase in summary:
            print(f"{phase}: accuracy {summary[phase]['accuracy']:.3f} on {summary[phase]['n']} "
                  f"held-out prompts")
    return 0


def cmd_generate(args) -> int:
    from posttrain.generation.sampler import SamplingParams
    params = SamplingParams(n=args.n, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            max_new_tokens=args.max_new_tokens, stop=tuple(args.stop), seed=args.seed)
    if (args.prompt is None) == (args.data is None):
        raise PosttrainError("give either --prompt TEXT or --data PROMPTS.jsonl --out SAMPLES.jsonl")
    if args.data is not None and args.out is None:
        raise PosttrainError("--data needs --out (the samples file; rerun the same command to resume)")
    model, tok = model_from_args(args)
    if args.prompt is not None:
        from posttrain.data.template import encode_prompt
        from posttrain.generation.sampler import sample
        conv = ([{"role": "system", "content": args.system}] if args.system else []) + \
            [{"role": "user", "content": args.prompt}]
        (outs,), _ = sample(model, tok, [encode_prompt(tok, conv)], params)
        for i, s in enumerate(outs):
            print(s.text if args.n == 1 else f"[{i}] {s.text}")
        return 0
    from posttrain.data.readers import load_records
    from posttrain.generation.to_file import sample_to_file
    records = load_records(args.data, "prompt", limit=args.limit)
    if args.system:
        for r in records:
            if r.prompt[0]["role"] != "system":
                r.prompt.insert(0, {"role": "system", "content": args.system})
    _, stats = sample_to_file(model, tok, records, params, args.out, batch_size=args.batch_size,
                              progress=not args.quiet)
    print(f"{len(records)} prompts x {args.n} samples -> {args.out} "
          f"({stats.extra['resumed_prompts']} prompts already there); {stats.new_tokens} new tokens "
          f"in {stats.seconds:.1f} s = {stats.tokens_per_s:.1f} tok/s")
    return 0


def cmd_rso(args) -> int:
    from posttrain.runner import run_recipe
    launched = launch(args)
    if launched is not None:
        return launched
    from posttrain import distributed
    distributed.init()
    recipe = load_run_recipe(args)
    if recipe.method_name != "rso":
        raise PosttrainError(f"{args.recipe}: method.name is {recipe.method_name!r}, not 'rso'")
    summary = run_recipe(recipe, show_progress=not args.quiet, restart_from=args.restart_from,
                         until=args.until or "pairs")
    if not distributed.is_main():
        return 0
    pairs = summary["stages"].get("pairs")
    if pairs is None:  # --until an earlier stage
        print(json.dumps(summary["stages"], indent=1, default=str))
        return 0
    for k, v in pairs.items():
        print(f"{k:28s} {v}")
    print(f"pairs -> {recipe.run_dir / 'pairs.jsonl'}")
    return 0


def model_from_args(args):
    """--run RUN (its latest checkpoint, as training built it), else --model with an optional --adapter
    (`generate` and `eval`)."""
    if getattr(args, "run", None):
        from posttrain.export import load_run
        model, tok, *_ = load_run(args.run)
        return model, tok
    from posttrain.models import load_model
    model, tok = load_model(args.model, trust_remote_code=getattr(args, "trust_remote_code", False))
    if args.adapter:
        from posttrain.models.io import apply_saved_adapter
        from posttrain.models.start import adapter_folder
        model = apply_saved_adapter(model, adapter_folder(args.adapter))
    return model, tok


def cmd_eval(args) -> int:
    if args.suite == "math":
        return cmd_eval_math(args)
    if args.suite == "tools":
        return cmd_eval_tools(args)
    import json as _json

    from posttrain.config import DataSource, NLUSource
    from posttrain.eval.nlu import nlu_eval
    from posttrain.tasks.sources import load_source
    model, tok = model_from_args(args)
    rows = []
    for task in args.tasks:
        src = DataSource(nlu=NLUSource(task=task, split=args.split, limit=args.limit, shots=args.shots,
                                       shots_seed=args.seed))
        res = nlu_eval(model, tok, load_source(src, "prompt"), batch_size=args.batch_size,
                       max_prompt_length=args.max_prompt_length)
        rows.append((task, res))
        print(f"{task:8s} accuracy {res['accuracy']:.3f}  invalid {res['invalid_rate']:.3f}  n {res['n']}  "
              f"({res['seconds']} s)", flush=True)
    if args.out:
        from posttrain.files import atomic_write_text
        atomic_write_text(Path(args.out), _json.dumps({t: r for t, r in rows}, indent=1))
    return 0


def cmd_eval_math(args) -> int:
    from posttrain.eval.math import evaluate, load_items, write_results
    model, tok = model_from_args(args)
    for name in args.data or ["gsm8k"]:
        items = load_items(name, limit=args.limit)
        res = evaluate(model, tok, items, k=args.k, temperature=args.temperature,
                       max_new_tokens=args.max_new_tokens,
                       batch_size=args.batch_size, seed=args.seed, progress=not args.quiet)
        label = Path(str(name)).stem if Path(str(name)).suffix else str(name)
        out = Path(args.out_dir or "runs/eval-math") / label
        report, graded = write_results(res, out, f"Math evaluation: {name}")
        maj = f"  maj@{args.k} {res['maj_accuracy']:.3f}" if "maj_accuracy" in res else ""
        print(f"{label:10s} greedy {res['greedy_accuracy']:.3f}{maj}  n {res['n']}  -> {report}, {graded}",
              flush=True)
    return 0


def cmd_eval_tools(args) -> int:
    from posttrain.eval.tools import (
        completions_for,
        generate_completions,
        load_predictions,
        score,
        summary_lines,
        write_results,
    )
    from posttrain.tools.loaders import load_tool_examples
    if not args.data:
        raise PosttrainError("eval tools needs --data: BFCL_v4_<category>.json or Seal-Tools files")
    predictions = load_predictions(args.predictions) if args.predictions else None
    model = None
    for name in args.data:
        examples = load_tool_examples(name, answers=args.answers, tools_path=args.tool_specs,
                                      limit=args.limit)
        if predictions is not None:
            texts, _ = completions_for(examples, predictions, args.predictions)
        else:
            if model is None:
                model, tok = model_from_args(args)
            texts = generate_completions(model, tok, examples, max_new_tokens=args.max_new_tokens,
                                         batch_size=args.batch_size, progress=not args.quiet)
        res = score(examples, texts)
        label = Path(str(name)).stem
        report, graded = write_results(res, Path(args.out_dir or "runs/eval-tools") / label,
                                       f"Tool-call evaluation: {name}")
        for line in summary_lines(res):
            print(line)
        print(f"-> {report}, {graded}", flush=True)
    return 0


def cmd_synth(args) -> int:
    from posttrain.synth.config import load_synth_recipe
    from posttrain.synth.math import LAST_STAGE, run_synth, run_worker
    if args.nproc is not None and args.workers is not None and args.nproc != args.workers:
        raise PosttrainError(f"--nproc {args.nproc} and --workers {args.workers}: give one of them")
    workers = args.nproc if args.nproc is not None else args.workers
    if workers is not None and workers < 1:
        raise PosttrainError(f"--nproc must be at least 1, got {workers}")
    overrides = list(args.overrides) + ([f"workers={workers}"] if workers else [])
    recipe = load_synth_recipe(args.recipe, overrides)
    if args.worker:
        i, _, n = args.worker.partition("/")
        if not (i.isdigit() and n.isdigit() and 0 <= int(i) < int(n)):
            raise PosttrainError(f"--worker {args.worker}: expected i/N with 0 <= i < N")
        run_worker(recipe, args.stage, int(i), int(n))
        return 0
    stats = run_synth(recipe, Path(args.recipe), overrides=overrides, restart_from=args.restart_from,
                      until=args.until, progress=not args.quiet)
    for name, st in stats.items():
        print(f"{name:14s} {st}")
    if args.until is not None and args.until != LAST_STAGE:
        print(f"stopped after {args.until} (--until); rerun without it to finish")
    else:
        print(f"data -> {recipe.run_dir / 'synth.jsonl'}; report -> {recipe.run_dir / 'report.md'}")
    return 0


def cmd_models(args) -> int:
    from posttrain.models import ensure_converted, list_models
    if args.action == "convert":
        if args.name != "smollm2-135m-instruct":
            raise PosttrainError(f"only the embedded model needs converting; got {args.name!r}")
        print(ensure_converted(progress=True))
        return 0
    for m in list_models():
        print(f"{m['name']:28s} {m['kind']:10s} {'ready' if m.get('available') else '-':6s} "
              f"{m.get('description', '')}")
    return 0


def cmd_demo(args) -> int:
    from posttrain.demo import run_demo
    run_demo(out_dir=Path(args.out), overrides=args.overrides, quiet=args.quiet)
    return 0


def cmd_export(args) -> int:
    from posttrain.export import export_run
    out = export_run(args.run, args.out, merge=args.merge, checkpoint=args.checkpoint, force=args.force)
    print(f"exported {out}")
    return 0


class IntermixedParser(argparse.ArgumentParser):
    """A verb's parser that takes its options anywhere among its positionals: `train R --quiet name=x`
    (argparse's intermixed parsing; a plain parser stops filling `overrides` at the first option)."""
    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def run_options() -> argparse.ArgumentParser:
    """The options of every verb that runs a recipe (train, rso, synth, ...), defined once: a parent parser
    (`sub.add_parser(..., parents=[run_options()])`)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("run options")
    g.add_argument("--restart-from", default=None, metavar="STAGE",
                   help="redo this stage (e.g. pairs, train, iter-2/sample) and every stage after it")
    g.add_argument("--until", default=None, metavar="STAGE", help="stop after this stage (e.g. sample)")
    g.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="run in N processes on this machine (torchrun; docs/scaling.md for more)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def recipe_arguments(p: argparse.ArgumentParser, what: str = "recipe") -> None:
    p.add_argument("recipe", help=f"the YAML {what} file")
    p.add_argument("overrides", nargs="*", help=f"key.sub=value overrides of the {what}, e.g. train.lr=3e-4 "
                                                "(options may stand anywhere among them)")


def cmd_compare(args) -> int:
    from posttrain.compare import compare_runs, comparison_table, plot_losses
    result = compare_runs(args.runs)
    print(comparison_table(result))
    print(f"loss curves -> {plot_losses(result, args.plot)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="posttrain", description="Post-training for language models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=IntermixedParser)

    t = sub.add_parser("train", help="train from a YAML recipe", parents=[run_options()])
    recipe_arguments(t)
    t.add_argument("--no-resume", action="store_true", help="redo every stage (deletes the run's outputs)")
    t.set_defaults(fn=cmd_train)

    g = sub.add_parser("generate",
                       help="sample from a model: one prompt, or a prompt file into a samples file")
    g.add_argument("--model", default="smollm2-135m-instruct",
                   help="a known model name (posttrain models), a local HF folder or a hub id")
    g.add_argument("--run", default=None, help="a run folder: its latest checkpoint, as training built it")
    g.add_argument("--adapter", default=None,
                   help="a LoRA adapter folder on --model (e.g. runs/X/checkpoints/step-N/model)")
    g.add_argument("--prompt", default=None, help="one user message (prints the samples)")
    g.add_argument("--data", default=None, help="prompt records (JSONL etc.: {prompt, answer?, ...})")
    g.add_argument("--out", default=None, help="samples JSONL, written incrementally; rerun to resume")
    g.add_argument("--limit", type=int, default=None, help="first N prompts of --data")
    g.add_argument("--batch-size", type=int, default=16, help="sequences decoded together")
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--system", default=None, help="a system message before each prompt")
    g.add_argument("--n", type=int, default=1, help="samples per prompt")
    g.add_argument("--max-new-tokens", type=int, default=128, help="the most tokens generated per sample")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (1 = off)")
    g.add_argument("--top-k", type=int, default=0, help="sample from the k likeliest tokens (0 = off)")
    g.add_argument("--seed", type=int, default=0,
                   help="the sampling seed (a sample depends only on it, the prompt and its index)")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="allow a hub model's own Python code")
    g.set_defaults(fn=cmd_generate)

    r = sub.add_parser("rso", help="RSO data stages: sample, score, accept, pair -> <run>/pairs.jsonl "
                                   "(= train RECIPE --until pairs)", parents=[run_options()])
    recipe_arguments(r)
    r.set_defaults(fn=cmd_rso)

    e = sub.add_parser("eval", help="evaluate a model: `eval nlu` (<Judgement> classification), `eval math` "
                                    "(GSM8K, MATH-500 or a file: greedy accuracy and maj@k), `eval tools` "
                                    "(BFCL AST accuracy, Seal-Tools P/R/F1; a model or a predictions file)")
    e.add_argument("suite", choices=["nlu", "math", "tools"], help="what to evaluate: nlu, math or tools")
    e.add_argument("--tasks", nargs="+", default=["sst2"],
                   help="nlu: sst2 rte boolq cb copa (wic wsc with data)")
    e.add_argument("--data", nargs="+", default=None,
                   help="math: gsm8k (default), math500 (test sets in the shared data folder) or "
                        "JSONL/parquet files; tools: BFCL_v4_<category>.json or Seal-Tools .jsonl files")
    e.add_argument("--predictions", default=None,
                   help="tools: JSONL of {id, completion} (or {id, calls}) to score instead of "
                        "running a model")
    e.add_argument("--answers", default=None,
                   help="tools: BFCL possible answers (default: possible_answer/<name>)")
    e.add_argument("--tool-specs", default=None,
                   help="tools: Seal-Tools tool.jsonl (default: beside the data)")
    e.add_argument("--model", default="smollm2-135m-instruct",
                   help="a known model name, a local HF folder or a hub id (unless --run)")
    e.add_argument("--adapter", default=None,
                   help="a LoRA adapter folder (e.g. runs/X/checkpoints/step-N/model)")
    e.add_argument("--run", default=None, help="a run folder: its latest checkpoint, as training built it")
    e.add_argument("--split", default="validation", help="nlu: the split to evaluate on")
    e.add_argument("--limit", type=int, default=None, help="the first N examples of each task / data set")
    e.add_argument("--shots", type=int, default=0, help="nlu: demonstrations from the train split")
    e.add_argument("--seed", type=int, default=0, help="nlu: which shots; math: the maj@k samples")
    e.add_argument("--k", type=int, default=1, help="math: samples per problem for maj@k (1 = greedy only)")
    e.add_argument("--temperature", type=float, default=0.7, help="math: temperature of the maj@k samples")
    e.add_argument("--max-new-tokens", type=int, default=512, help="math, tools: the most tokens per answer")
    e.add_argument("--batch-size", type=int, default=16, help="sequences evaluated together")
    e.add_argument("--max-prompt-length", type=int, default=1024, help="nlu: longer prompts are cut to it")
    e.add_argument("--out", default=None, help="nlu: write the results (with sample completions) as JSON")
    e.add_argument("--out-dir", default=None, help="math, tools: report.md and graded.jsonl per data set "
                                                   "(default runs/eval-math, runs/eval-tools)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(fn=cmd_eval)

    y = sub.add_parser("synth",
                       help="`synth math RECIPE`: OpenMathInstruct-2-style math SFT data (resumable stages)",
                       parents=[run_options()])
    y.add_argument("kind", choices=["math"], help="what to synthesise: math")
    recipe_arguments(y, "synthesis recipe")
    y.add_argument("--workers", type=int, default=None, metavar="N",
                   help="the older name of --nproc: processes per sampling stage (same output for any N)")
    y.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # i/N: one shard of --stage (internal)
    y.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    y.set_defaults(fn=cmd_synth)

    m = sub.add_parser("models", help="list models, or convert the embedded one")
    m.add_argument("action", choices=["list", "convert"], nargs="?", default="list",
                   help="list the known models (default), or convert the embedded one")
    m.add_argument("name", nargs="?", default="smollm2-135m-instruct", help="convert: the model to convert")
    m.set_defaults(fn=cmd_models)

    x = sub.add_parser("export",
                       help="a run's checkpoint as a standalone HF model folder (tokenizer included)")
    x.add_argument("run", help="a run folder written by `posttrain train`")
    x.add_argument("out", help="the folder to write (must not exist or be empty, unless --force)")
    x.add_argument("--merge", action="store_true",
                   help="merge a LoRA adapter into the weights (a plain model)")
    x.add_argument("--checkpoint", default=None, help="a checkpoint folder or name (default: the latest)")
    x.add_argument("--force", action="store_true", help="replace a non-empty OUT")
    x.set_defaults(fn=cmd_export)

    c = sub.add_parser("compare", help="runs side by side: the recipe settings that differ, final metrics, "
                                       "and their loss curves on one plot")
    c.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by `posttrain train`")
    c.add_argument("--plot", default="compare.png", help="where to draw the loss curves (PNG)")
    c.set_defaults(fn=cmd_compare)

    d = sub.add_parser("demo", help="the flagship run on the embedded model, with a report")
    d.add_argument("overrides", nargs="*", help="key.sub=value overrides of the demo recipe")
    d.add_argument("--out", default="runs/demo", help="the folder of the demo's runs and report")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.set_defaults(fn=cmd_demo)
    return p


def _quiet_deepspeed_on_cpu() -> None:
    """deepspeed, where installed (the ZeRO path), is imported by transformers and warns on every start that
    it found no GPU; on a machine without one, tell it so first."""
    import os

    import torch
    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_deepspeed_on_cpu()
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
