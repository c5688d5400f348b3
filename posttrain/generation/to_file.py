"""Sample a prompt set into a JSONL file, incrementally, resuming after a kill without duplicates.

One line per sample: {"prompt_id", "sample_index", "prompt", "assistant_prefix", "answer", "meta", "text",
"token_ids", "logprobs", "finish_reason"}. `prompt_id` is the prompt's row index in the data, which also
seeds its samples, so a resumed run writes exactly what an uninterrupted one would have.

A record's `assistant_prefix` (null when it has none) is part of the prompt: the prompt tokens end with
it and the model continues it, so `text` and `token_ids` are only what was generated after it, without
the prefix (what a reward scores is the prefix + `text`: posttrain.data.records.completion_text). A
record with `prefix_ids` (a prefix given as exact token ids) has its prompt end with those ids, and its
lines carry them as "prefix_ids".

Resume rule: a batch's lines are written with one write + flush + fsync. On start, the file is read
back; a torn last line is discarded, and so is any prompt with fewer than n samples; if anything was
discarded the file is rewritten (temp file + rename) with only complete prompts, which are then skipped.

Source: `<out>.source.json` (samples.jsonl -> samples.jsonl.source.json) says what the samples came from:
{"weights": weights hash of the model, "tokenizer": hash of its vocab, special tokens and chat template,
"sampling": every SamplingParams field, "max_prompt_length"}. It is written (atomically) before the
first sample line. A file that already holds anything is only resumed when its sidecar matches this
call, so samples of two models or two settings never end up mixed in one file; a file with samples but
no sidecar (an older version wrote it) is refused, its source being unknown. An empty or missing file
starts afresh and (re)writes the sidecar. Batch size and progress are not part of the source: every
sample has its own random stream seeded from (seed, prompt id, sample index), whatever its batch (only
float rounding follows the batch's shape: log-probs can differ in the 6th decimal, and the line order).

Several processes (torchrun, `posttrain.distributed`): every rank reads what is held, then samples its
contiguous shard of the prompts still to do into its own part file `<out>.part-<rank>` (incrementally,
with the same resume rule); after all are done rank 0 writes `<out>` as one process writes it (complete
prompts in prompt-id order) and removes the parts, and every rank returns the full result. A killed
run's parts are read by any later run, whatever its number of processes (one included): their complete
prompts count as done, and the merge folds them into `<out>`. Every rank must see the same folder (one
machine, or a shared filesystem).
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from posttrain import distributed as dist
from posttrain.data.template import encode_record_prompt
from posttrain.errors import DataError
from posttrain.files import atomic_write_json, atomic_write_text
from posttrain.generation.sampler import Sample, SamplingParams, SamplingStats, sample

# greedy decoding never draws, so these cannot change its samples
_UNUSED_WHEN_GREEDY = ("top_p", "top_k", "seed")


def source_path(out: str | os.PathLike) -> Path:
    path = Path(out)
    return path.with_name(path.name + ".source.json")


def part_path(out: str | os.PathLike, r: int) -> Path:
    """Rank r's part file (module docstring)."""
    path = Path(out)
    return path.with_name(f"{path.name}.part-{r}")


def part_files(out: str | os.PathLike) -> list[Path]:
    """Every part file of `out`, of this run or of a killed run with any number of processes."""
    path = Path(out)
    return sorted(path.parent.glob(glob.escape(path.name) + ".part-*"))


def sampled_weights_hash(model) -> str:
    """weights_hash of what the model computes: a fresh LoRA adapter (every B zero) is the identity, so
    it hashes as its base, and a run that wraps the model in a new adapter reuses the base's samples."""
    from posttrain.models.fingerprint import weights_hash
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    fresh = bool(lora_b) and all(not p.detach().any() for p in lora_b)
    return weights_hash(model, adapter=not fresh)


