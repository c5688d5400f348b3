"""`posttrain synth math RECIPE`: OpenMathInstruct-2-style math SFT data (docs/methods.md "Math evaluation
and OpenMathInstruct-2-style synthesis").

Stages (posttrain.pipeline: each resumable, recorded in pipeline.json, redone only when its settings or
inputs change):
1. seeds      seed problems with gold answers (any data source: files, GSM8K train, built-in word problems);
2. solutions  the teacher writes `solutions.k` solutions per seed problem, few-shot, ending in \\boxed{};
3. questions  the teacher writes `questions.per_seed` new problems per seed problem (exact repeats of a
              seed or of each other dropped), then `questions.k` solutions per new problem;
4. filter     keep a solution when its answer equals the gold (seed problems) or its problem's majority
              answer (new problems; the problem is kept only when the majority reaches
              `questions.min_agreement` of its solutions); token-length limits; exact (problem, solution)
              dedup; near-duplicate new problems removed (word n-gram Jaccard);
5. decontam   synthetic problems against the test sets `decontam.test_sets` (default GSM8K test and MATH-500,
              the built-ins; any number of files or folders of problems, e.g. AMC23 and AIME24, which the
              shared data lacks): an n-gram overlap pass and a MiniLM nearest-neighbour pass; the paper's
              LLM judge is not run (deviation);
6. report     synth.jsonl (SFT conversations), removed.jsonl (every dropped item, its stage, reason and —
              for decontamination — the test item it matched and the score), report.md and report.json
              (counts kept/dropped per reason per stage, wall time per stage).

Sharding: `workers: N` (or `--workers N`) splits a sampling stage's prompts across N processes (each
samples prompt ids i, i+N, ... into its own resumable file); the shards are merged in prompt-id order.
Every sample is seeded by (seed, prompt id, sample index), so the data (synth.jsonl, filtered.jsonl,
removed.jsonl, the problem files) is byte-identical whatever N; in the raw sample files the tokens and
texts are identical and the log-probs agree to float rounding (a worker runs on fewer threads, which
changes the order of a matmul's sums).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from posttrain import files
from posttrain.errors import DataError, RecipeError
from posttrain.synth.config import SynthRecipe

FEW_SHOT = [
    ("A shop sells pencils at 3 for $2. How much do 12 pencils cost?",
     "12 pencils are 12 / 3 = 4 groups of 3.\nEach group costs $2, so 4 * 2 = 8.\n\\boxed{8}"),
    ("Tom has 15 apples. He gives away 4 and then buys twice as many as he has left. How many apples does he "
     "have now?",
     "After giving away 4, Tom has 15 - 4 = 11.\nHe buys 2 * 11 = 22 more.\n"
     "He now has 11 + 22 = 33.\n\\boxed{33}"),
]
QUESTION_PROMPT = ("Write one new math word problem that is similar to the problem below but uses different "
                   "numbers and a different story. Write only the new problem, without a solution.\n\n"
                   "Problem: {problem}")


# ---------------------------------------------------------------- prompts


def solution_messages(problem: str, few_shot: int) -> list[dict]:
    from posttrain.eval.math import MATH_PROMPT
    msgs = []
    for q, a in FEW_SHOT[:few_shot]:
        msgs += [{"role": "user", "content": MATH_PROMPT.format(problem=q)},
                 {"role": "assistant", "content": a}]
    return msgs + [{"role": "user", "content": MATH_PROMPT.format(problem=problem)}]


def sft_row(problem: str, solution: str, **meta) -> dict:
    """The training row: the same user turn as `posttrain eval math` asks (no few-shot), the solution."""
    from posttrain.eval.math import MATH_PROMPT
    return {"messages": [{"role": "user", "content": MATH_PROMPT.format(problem=problem)},
                         {"role": "assistant", "content": solution}], **meta}


def clean_question(text: str) -> str | None:
    """The new problem from a teacher's reply: a leading "Problem:"/"New problem:" dropped; None when it is
    not a problem: too short, no question mark, or it carries a solution (a box, an equation, "the answer
    is") — a teacher fine-tuned to answer often answers instead of asking."""
    t = text.strip()
    for head in ("new problem:", "problem:"):
        if t.lower().startswith(head):
            t = t[len(head):].strip()
    low = t.lower()
    if len(t.split()) < 6 or "?" not in t or "\\boxed" in t or "answer is" in low or "=" in t:
        return None
    return t


# ---------------------------------------------------------------- files




def write_jsonl(path: Path, rows: list[dict]) -> None:
    files.write_jsonl(path, rows, fsync=True)


# ---------------------------------------------------------------- sharded sampling


def shard_file(out: Path, i: int, n: int) -> Path:
    return out.with_name(f"{out.stem}.shard-{i}-of-{n}{out.suffix}")


def sample_sharded(recipe: SynthRecipe, recipe_path: Path | None, stage: str, records: list, params,
                   out: Path,
                   *, progress: bool, overrides: list[str]) -> dict:
    """Sample `records` into `out` (resumable). With workers > 1 (and a recipe file to hand the workers),
    worker i samples prompt ids i, i+N, ... into its own file through `posttrain synth math --worker i/N`,
    then the shards are merged in prompt-id order: the same bytes as one worker."""
    from posttrain.generation.to_file import sample_to_file, source_path
    n = recipe.workers
    t0 = time.time()
    if n == 1 or recipe_path is None:
        model, tok = teacher(recipe, stage)
        _, st = sample_to_file(model, tok, records, params, out, batch_size=recipe.batch_size,
                               progress=progress)
        return {"prompts": len(records), "samples": len(records) * params.n, "new_tokens": st.new_tokens,
                "seconds": round(time.time() - t0, 1), "workers": 1}
    threads = max(1, (os.cpu_count() or 1) // n)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen([sys.executable, "-m", "posttrain", "synth", "math", str(recipe_path),
                               *overrides,
                               "--worker", f"{i}/{n}", "--stage", stage], env=env) for i in range(n)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise RecipeError(f"synth {stage}: worker(s) {[i for i, c in enumerate(codes) if c]} failed; "
                          f"rerun to resume")
    rows = []
    for i in range(n):
        rows += files.read_jsonl(shard_file(out, i, n), missing="empty")
    rows.sort(key=lambda r: (r["prompt_id"], r["sample_index"]))
    write_jsonl(out, rows)
    source_path(out).write_text(source_path(shard_file(out, 0, n)).read_text())
    return {"prompts": len(records), "samples": len(rows), "seconds": round(time.time() - t0, 1),
            "workers": n}


