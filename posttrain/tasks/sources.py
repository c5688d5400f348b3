"""Turn a recipe's data source (a file or a built-in generator) into validated records."""
from __future__ import annotations

from posttrain.config import DataSource
from posttrain.data.readers import load_records
from posttrain.data.records import Conversation, PreferencePair, PromptRecord
from posttrain.data.tool_records import ToolConversation
from posttrain.errors import RecipeError
from posttrain.tasks import synthetic
from posttrain.tasks.synthetic_pairs import generate_pairs

RECORD_TYPES = {"sft": Conversation, "preference": PreferencePair, "prompt": PromptRecord,
                "tool": ToolConversation}


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


def load_source(src: DataSource, kind: str, *, instruction: str | None = None,
                system_prompt: str | None = None) -> list:
    """Records of `kind` ("sft", "preference", "prompt"), validated before any training starts."""
    if src.nlu is not None:
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
        records = load_records(src.path, kind, fmt=src.format, limit=limit, on_invalid=src.on_invalid)
    if src.skip or src.limit is not None:
        records = records[src.skip:None if src.limit is None else src.skip + src.limit]
    if system_prompt is not None:
        for r in records:
            msgs = r.messages if kind in ("sft", "tool") else r.prompt
            if not msgs or msgs[0]["role"] != "system":
                msgs.insert(0, {"role": "system", "content": system_prompt})
    return records


def prompt_text(record) -> str:
    """The question a record asks (its last user turn), used to keep eval prompts out of training."""
    msgs = record.messages if isinstance(record, Conversation) else record.prompt
    return next(m["content"] for m in reversed(msgs) if m["role"] == "user")