def tokenizer_hash(tokenizer) -> str:
    """Content, not name_or_path: the same tokenizer found under another cache folder is the same."""
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps([sorted(tokenizer.get_vocab().items()), tokenizer.special_tokens_map,
                         getattr(tokenizer, "chat_template", None)], default=str).encode())
    return h.hexdigest()


def _source(model, tokenizer, params: SamplingParams, max_prompt_length: int | None,
            weights: str | None) -> dict:
    sampling = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(params).items()}
    return {"weights": weights or sampled_weights_hash(model), "tokenizer": tokenizer_hash(tokenizer),
            "sampling": sampling, "max_prompt_length": max_prompt_length}


def check_source(path: Path, source: dict) -> None:
    """Refuse to resume `path` unless its sidecar says it was sampled the way this call samples."""
    side = source_path(path)
    fix = "use another output file or delete it"
    if not side.exists():
        raise DataError(f"holds samples but no {side.name}, so its source (model, sampling settings) "
                        f"is unknown: {fix}", file=str(path))
    try:
        old = json.loads(side.read_text(encoding="utf-8"))
        old_sampling = dict(old["sampling"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"unreadable ({e}): delete it together with {path.name}", file=str(side)) from e
    if old.get("weights") != source["weights"]:
        raise DataError(f"was sampled from other weights (weights hash {old.get('weights')}, this model "
                        f"{source['weights']}): {fix}", file=str(path))
    if old.get("tokenizer") != source["tokenizer"]:
        raise DataError(f"was sampled with another tokenizer (hash {old.get('tokenizer')}, this one "
                        f"{source['tokenizer']}): {fix}", file=str(path))
    new_sampling = source["sampling"]
    greedy = old_sampling.get("temperature") == 0 and new_sampling["temperature"] == 0
    for k in sorted(set(old_sampling) | set(new_sampling)):
        if greedy and k in _UNUSED_WHEN_GREEDY:
            continue
        if old_sampling.get(k) != new_sampling.get(k):
            raise DataError(f"was sampled with {k}={old_sampling.get(k)!r}, "
                            f"this run has {k}={new_sampling.get(k)!r}: {fix}", file=str(path))
    if old.get("max_prompt_length") != source["max_prompt_length"]:
        raise DataError(f"was sampled with max_prompt_length={old.get('max_prompt_length')!r}, this run has "
                        f"max_prompt_length={source['max_prompt_length']!r}: {fix}", file=str(path))


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


def read_held(path: Path, n: int) -> tuple[dict[int, list[dict]], bool]:
    """read_samples of `path` with the complete prompts of its part files added."""
    done, dirty = read_samples(path, n)
    for part in part_files(path):
        for pid, rows in read_samples(part, n)[0].items():
            done.setdefault(pid, rows)
    return done, dirty


def _combined(per_rank: list[SamplingStats]) -> SamplingStats:
    """The ranks' stats as one call's: counts summed, the time of the slowest (they ran at once)."""
    return SamplingStats(prompts=sum(s.prompts for s in per_rank), samples=sum(s.samples for s in per_rank),
                         new_tokens=sum(s.new_tokens for s in per_rank),
                         seconds=max(s.seconds for s in per_rank),
                         decode_steps=sum(s.decode_steps for s in per_rank),
                         extra={k: v for s in reversed(per_rank) for k, v in s.extra.items()})


def _ids_or_none(record) -> list[int] | None:
    ids = getattr(record, "prefix_ids", None)
    return None if ids is None else list(ids)


def _rewrite(path: Path, done: dict[int, list[dict]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for pid in sorted(done) for row in done[pid]),
                      fsync=True)


def sample_to_file(model, tokenizer, records: Sequence, params: SamplingParams, out: str | os.PathLike, *,
                   batch_size: int = 16, max_prompt_length: int | None = None,
                   progress: bool = True, weights: str | None = None,
                   ids: Sequence[int] | None = None) -> tuple[dict[int, list[dict]], SamplingStats]:
    """Samples for every PromptRecord (resuming `out`); returns ({prompt_id: rows}, stats of this call).

    `ids`: sample only these prompt ids (a shard of the records: worker i of N takes i, i+N, ...); the
    file then holds only them, with their global prompt ids and seeds. Under several processes the
    ranks share the work (module docstring); each returns the whole result.

    `weights`: the model's sampled_weights_hash when the caller has it already (it costs ~1.5 s for
    the embedded model). Raises DataError when `out` was sampled from another source (module docstring)."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a killed run's parts are resumed through the sharded path even by one process
    sharded = dist.world() > 1 or bool(part_files(path))
    source = _source(model, tokenizer, params, max_prompt_length, weights)
    if any(p.stat().st_size > 0 for p in [path, *part_files(path)] if p.exists()):
        check_source(path, source)
    elif dist.is_main():
        atomic_write_json(source_path(path), source)
    done, dirty = read_held(path, params.n)
    if any(pid >= len(records) for pid in done):
        raise DataError(f"{path} holds prompt ids beyond the {len(records)} prompts given: written for other "
                        f"data? Use another --out or delete it", file=str(path))
    stale = [pid for pid, rows in done.items() if rows[0].get("prompt") != records[pid].prompt
             or rows[0].get("assistant_prefix") != records[pid].assistant_prefix
             or rows[0].get("prefix_ids") != _ids_or_none(records[pid])]
    if stale:
        raise DataError(f"{path} was written for other prompts (prompt id {stale[0]} differs); use another "
                        f"output file or delete it", file=str(path))
    wanted = range(len(records)) if ids is None else list(ids)
    if ids is not None and set(done) - set(wanted):
        raise DataError(f"{path} holds prompt ids outside this shard: written for another shard or run",
                        file=str(path))
    todo = [i for i in wanted if i not in done]
    resumed = len(wanted) - len(todo)
    target, kept = path, done
    if sharded:
        dist.barrier()  # every rank has read what is held (and agrees on `todo`) before any rank writes
        todo = todo[slice(*dist.bounds(len(todo)))]
        target = part_path(path, dist.rank())
        kept, dirty = read_samples(target, params.n)
    if dirty:
        _rewrite(target, kept)
    encoded = [encode_record_prompt(tokenizer, records[i], max_length=max_prompt_length) for i in todo]

    def rows_of(batch: list[Sample]) -> list[dict]:
        rows = []
        for s in sorted(batch, key=lambda s: (s.prompt_id, s.sample_index)):
            r = records[s.prompt_id]
            rows.append({"prompt_id": s.prompt_id, "sample_index": s.sample_index, "prompt": r.prompt,
                         "assistant_prefix": r.assistant_prefix, "answer": r.answer, "meta": r.meta,
                         **({"prefix_ids": list(r.prefix_ids)} if r.prefix_ids is not None else {}),
                         **{k: v for k, v in s.to_row().items() if k not in ("prompt_id", "sample_index")}})
        return rows

    with open(target, "a", encoding="utf-8") as f:
        def write(batch: list[Sample]) -> None:
            rows = rows_of(batch)
            f.write("".join(json.dumps(row) + "\n" for row in rows))
            f.flush()
            os.fsync(f.fileno())
            for row in rows:
                done.setdefault(row["prompt_id"], []).append(row)

        _, stats = sample(model, tokenizer, encoded, params, prompt_ids=todo, batch_size=batch_size,
                          progress=progress and dist.is_main(), on_batch=write)
    if sharded:
        stats = _combined(dist.gather_objects(stats))  # also: every rank's part is complete
        with dist.main_first() as first:
            if first:
                _rewrite(path, read_held(path, params.n)[0])
                for part in part_files(path):
                    part.unlink()
        done, _ = read_samples(path, params.n)
    stats.extra["resumed_prompts"] = resumed
    for pid in done:
        done[pid].sort(key=lambda r: r["sample_index"])
    return done, stats
