"""Math evaluation: greedy accuracy and maj@k on GSM8K, MATH-500 or any file of problems with answers.

Grading is the one answer module's (posttrain.data.answers): a completion is right when it commits to
answers and every one equals the gold (math-verify equivalence), so a hedge ("3 or maybe 4") is wrong.
maj@k: k samples at `temperature`; the answers (the last one each sample commits to) are grouped by
math-verify equivalence; the largest group wins, a tie goes to the group whose first member came first;
the problem counts as solved when the winner equals the gold.

The prompt asks for the final answer in \\boxed{} (`MATH_PROMPT`, shown in every report).
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from posttrain.data.answers import extract_answer, gold_answer, grade, last_boxed, math_equal
from posttrain.data.readers import iter_sourced_rows
from posttrain.errors import DataError

MATH_PROMPT = ("Solve the following problem. Reason step by step, "
               "and put the final answer in \\boxed{{}}.\n\n"
               "{problem}")
PROBLEM_FIELDS = ("problem", "question", "query", "prompt", "input")
ANSWER_FIELDS = ("answer", "final_answer", "gold", "target", "expected_answer", "solution", "output")
BUILTIN = {"gsm8k": ("gsm8k", "test.jsonl"), "math500": ("math500", "test.jsonl")}


@dataclass
class MathItem:
    problem: str
    answer: str  # the gold final answer (after `####`, or inside the last \boxed{}, or the field itself)
    meta: dict = field(default_factory=dict)  # subject, level, unique_id when the file has them
    file: str | None = None
    line: int | None = None


def resolve_data(name: str | os.PathLike) -> Path:
    """`gsm8k` / `math500` (the test sets under the shared data folder) or a file path."""
    from posttrain.tasks.nlu import default_data_dir
    if str(name) in BUILTIN:
        path = default_data_dir().joinpath(*BUILTIN[str(name)])
        if not path.is_file():
            raise DataError(f"{name}: no such file (set POSTTRAIN_SHARED_DATA, or pass the file's path)",
                            file=str(path))
        return path
    path = Path(name)
    if not path.exists():
        raise DataError("no such file; give a path or one of " + ", ".join(BUILTIN), file=str(path))
    return path


def _gold_of(key: str, value, file, line) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise DataError(f"expected a string or a number, got {type(value).__name__}", file=file, line=line,
                        field=key)
    text = str(value)
    if "####" in text:
        gold = gold_answer(text)
    elif "\\boxed" in text:
        gold = last_boxed(text)
    elif key == "solution":  # a worked solution without a box carries no checkable answer
        gold = None
    else:
        gold = text.strip()
    if not gold:
        raise DataError(f"no final answer in {key!r} (expected '#### N', \\boxed{{}}, or a bare answer)",
                        file=file, line=line, field=key)
    return gold


def item_from_row(row: dict, *, file: str | None = None, line: int | None = None) -> MathItem:
    if not isinstance(row, dict):
        raise DataError(f"expected an object, got {type(row).__name__}", file=file, line=line)
    pkey = next((k for k in PROBLEM_FIELDS if k in row), None)
    akeys = [k for k in ANSWER_FIELDS if k in row]
    if pkey is None or not akeys:
        raise DataError(f"no problem/answer fields: found {sorted(row)}; a problem is read from one of "
                        f"{list(PROBLEM_FIELDS)} and its answer from one of {list(ANSWER_FIELDS)}",
                        file=file, line=line)
    problem = row[pkey]
    if not isinstance(problem, str) or not problem.strip():
        raise DataError("expected a non-empty string", file=file, line=line, field=pkey)
    # the first field that holds a checkable answer: `answer` before a worked `solution`
    errors = []
    for key in akeys:
        try:
            gold = _gold_of(key, row[key], file, line)
            break
        except DataError as e:
            errors.append(e)
    else:
        raise errors[0]
    meta = {k: row[k] for k in ("subject", "level", "unique_id", "id") if k in row}
    return MathItem(problem.strip(), gold, meta, file, line)


def load_items(path: str | os.PathLike, limit: int | None = None) -> list[MathItem]:
    path = resolve_data(path)
    items = []
    for file, line, row in iter_sourced_rows(path):
        items.append(item_from_row(row, file=file, line=line))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise DataError("no problems in the file", file=str(path))
    return items


def majority(answers: Sequence[str | None]) -> tuple[str | None, int]:
    """(the answer of the largest group of equivalent answers, its size); None answers are ignored; a tie
    goes to the group seen first. (None, 0) when no sample gave an answer."""
    groups: list[list[str]] = []
    for a in answers:
        if a is None:
            continue
        for g in groups:
            if math_equal(a, g[0]):
                g.append(a)
                break
        else:
            groups.append([a])
    if not groups:
        return None, 0
    best = max(groups, key=len)  # max keeps the first of equal sizes
    return best[0], len(best)


def prompt_messages(item: MathItem, system_prompt: str | None = None) -> list[dict]:
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": MATH_PROMPT.format(problem=item.problem)}]


def evaluate(model, tokenizer, items: Sequence[MathItem], *, k: int = 1, temperature: float = 0.7,
             max_new_tokens: int = 512, batch_size: int = 16, seed: int = 0, system_prompt: str | None = None,
             progress: bool = False) -> dict:
    """{"n", "greedy_accuracy", "maj_accuracy" (k > 1), "by_subject", "by_level", "rows"}. Under several
    processes each rank samples its shard of the problems and every rank grades them all."""
    from posttrain.data.template import encode_prompt
    from posttrain.distributed import is_main, map_sharded
    from posttrain.generation.sampler import SamplingParams, sample

    def texts(ids: list[int]) -> list[tuple[str, list[str]]]:
        """(greedy text, the k voting texts) of these problems; the global ids seed the votes."""
        prompts = [encode_prompt(tokenizer, prompt_messages(items[i], system_prompt)) for i in ids]
        greedy, _ = sample(model, tokenizer, prompts, SamplingParams(temperature=0,
                                                                     max_new_tokens=max_new_tokens),
                           prompt_ids=ids, batch_size=batch_size, progress=progress and is_main())
        voted = [[]] * len(ids)
        if k > 1:
            voted, _ = sample(model, tokenizer, prompts, SamplingParams(n=k, temperature=temperature,
                                                                        max_new_tokens=max_new_tokens,
                                                                        seed=seed),
                              prompt_ids=ids, batch_size=batch_size, progress=progress and is_main())
        return [(g[0].text, [s.text for s in v]) for g, v in zip(greedy, voted)]

    rows = []
    for i, (it, (text, vote_texts)) in enumerate(zip(items, map_sharded(texts, list(range(len(items)))))):
        row = {"index": i, "problem": it.problem, "gold": it.answer, **it.meta, "completion": text,
               "answer": extract_answer(text), "correct": grade(text, it.answer)}
        if k > 1:
            answers = [extract_answer(t) for t in vote_texts]
            maj, votes = majority(answers)
            row.update(samples=answers, maj_answer=maj, maj_votes=votes,
                       maj_correct=math_equal(maj, it.answer))
        rows.append(row)
    res = {"n": len(rows), "k": k, "greedy_accuracy": sum(r["correct"] for r in rows) / len(rows),
           "prompt": MATH_PROMPT.format(problem="<problem>"), "rows": rows}
    if k > 1:
        res["maj_accuracy"] = sum(r["maj_correct"] for r in rows) / len(rows)
    for key in ("subject", "level"):
        if any(key in r for r in rows):
            res[f"by_{key}"] = breakdown(rows, key)
    return res


def breakdown(rows: list[dict], key: str) -> dict:
    """Per value of `key`: n, greedy accuracy (and maj accuracy when present)."""
    groups: dict = defaultdict(list)
    for r in rows:
        groups[str(r.get(key, "?"))].append(r)
    out = {}
    for name in sorted(groups):
        g = groups[name]
        out[name] = {"n": len(g), "greedy_accuracy": sum(r["correct"] for r in g) / len(g)}
        if "maj_correct" in g[0]:
            out[name]["maj_accuracy"] = sum(r["maj_correct"] for r in g) / len(g)
    return out


def write_results(res: dict, out_dir: Path, title: str) -> tuple[Path, Path]:
    """report.md (the prompt, the accuracies and breakdowns) and graded.jsonl (one row per problem)."""
    from posttrain.distributed import on_main
    report, graded = out_dir / "report.md", out_dir / "graded.jsonl"
    on_main(_write_results, res, report, graded, title)  # the others return once the files are there
    return report, graded


def _write_results(res: dict, report: Path, graded: Path, title: str) -> None:
    from posttrain.eval.report import markdown_table
    from posttrain.files import atomic_write_text, write_jsonl
    from posttrain.stats import wilson_interval
    n = res["n"]
    lo, hi = wilson_interval(round(res["greedy_accuracy"] * n), n)
    lines = [f"# {title}", "", "Prompt (the user turn; the chat template wraps it):", "", "```",
             res["prompt"], "```", "",
             f"- problems: {n}; greedy accuracy {res['greedy_accuracy']:.3f} (95% Wilson {lo:.3f}-{hi:.3f})"]
    if "maj_accuracy" in res:
        lines.append(f"- maj@{res['k']}: {res['maj_accuracy']:.3f}")
    for key in ("subject", "level"):
        if f"by_{key}" in res:
            cols = ["n", "greedy_accuracy"] + (["maj_accuracy"] if "maj_accuracy" in res else [])
            lines += ["", f"## By {key}", "",
                      markdown_table([key, *cols],
                                     [[name, *[round(v[c], 3) if isinstance(v[c], float) else v[c]
                                               for c in cols]]
                                      for name, v in res[f"by_{key}"].items()])]
    atomic_write_text(report, "\n".join(lines) + "\n")
    write_jsonl(graded, res["rows"])