def run_worker(recipe: SynthRecipe, stage: str, i: int, n: int) -> None:
    """One worker's share of a sampling stage: prompt ids i, i+N, ... into its shard file."""
    from posttrain.generation.to_file import sample_to_file
    records, params, out = sampling_job(recipe, stage)
    model, tok = teacher(recipe, stage)
    sample_to_file(model, tok, records, params, shard_file(out, i, n), batch_size=recipe.batch_size,
                   progress=False, ids=range(i, len(records), n))


# ---------------------------------------------------------------- the stages

STAGE_SEEDS = {"solutions": 1, "questions": 2, "new_solutions": 3}  # each sampling stage its own streams
LAST_STAGE = "decontam"  # every synthesis ends with it; the report is written after it


def teacher(recipe: SynthRecipe, stage: str | None = None):
    """The model that samples `stage` (the question writer for "questions", else the teacher)."""
    from posttrain.models.start import load_start
    settings = recipe.questions.model if stage == "questions" and recipe.questions.model else recipe.model
    model, tok = load_start(settings)
    return model.eval(), tok


def _params(recipe: SynthRecipe, stage: str):
    from posttrain.generation.sampler import SamplingParams
    seed = recipe.seed * 1000 + STAGE_SEEDS[stage]
    if stage == "solutions":
        s = recipe.solutions
        return SamplingParams(n=s.k, temperature=s.temperature, top_p=s.top_p,
                              max_new_tokens=s.max_new_tokens, seed=seed)
    q = recipe.questions
    if stage == "questions":
        return SamplingParams(n=q.per_seed, temperature=q.temperature, max_new_tokens=q.max_new_tokens,
                              seed=seed)
    return SamplingParams(n=q.k, temperature=recipe.solutions.temperature, top_p=recipe.solutions.top_p,
                          max_new_tokens=recipe.solutions.max_new_tokens, seed=seed)


