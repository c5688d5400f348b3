"""Turn a recipe's data source (a file, a cached Hub dataset, a built-in generator or a mixture of them)
into validated records."""
from __future__ import annotations

import random

from posttrain.config import DataSource
from posttrain.data.readers import RecordList, load_records
from posttrain.data.records import Conversation, PreferencePair, PromptRecord, TextRecord, UnpairedPreference
from posttrain.data.tool_records import ToolConversation
from posttrain.errors import DataError, RecipeError
from posttrain.tasks import synthetic
from posttrain.tasks.synthetic_pairs import generate_pairs

RECORD_TYPES = {"sft": Conversation, "preference": PreferencePair, "prompt": PromptRecord,
                "tool": ToolConversation, "unpaired": UnpairedPreference}


def synthetic_rows(src: DataSource, kind: str, instruction: str | None) -> list[dict]:
    spec = src.synthetic
    if spec.task not in synthetic.TASKS:
        raise RecipeError(f"data synthetic.task: unknown task {spec.task!r}; "
                          f"allowed: {', '.join(sorted(synthetic.TASKS))}")
    options = dict(spec.options)
    flip_rate = options.pop("flip_rate", 0.0)  # only pairs have labels to flip; prompts ignore it
    try:
        if kind == "preference":
            return generate_pairs(spec.task, spec.n, seed=spec.seed, flip_rate=flip_rate,
                                  instruction=instruction, **options)
        problems = synthetic.generate(spec.task, spec.n, seed=spec.seed, **options)
    except (TypeError, ValueError) as e:
        raise RecipeError(f"data synthetic.options for {spec.task!r}: {e}") from None
    if kind == "sft":
        return synthetic.to_sft_rows(problems, instruction=instruction)
    if kind == "prompt":
        return synthetic.to_prompt_rows(problems, instruction=instruction)
    raise RecipeError(f"synthetic task {spec.task!r} gives sft, preference or prompt records, not {kind!r}")


def nlu_rows(src: DataSource, kind: str) -> list[dict]:
    from posttrain.tasks import nlu
    spec = src.nlu
    try:
        task = nlu.get_task(spec.task)
    except Exception as e:
        raise RecipeError(f"data nlu.task: {e}") from None
    examples = nlu.load_task(task, spec.split, spec.data_dir, limit=spec.limit)
    shots = ()
    if spec.shots:
        shots = nlu.sample_shots(nlu.load_task(task, "train", spec.data_dir), spec.shots,
                                 seed=spec.shots_seed)
    if kind == "sft":
        return nlu.sft_rows(task, examples, shots)
    if kind == "prompt":
        return nlu.prompt_rows(task, examples, shots)
    raise RecipeError(f"nlu task {spec.task!r} gives sft or prompt records, not {kind!r}")


def _member_name(src: DataSource) -> str:
    return src.path or (f"hub:{src.hub}" if src.hub else None) or \
        (f"synthetic:{src.synthetic.task}" if src.synthetic else f"nlu:{src.nlu.task}")


def load_mixture(src: DataSource, kind: str, *, instruction: str | None = None,
                 system_prompt: str | None = None, seed: int = 0, key: str | None = None) -> RecordList:
    """The records of every member, each member's part drawn without replacement by ``seed`` (a member with
    ``count: n`` gives n records; with shares, the mixture is the largest one each member can fill without
    repeating a record: N = min(len_i / share_i), member i gives round(share_i N)), then shuffled."""
    rng = random.Random(seed)
    loaded = [load_source(m, kind, instruction=instruction, system_prompt=system_prompt,
                          key=None if key is None else f"{key}[{i}]")
              for i, m in enumerate(src.mixture)]
    if src.mixture[0].count is not None:
        wants = [m.count for m in src.mixture]
    else:
        total = min(len(recs) / m.share for m, recs in zip(src.mixture, loaded))
        wants = [min(len(recs), round(m.share * total)) for m, recs in zip(src.mixture, loaded)]
    out = RecordList()
    for i, (m, recs, n) in enumerate(zip(src.mixture, loaded, wants)):
        if n > len(recs):
            raise RecipeError(f"data mixture [{i}].count: {n} records asked, {_member_name(m)} has "
                              f"{len(recs)}")
        out.extend(rng.sample(list(recs), n))
        out.skipped.extend(getattr(recs, "skipped", []))
    rng.shuffle(out)
    return out


# a source's own settings, which an error names as the recipe key (`data.train.format`) when it knows it
SOURCE_KEYS = ("format", "split", "hub")


def load_source(src: DataSource, kind: str, *, instruction: str | None = None,
                system_prompt: str | None = None, seed: int | None = None,
                key: str | None = None) -> RecordList:
    """Records of `kind` ("sft", "preference", "prompt", "tool", "unpaired"), validated before any training
    starts. A mixture is drawn by its own `seed` (the recipe's, set by the recipe schema), else by `seed`,
    else 0. The result says what was skipped as invalid (RecordList.skipped). `key` is where the source
    stands in the recipe (`data.train`): an error in its own settings (format, split, hub) names it."""
    if src.mixture is not None:
        records = load_mixture(src, kind, instruction=instruction, system_prompt=system_prompt,
                               seed=next(s for s in (src.seed, seed, 0) if s is not None), key=key)
        system_prompt = None  # the members have it already
    elif src.nlu is not None:
        cls = RECORD_TYPES[kind] if kind in RECORD_TYPES else None
        if cls is None:
            raise RecipeError(f"unknown record kind {kind!r}")
        name = f"nlu:{src.nlu.task}:{src.nlu.split}"
        records = [cls.from_row(row, file=name, line=i + 1) for i, row in enumerate(nlu_rows(src, kind))]
    elif src.synthetic is not None:
        cls = RECORD_TYPES[kind]
        name = f"synthetic:{src.synthetic.task}"
        records = [cls.from_row(row, file=name, line=i + 1)
                   for i, row in enumerate(synthetic_rows(src, kind, instruction))]
    else:
        limit = None if src.limit is None else src.skip + src.limit
        try:
            records = load_records(src.path, kind, fmt=src.format, limit=limit, on_invalid=src.on_invalid,
                                   columns=src.columns or None, split=src.split, hub=src.hub,
                                   max_invalid_fraction=src.max_invalid_fraction)
        except DataError as e:
            if key is None or e.field not in SOURCE_KEYS:
                raise
            raise e.under(key) from None
    skipped = getattr(records, "skipped", [])
    if src.skip or src.limit is not None:
        records = records[src.skip:None if src.limit is None else src.skip + src.limit]
    if system_prompt is not None:
        for r in records:
            if isinstance(r, TextRecord):
                continue  # plain text has no chat to put a system message in
            msgs = r.messages if kind in ("sft", "tool") else r.prompt
            if not msgs or msgs[0]["role"] != "system":
                msgs.insert(0, {"role": "system", "content": system_prompt})
    return RecordList(records, skipped)


def prompt_text(record) -> str:
    """The question a record asks (its last user turn), used to keep eval prompts out of training."""
    msgs = record.messages if isinstance(record, Conversation) else record.prompt
    return next(m["content"] for m in reversed(msgs) if m["role"] == "user")
