"""Sample a prompt set into a JSONL file, incrementally, resuming after a kill without duplicates.

One line per sample: {"prompt_id", "sample_index", "prompt", "answer", "meta", "text", "token_ids",
"logprobs", "finish_reason"}. `prompt_id` is the prompt's row index in the data, which also seeds its
samples, so a resumed run writes exactly what an uninterrupted one would have.

Resume rule: a batch's lines are written with one write + flush + fsync. On start, the file is read
back; a torn last line is discarded, and so is any prompt with fewer than n samples; if anything was
discarded the file is rewritten (temp file + rename) with only complete prompts, which are then skipped.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from posttrain.data.template import encode_prompt
from posttrain.errors import DataError
from posttrain.generation.sampler import Sample, SamplingParams, SamplingStats, sample


def read_samples(path: Path, n: int) -> tuple[dict[int, list[dict]], bool]:
    """Complete prompts already in `path` ({prompt_id: rows sorted by sample_index}) and whether the
    file held anything else (a torn line or an incomplete prompt)."""
    by_prompt: dict[int, dict[int, dict]] = {}
    dirty = False
    if not path.exists():
        return {}, False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                dirty = True  # torn write at the kill
                break
            try:
                row = json.loads(line)
                by_prompt.setdefault(int(row["prompt_id"]), {})[int(row["sample_index"])] = row
            except (ValueError, KeyError, TypeError):
                dirty = True
    complete = {pid: [rows[k] for k in range(n)] for pid, rows in by_prompt.items()
                if all(k in rows for k in range(n))}
    dirty = dirty or len(complete) != len(by_prompt) or any(len(r) != n for r in by_prompt.values())
    return complete, dirty


def _rewrite(path: Path, done: dict[int, list[dict]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for pid in sorted(done):
            for row in done[pid]:
                f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def sample_to_file(model, tokenizer, records: Sequence, params: SamplingParams, out: str | os.PathLike, *,
                   batch_size: int = 16, max_prompt_length: int | None = None,
                   progress: bool = True) -> tuple[dict[int, list[dict]], SamplingStats]:
    """Samples for every PromptRecord (resuming `out`); returns ({prompt_id: rows}, stats of this call)."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    done, dirty = read_samples(path, params.n)
    if any(pid >= len(records) for pid in done):
        raise DataError(f"{path} holds prompt ids beyond the {len(records)} prompts given: written for other "
                        f"data? Use another --out or delete it", file=str(path))
    stale = [pid for pid, rows in done.items() if rows[0].get("prompt") != records[pid].prompt]
    if stale:
        raise DataError(f"{path} was written for other prompts (prompt id {stale[0]} differs); use another "
                        f"output file or delete it", file=str(path))
    if dirty:
        _rewrite(path, done)
    todo = [i for i in range(len(records)) if i not in done]
    encoded = [encode_prompt(tokenizer, records[i].prompt, max_length=max_prompt_length) for i in todo]

    def rows_of(batch: list[Sample]) -> list[dict]:
        rows = []
        for s in sorted(batch, key=lambda s: (s.prompt_id, s.sample_index)):
            r = records[s.prompt_id]
            rows.append({"prompt_id": s.prompt_id, "sample_index": s.sample_index, "prompt": r.prompt,
                         "answer": r.answer, "meta": r.meta, **{k: v for k, v in s.to_row().items()
                                                                if k not in ("prompt_id", "sample_index")}})
        return rows

    with open(path, "a", encoding="utf-8") as f:
        def write(batch: list[Sample]) -> None:
            rows = rows_of(batch)
            f.write("".join(json.dumps(row) + "\n" for row in rows))
            f.flush()
            os.fsync(f.fileno())
            for row in rows:
                done.setdefault(row["prompt_id"], []).append(row)

        _, stats = sample(model, tokenizer, encoded, params, prompt_ids=todo, batch_size=batch_size,
                          progress=progress, on_batch=write)
    stats.extra["resumed_prompts"] = len(records) - len(todo)
    for pid in done:
        done[pid].sort(key=lambda r: r["sample_index"])
    return done, stats