def sampling_job(recipe: SynthRecipe, stage: str):
    """(prompt records, sampling params, output file) of a sampling stage, from the files before it."""
    from posttrain.data.records import PromptRecord
    d = recipe.run_dir
    if stage == "solutions":
        rows = files.read_jsonl(d / "seeds.jsonl", missing="empty")
        recs = [PromptRecord(solution_messages(r["problem"], recipe.solutions.few_shot),
                             r["answer"]) for r in rows]
        return recs, _params(recipe, stage), d / "solutions.jsonl"
    if stage == "questions":
        rows = files.read_jsonl(d / "seeds.jsonl", missing="empty")
        recs = [PromptRecord([{"role": "user",
                               "content": QUESTION_PROMPT.format(problem=r["problem"])}]) for r in rows]
        return recs, _params(recipe, stage), d / "questions.raw.jsonl"
    if stage == "new_solutions":
        rows = files.read_jsonl(d / "new_problems.jsonl", missing="empty")
        recs = [PromptRecord(solution_messages(r["problem"], recipe.solutions.few_shot)) for r in rows]
        return recs, _params(recipe, stage), d / "new_solutions.jsonl"
    raise RecipeError(f"synth: {stage!r} is not a sampling stage; those are {', '.join(STAGE_SEEDS)}")


def make_seeds(recipe: SynthRecipe) -> dict:
    from posttrain.tasks.sources import load_source
    rows = []
    for k, src in enumerate(recipe.seeds):
        for rec in load_source(src, "prompt"):
            if rec.answer is None:
                raise DataError("a seed problem needs a gold answer", file=rec.file, line=rec.line,
                                field="answer")
            problem = rec.prompt[-1]["content"]
            rows.append({"id": len(rows), "problem": problem, "answer": rec.answer, "source": k})
    if not rows:
        raise RecipeError("synth: the seed sources hold no problems")
    write_jsonl(recipe.run_dir / "seeds.jsonl", rows)
    return {"seed_problems": len(rows),
            "per_source": [sum(r["source"] == k for r in rows) for k in range(len(recipe.seeds))]}


def make_new_problems(recipe: SynthRecipe, removed: list[dict]) -> dict:
    """Clean the teacher's new problems; drop empty ones and exact repeats of a seed or an earlier new one."""
    seeds = files.read_jsonl(recipe.run_dir / "seeds.jsonl", missing="empty")
    seen = {" ".join(r["problem"].split()).lower() for r in seeds}
    out, dropped = [], {"not_a_problem": 0, "exact_repeat": 0}
    for row in files.read_jsonl(recipe.run_dir / "questions.raw.jsonl", missing="empty"):
        q = clean_question(row["text"])
        if q is None or row["finish_reason"] != "stop":
            dropped["not_a_problem"] += 1
            removed.append({"stage": "questions", "reason": "not_a_problem", "text": row["text"],
                            "seed_id": row["prompt_id"]})
            continue
        key = " ".join(q.split()).lower()
        if key in seen:
            dropped["exact_repeat"] += 1
            removed.append({"stage": "questions", "reason": "exact_repeat", "problem": q,
                            "seed_id": row["prompt_id"]})
            continue
        seen.add(key)
        out.append({"id": len(out), "problem": q, "seed_id": row["prompt_id"]})
    write_jsonl(recipe.run_dir / "new_problems.jsonl", out)
    return {"written": len(out), **dropped}


