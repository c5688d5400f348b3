"""Tool-call evaluation (`posttrain eval tools`): BFCL AST accuracy per category and Seal-Tools P/R/F1.

Completions come from a predictions file or from a model. A predictions file is JSON lines, one row per
example: ``{"id": <example id>, "completion": <the model's text>}`` (or ``"text"``), or ``{"id", "calls":
[{"name", "arguments"}, ...]}``; texts are read in our one call format (:mod:`posttrain.data.tool_calls`), so
BFCL's own result files, in Python call syntax, are not. Every example
needs a prediction; rows for ids not in the data are counted and ignored (one file may serve many
categories). With a model, prompts are rendered by :func:`posttrain.tools.prompt.encode_tool_prompt` and
decoded greedily.

Scoring: every completion goes through :func:`posttrain.data.tool_calls.parse_calls`; BFCL examples get
:func:`posttrain.tools.bfcl.check_bfcl` (accuracy per category, the reasons for failures), Seal-Tools
examples :mod:`posttrain.tools.seal` (format rate, exact match, tool selection / parameter identification /
content filling P/R/F1, overall and per easy / difficult).
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

from posttrain.data.tool_calls import format_calls, parse_calls
from posttrain.errors import DataError
from posttrain.tools.bfcl import check_bfcl
from posttrain.tools.loaders import ToolExample
from posttrain.tools.seal import SealCounts, seal_counts, seal_scores

TEXT_FIELDS = ("completion", "text")


def _prediction_text(row: dict, file: str, line: int) -> str:
    if "calls" in row:
        calls = row["calls"]
        if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
            raise DataError("expected a list of {name, arguments} objects", file=file, line=line,
                            field="calls")
        return json.dumps(calls)  # parsed like any text, so a malformed call is judged, not fatal
    key = next((k for k in TEXT_FIELDS if k in row), None)
    if key is None:
        raise DataError(f"no prediction: expected one of {', '.join(TEXT_FIELDS + ('calls',))} (row has "
                        f"{', '.join(sorted(row))})", file=file, line=line)
    value = row[key]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {type(value).__name__}", file=file, line=line, field=key)
    return value


def load_predictions(path: str | Path) -> dict[str, str]:
    """id -> completion text, from a predictions file (module docstring)."""
    from posttrain.data.readers import iter_sourced_rows
    out: dict[str, str] = {}
    where: dict[str, int] = {}
    for file, line, row in iter_sourced_rows(path):
        ex_id = row.get("id")
        if not isinstance(ex_id, str) or not ex_id:
            raise DataError(f"expected the example id as a non-empty string, got {ex_id!r}", file=file,
                            line=line,
                            field="id")
        if ex_id in out:
            raise DataError(f"duplicate prediction for {ex_id!r} (also line {where[ex_id]})", file=file,
                            line=line,
                            field="id")
        out[ex_id] = _prediction_text(row, file, line)
        where[ex_id] = line
    return out


def completions_for(examples: Sequence[ToolExample], predictions: dict[str, str],
                    source: str = "predictions") -> tuple[list[str], int]:
    """The completion of each example, and how many predictions name no example."""
    missing = [ex.id for ex in examples if ex.id not in predictions]
    if missing:
        raise DataError(f"{len(missing)} example(s) have no prediction, first {missing[0]!r} (of "
                        f"{examples[0].file})", file=str(source), field="id")
    ids = {ex.id for ex in examples}
    return [predictions[ex.id] for ex in examples], sum(1 for k in predictions if k not in ids)


def generate_completions(model, tokenizer, examples: Sequence[ToolExample], *, max_new_tokens: int = 256,
                         batch_size: int = 16, mode: str = "auto", progress: bool = False) -> list[str]:
    """Greedy completions of each example's prompt with its tools (under several processes each rank
    decodes its shard; every rank returns them all)."""
    from posttrain.distributed import is_main, map_sharded
    from posttrain.generation.sampler import SamplingParams, sample
    from posttrain.tools.prompt import encode_tool_prompt

    def complete(shard: list[ToolExample]) -> list[str]:
        prompts = [encode_tool_prompt(tokenizer, ex.messages, ex.tools, mode=mode) for ex in shard]
        out, _ = sample(model, tokenizer, prompts, SamplingParams(temperature=0,
                                                                  max_new_tokens=max_new_tokens),
                        batch_size=batch_size, progress=progress and is_main())
        return [row[0].text for row in out]
    return map_sharded(complete, examples)


def score(examples: Sequence[ToolExample], completions: Sequence[str]) -> dict:
    """Scores and graded rows (module docstring)."""
    if len(examples) != len(completions):
        raise ValueError(f"{len(examples)} examples but {len(completions)} completions")
    rows, by_cat, reasons = [], defaultdict(list), defaultdict(Counter)
    seal: dict[str, SealCounts] = defaultdict(SealCounts)
    for ex, text in zip(examples, completions):
        parsed = parse_calls(text)
        row = {"id": ex.id, "source": ex.source, "category": ex.category, "completion": text,
               "parsed": parsed.ok,
               "calls": [c.to_dict() for c in parsed.calls], "parse_error": parsed.error}
        if ex.source == "bfcl":
            v = check_bfcl(parsed, ex.tools, ex.possible_answer, ex.category)
            row.update(correct=v.correct, error=v.error, detail=v.detail)
            by_cat[ex.category].append(v.correct)
            reasons[ex.category][v.error or "correct"] += 1
        else:
            c = seal_counts(parsed, ex.calls or [])
            row.update(correct=bool(c.exact), gold=format_calls(ex.calls or []))
            seal[ex.category] += c
            seal["all"] += c
        rows.append(row)
    res: dict = {"n": len(rows), "rows": rows}
    if by_cat:
        res["bfcl"] = {cat: {"n": len(v), "accuracy": sum(v) / len(v), "outcomes": dict(reasons[cat])}
                       for cat, v in sorted(by_cat.items())}
        res["bfcl_accuracy"] = sum(sum(v) for v in by_cat.values()) / sum(len(v) for v in by_cat.values())
    if seal:
        res["seal_tools"] = {cat: seal_scores(c) for cat, c in sorted(seal.items())}
    return res


def summary_lines(res: dict) -> list[str]:
    """One printable line per BFCL category / Seal-Tools split."""
    lines = []
    for cat, r in res.get("bfcl", {}).items():
        lines.append(f"{cat:20s} accuracy {r['accuracy']:.3f}  n {r['n']}")
    for cat, r in res.get("seal_tools", {}).items():
        lines.append(f"seal-tools {cat:9s} format {r['format_rate']:.3f}  exact {r['exact_match']:.3f}  "
                     f"tool F1 {r['tool_selection']['f1']:.3f}  param-name F1 "
                     f"{r['parameter_identification']['f1']:.3f}  "
                     f"content F1 {r['content_filling']['f1']:.3f}  n {r['n']}")
    return lines


def write_results(res: dict, out_dir: Path, title: str) -> tuple[Path, Path]:
    """report.md (the scores) and graded.jsonl (one row per example), written atomically."""
    from posttrain.distributed import on_main
    report, graded = out_dir / "report.md", out_dir / "graded.jsonl"
    on_main(_write_results, res, report, graded, title)  # the others return once the files are there
    return report, graded


def _write_results(res: dict, report: Path, graded: Path, title: str) -> None:
    from posttrain.eval.report import markdown_table
    from posttrain.files import atomic_write_text
    lines = [f"# {title}", "", f"- examples: {res['n']}"]
    if "bfcl" in res:
        lines += ["", "## BFCL (AST match)", "", markdown_table(
            ["category", "n", "accuracy", "outcomes"],
            [[c, r["n"], round(r["accuracy"], 3),
              ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))]
             for c, r in res["bfcl"].items()])]
    if "seal_tools" in res:
        cols = ("tool_selection", "parameter_identification", "content_filling")
        lines += ["", "## Seal-Tools (P / R / F1)", "", markdown_table(
            ["split", "n", "format", "exact", *cols],
            [[c, r["n"], round(r["format_rate"], 3), round(r["exact_match"], 3),
              *(" / ".join(f"{r[k][m]:.3f}" for m in ("precision", "recall", "f1")) for k in cols)]
             for c, r in res["seal_tools"].items()])]
    atomic_write_text(report, "\n".join(lines) + "\n")
    atomic_write_text(graded, "".join(json.dumps(r, ensure_ascii=False,
                                                 default=str) + "\n" for r in res["rows"]))