def filter_solutions(recipe: SynthRecipe, tokenizer) -> tuple[list[dict], list[dict], dict]:
    """(kept rows {problem, solution, answer, origin, problem_id}, removed rows, counts per reason)."""
    from posttrain.data.answers import extract_answer, grade
    from posttrain.eval.math import majority
    from posttrain.synth.overlap import near_duplicates
    f, d = recipe.filters, recipe.run_dir
    kept, removed, counts = [], [], {}

    def drop(reason: str, **row) -> None:
        counts[reason] = counts.get(reason, 0) + 1
        removed.append({"stage": "filter", "reason": reason, **row})

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def consider(problem: str, pid: str, origin: str, samples: list[dict], gold: str) -> None:
        if n_tokens(problem) > f.max_problem_tokens:
            drop("problem_too_long", problem=problem, problem_id=pid)
            return
        for s in samples:
            text = s["text"]
            if s["finish_reason"] != "stop":
                drop("unfinished", problem_id=pid, solution=text)
            elif not grade(text, gold):
                drop("wrong_answer" if extract_answer(text) is not None else "no_answer", problem_id=pid,
                     solution=text)
            elif not f.min_solution_tokens <= n_tokens(text) <= f.max_solution_tokens:
                drop("solution_length", problem_id=pid, solution=text)
            else:
                kept.append({"problem": problem, "solution": text, "answer": gold, "origin": origin,
                             "problem_id": pid})

    seeds = files.read_jsonl(d / "seeds.jsonl", missing="empty")
    by_seed: dict[int, list] = {}
    for s in files.read_jsonl(d / "solutions.jsonl", missing="empty"):
        by_seed.setdefault(s["prompt_id"], []).append(s)
    for r in seeds:
        consider(r["problem"], f"seed-{r['id']}", "seed", by_seed.get(r["id"], []), r["answer"])
    if recipe.questions.enabled:
        news = files.read_jsonl(d / "new_problems.jsonl", missing="empty")
        dup = near_duplicates([r["problem"] for r in seeds] + [r["problem"] for r in news],
                              n=f.near_duplicate_n, threshold=f.near_duplicate_threshold)
        by_new: dict[int, list] = {}
        for s in files.read_jsonl(d / "new_solutions.jsonl", missing="empty"):
            by_new.setdefault(s["prompt_id"], []).append(s)
        for r in news:
            j = len(seeds) + r["id"]
            if j in dup:
                other, score = dup[j]
                match = seeds[other]["problem"] if other < len(seeds) else news[other - len(seeds)]["problem"]
                drop("near_duplicate", problem=r["problem"], problem_id=f"new-{r['id']}", matched=match,
                     score=round(score, 4))
                continue
            samples = by_new.get(r["id"], [])
            answer, votes = majority([extract_answer(s["text"]) if s["finish_reason"] == "stop" else None
                                      for s in samples])
            if answer is None or votes < recipe.questions.min_agreement * len(samples):
                drop("low_agreement", problem=r["problem"], problem_id=f"new-{r['id']}", majority=answer,
                     votes=votes, of=len(samples))
                continue
            consider(r["problem"], f"new-{r['id']}", "new", samples, answer)
    unique, seen = [], set()
    for row in kept:
        key = (row["problem"], row["solution"])
        if key in seen:
            drop("duplicate_solution", problem_id=row["problem_id"], solution=row["solution"])
            continue
        seen.add(key)
        unique.append(row)
    return unique, removed, counts


def read_test_problems(path: Path, field: str | None, key: str) -> list[str]:
    """The problems of a test set file or folder. Only the problem is read: a decontamination target needs
    no answer (a file of AMC or AIME problems may carry none in a form the graders read)."""
    from posttrain.data.readers import iter_sourced_rows
    from posttrain.eval.math import PROBLEM_FIELDS
    out = []
    for file, line, row in iter_sourced_rows(path):
        if not isinstance(row, dict):
            raise DataError(f"expected an object, got {type(row).__name__}", file=file, line=line)
        name = field if field is not None else next((k for k in PROBLEM_FIELDS if k in row), None)
        if name is None or name not in row:
            wanted = repr(field) if field is not None else f"one of {list(PROBLEM_FIELDS)}"
            raise DataError(f"no problem field: looked for {wanted}, found {sorted(row)}; "
                            f"name it in {key}.field", file=file, line=line)
        text = row[name]
        if not isinstance(text, str) or not text.strip():
            raise DataError("expected a non-empty string", file=file, line=line, field=name)
        out.append(text.strip())
    if not out:
        raise DataError(f"no problems in the test set ({key})", file=str(path))
    return out


def decontam_targets(recipe: SynthRecipe) -> list[tuple[str, str]]:
    """(test set label, problem) for every problem of every decontamination test set."""
    from posttrain.synth.config import resolve_test_sets
    out = []
    for i, (ts, path) in enumerate(zip(recipe.decontam.test_sets, resolve_test_sets(recipe))):
        out += [(ts.label, p) for p in read_test_problems(path, ts.field, f"decontam.test_sets[{i}]")]
    return out


def decontaminate(recipe: SynthRecipe, rows: list[dict], tests: list[tuple[str, str]], embed=None) \
        -> tuple[list[dict], list[dict], dict]:
    """(clean rows, removed rows with the matched test item and score, counts per pass)."""
    from posttrain.synth.overlap import (
        embedding_contamination,
        minilm_dir,
        minilm_embedder,
        ngram_contamination,
    )
    c = recipe.decontam
    problems = sorted({r["problem"] for r in rows})
    texts = [t for _, t in tests]
    hits: dict[str, dict] = {}
    for i, (j, score) in ngram_contamination(problems, texts, n=c.ngram, threshold=c.ngram_threshold).items():
        hits[problems[i]] = {"pass": "ngram", "test_set": tests[j][0], "test_problem": texts[j],
                             "score": round(score, 4)}
    use_emb = c.embedding == "on" or (c.embedding == "auto"
                                      and (embed is not None or minilm_dir() is not None))
    if use_emb:
        embed = embed or minilm_embedder()
        left = [p for p in problems if p not in hits]
        for i, m in embedding_contamination(left, texts, embed, threshold=c.embedding_threshold,
                                            top_k=c.top_k).items():
            hits[left[i]] = {"pass": "embedding", "test_set": tests[m["test"]][0],
                             "test_problem": texts[m["test"]],
                             "score": round(m["score"], 4), "neighbours": m["neighbours"]}
    clean = [r for r in rows if r["problem"] not in hits]
    removed = [{"stage": "decontam", "reason": h["pass"], "problem": p, **h} for p, h in hits.items()]
    labels = list(dict.fromkeys(name for name, _ in tests))
    counts = {"ngram": sum(h["pass"] == "ngram" for h in hits.values()),
              "embedding": sum(h["pass"] == "embedding" for h in hits.values()),
              "embedding_pass": "run" if use_emb else "off (MiniLM wheel not installed)",
              "rows_removed": len(rows) - len(clean),
              "test_problems": {n: sum(name == n for name, _ in tests) for n in labels},
              "problems_removed_by_test_set": {n: sum(h["test_set"] == n for h in hits.values())
                                               for n in labels}}
    return clean, removed, counts


def write_report(recipe: SynthRecipe, stats: dict[str, dict]) -> dict:
    """report.md and report.json: per stage what was kept and dropped and why, and its wall time."""
    from posttrain.eval.report import markdown_table
    from posttrain.files import atomic_write_json, atomic_write_text
    d = recipe.run_dir
    rows = files.read_jsonl(d / "synth.jsonl", missing="empty")
    summary = {"recipe": recipe.name, "teacher": recipe.model.name, "seed": recipe.seed, "stages": stats,
               "kept": len(rows),
               "kept_by_origin": {o: sum(r["origin"] == o for r in rows) for o in ("seed", "new")},
               "kept_problems": len({r["problem_id"] for r in rows})}
    atomic_write_json(d / "report.json", summary)
    table = [[name, s.get("seconds", ""), ", ".join(f"{k} {v}" for k, v in s.items() if k != "seconds")]
             for name, s in stats.items()]
    text = "\n".join([
        f"# Math synthesis: {recipe.name}", "",
        f"- teacher: `{recipe.model.name}`" + (f" + adapter {recipe.model.adapter}" if recipe.model.adapter
                                               else ""),
        f"- seed {recipe.seed}; {recipe.solutions.k} solutions per seed problem; "
        + (f"{recipe.questions.per_seed} new problems per seed, {recipe.questions.k} solutions each, "
           f"majority >= {recipe.questions.min_agreement:.0%}" if recipe.questions.enabled
           else "no question augmentation"),
        f"- decontamination against {', '.join(t.label for t in recipe.decontam.test_sets)}: "
        f"{recipe.decontam.ngram}-gram overlap >= "
        f"{recipe.decontam.ngram_threshold}, embedding cosine >= {recipe.decontam.embedding_threshold}; "
        f"no LLM judge",
        f"- kept: {summary['kept']} solutions of {summary['kept_problems']} problems "
        f"({summary['kept_by_origin']['seed']} on seed problems, "
        f"{summary['kept_by_origin']['new']} on new ones)", "",
        markdown_table(["stage", "wall time (s)", "counts"], table), "",
        "Every dropped item, with its stage, reason and (decontamination) the matched test problem "
        "and score: removed.jsonl.", ""])
    atomic_write_text(d / "report.md", text)
    return {"kept": summary["kept"]}


def stages(recipe: SynthRecipe, recipe_path: Path | None, ctx, overrides: list[str]):
    from posttrain.config import flat
    from posttrain.contracts import StageDef
    from posttrain.pipeline import select
    settings = flat(recipe.model_dump(mode="json"))
    d = recipe.run_dir
    removed: list[dict] = []

    def keys(*prefixes):
        return select(settings, ("seed", "model", "generation", "batch_size") + prefixes)

    def sampled(stage: str):
        def run():
            records, params, out = sampling_job(recipe, stage)
            return sample_sharded(recipe, recipe_path, stage, records, params, out, progress=ctx.progress,
                                  overrides=overrides)
        return run

    def timed(fn):
        def run():
            t0 = time.time()
            out = fn()
            return {**out, "seconds": round(time.time() - t0, 1)}
        return run

    def filter_stage():
        _, tok = teacher(recipe)
        kept, removed_f, counts = filter_solutions(recipe, tok)
        write_jsonl(d / "filtered.jsonl", kept)
        write_jsonl(d / "removed.filter.jsonl", removed_f)
        return {"kept": len(kept), "dropped": counts}

    def decontam_stage():
        clean, removed_d, counts = decontaminate(recipe,
                                                 files.read_jsonl(d / "filtered.jsonl", missing="empty"),
                                                 decontam_targets(recipe))
        write_jsonl(d / "synth.jsonl", [sft_row(r["problem"], r["solution"], answer=r["answer"],
                                                origin=r["origin"],
                                                problem_id=r["problem_id"]) for r in clean])
        removed = [r for name in ("removed.questions.jsonl", "removed.filter.jsonl")
                   for r in files.read_jsonl(d / name, missing="empty")]
        write_jsonl(d / "removed.jsonl", removed + removed_d)
        return {"kept": len(clean), **counts}

    def new_problems():
        out = make_new_problems(recipe, removed)
        write_jsonl(d / "removed.questions.jsonl", removed)
        return out

    out = [StageDef("seeds", select(settings, ("seeds",)), timed(lambda: make_seeds(recipe)), ["seeds.jsonl"],
                    uses_weights=False),
           StageDef("solutions", keys("solutions"), sampled("solutions"),
                    ["solutions.jsonl", "solutions.jsonl.source.json"], inputs=["seeds.jsonl"])]
    if recipe.questions.enabled:
        out += [StageDef("questions", keys("questions"), sampled("questions"),
                         ["questions.raw.jsonl", "questions.raw.jsonl.source.json"], inputs=["seeds.jsonl"]),
                StageDef("new_problems", select(settings, ("questions",)), timed(new_problems),
                         ["new_problems.jsonl", "removed.questions.jsonl"], inputs=["questions.raw.jsonl"],
                         uses_weights=False),
                StageDef("new_solutions", keys("questions", "solutions"), sampled("new_solutions"),
                         ["new_solutions.jsonl", "new_solutions.jsonl.source.json"],
                         inputs=["new_problems.jsonl"])]
    inputs = ["solutions.jsonl"] + (["new_solutions.jsonl"] if recipe.questions.enabled else [])
    out += [StageDef("filter", select(settings, ("filters", "questions", "model")), timed(filter_stage),
                     ["filtered.jsonl", "removed.filter.jsonl"], inputs=inputs, uses_weights=False),
            StageDef(LAST_STAGE, select(settings, ("decontam",)), timed(decontam_stage),
                     ["synth.jsonl", "removed.jsonl"],
                     inputs=["filtered.jsonl"], uses_weights=False)]
    return out


def run_synth(recipe: SynthRecipe, recipe_path: Path | None = None, *, overrides: list[str] | None = None,
              restart_from: str | None = None, until: str | None = None, progress: bool = True) -> dict:
    """Run (or resume) every stage, then write the report; returns {stage: stats}. `until` stops after
    that stage; the report is written only when the last stage has run."""
    import yaml

    from posttrain.files import atomic_write_text
    from posttrain.generation.sampler import use_backend
    from posttrain.pipeline import run_stages
    from posttrain.synth.config import resolve_test_sets
    resolve_test_sets(recipe)  # a missing test set fails now, not at the last stage after the sampling
    recipe.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(recipe.run_dir / "recipe.yaml",
                      yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    with use_backend(recipe.generation):
        (stats,) = run_stages(recipe, lambda ctx: stages(recipe, recipe_path, ctx, overrides or []),
                              lambda t: teacher(recipe), restart_from=restart_from, until=until,
                              progress=progress, final_model=lambda folder: None)
    if until is None or until == LAST_STAGE:
        write_report(recipe, stats)
    return stats
