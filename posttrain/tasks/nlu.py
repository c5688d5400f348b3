"""Language understanding as generation (RL4GLUE, docs/methods.md, NLU): tasks, loaders, prompts, SFT/RL rows.

Each task (:data:`TASKS`: sst2, rte, boolq, cb, copa, wic, wsc) is a :class:`TaskSpec`: its label words,
an instruction, and a function that turns a raw row into ``(example text, gold label word)``.

Prompt (:func:`build_messages`): one user turn holding the instruction, the required answer form and
the example; k-shot demonstrations come first as earlier user/assistant turns, each user turn written
exactly like the final one, each reply ``<Judgement>Label</Judgement>``. The assistant turn of the query
is pre-filled with :data:`ASSISTANT_PREFIX` = ``<Judgement>``: the rows carry it as ``assistant_prefix``,
which the records read into their field of that name, and
``posttrain.data.template.encode_prompt(..., assistant_prefix=...)`` appends it after the generation
prompt, so the model writes the label and ``</Judgement>``; :mod:`posttrain.rewards.label` scores that.
For example (SST-2, zero-shot, SmolLM2's ChatML template, which adds its default system turn)::

    <|im_start|>system
    You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
    <|im_start|>user
    Decide whether the sentiment of the text is positive or negative.
    Answer with exactly one of: <Judgement>Positive</Judgement> or <Judgement>Negative</Judgement>.

    Text: it 's a charming and often affecting journey .<|im_end|>
    <|im_start|>assistant
    <Judgement>

Files (found under a data folder, see :func:`task_file`): GLUE TSV with a header (SST-2:
``sentence<TAB>label``, label 0/1) and SuperGLUE JSON lines (FewGLUE ``train.jsonl``, ``val.jsonl``).
Gold labels are read strictly; a row that cannot be read raises :class:`~posttrain.errors.DataError`
naming the file, the 1-based line and the field. Each task's fields and label words are tabled in
:mod:`posttrain.tasks.nlu_tasks`, which holds :data:`TASKS`.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from posttrain.data.labels import OPEN_TAG, format_judgement, judgement_prediction
from posttrain.data.readers import iter_rows
from posttrain.errors import DataError
from posttrain.tasks.nlu_tasks import TASKS, BadField, TaskSpec, get_task

__all__ = [
    "ASSISTANT_PREFIX", "NLUExample", "SPLITS", "TASKS", "TaskSpec", "build_messages", "default_data_dir",
    "get_task", "load_file", "load_task", "nlu_accuracy", "prompt_rows", "sample_shots", "sft_rows",
    "task_file",
]

ASSISTANT_PREFIX = OPEN_TAG
SPLITS = ("train", "validation")
_SPLIT_ALIASES = {"train": "train", "validation": "validation", "val": "validation", "dev": "validation"}
_SPLIT_FILES = {
    "train": ("train.tsv", "train.jsonl"),
    "validation": ("dev.tsv", "val.jsonl", "validation.jsonl", "dev.jsonl", "validation.tsv"),
}


@dataclass
class NLUExample:
    """One example: the text shown to the model, its gold label word, the task and its 0-based index in
    the loaded split. ``file``/``line`` say where it came from (not part of equality)."""
    text: str
    label: str
    task: str
    index: int
    file: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)


def default_data_dir() -> Path:
    """``$POSTTRAIN_SHARED_DATA``, else the first ``shared/data`` folder found in the working directory or
    one of its parents (a checkout beside ``shared/`` finds it), else ``shared/data`` in the working
    directory, whose absence the caller reports."""
    env = os.environ.get("POSTTRAIN_SHARED_DATA")
    if env:
        return Path(env)
    cwd = Path.cwd()
    for folder in (cwd, *cwd.parents):
        if (folder / "shared" / "data").is_dir():
            return folder / "shared" / "data"
    return cwd / "shared" / "data"


def _split(split: str) -> str:
    key = str(split).lower()
    if key not in _SPLIT_ALIASES:
        raise DataError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)} "
                        f"(aliases: dev, val → validation)", field="split")
    return _SPLIT_ALIASES[key]


def task_file(name: str | TaskSpec, split: str, data_dir: str | Path | None = None) -> Path:
    """The file holding ``split`` of a task. ``data_dir`` (default :func:`default_data_dir`) is either a
    data folder holding the task folders (``sst2/``, ``superglue/BoolQ/``, or ``BoolQ/``) or the task's
    folder itself. Split files: train → train.tsv / train.jsonl; validation → dev.tsv / val.jsonl /
    validation.jsonl / dev.jsonl."""
    spec, split = get_task(name), _split(split)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if not root.is_dir():
        raise DataError("no such data folder: pass data_dir (recipe: data.train.nlu.data_dir), "
                        "set POSTTRAIN_SHARED_DATA, or run from a folder with shared/data in it or above it",
                        file=str(root))
    folders = [root / f for f in spec.folders] + [root]
    looked = []
    for folder in folders:
        for fname in _SPLIT_FILES[split]:
            p = folder / fname
            if p.is_file():
                return p
            looked.append(str(p))
    raise DataError(f"no {split} file for task {spec.name!r}; looked for: {', '.join(looked)}",
                    file=str(root),
                    field="split")


def _iter_tsv(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows of a TSV with a header line, as dicts; positions are 1-based file lines (the header is 1).
    Columns are split on tabs only (no quoting: GLUE sentences contain bare quotes)."""
    file = str(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = f.readline().rstrip("\r\n").split("\t")
            if not any(h.strip() for h in header):
                raise DataError("empty file or empty header line (expected column names)", file=file, line=1)
            for n, text in enumerate(f, start=2):
                text = text.rstrip("\r\n")
                if not text.strip():
                    continue
                cells = text.split("\t")
                if len(cells) < len(header):
                    raise DataError(f"expected {len(header)} tab-separated columns ({', '.join(header)}), "
                                    f"got {len(cells)}", file=file, line=n, field=header[len(cells)])
                if len(cells) > len(header):
                    raise DataError(f"expected {len(header)} tab-separated columns ({', '.join(header)}), "
                                    f"got {len(cells)} (a tab inside a field?)", file=file, line=n)
                yield n, dict(zip(header, cells))
    except UnicodeDecodeError as e:
        raise DataError(f"cannot read as UTF-8: {e}", file=file) from None


def _iter_any(path: Path) -> Iterator[tuple[int, dict]]:
    if path.name.lower().endswith(".tsv"):
        return _iter_tsv(path)
    return iter_rows(path)  # JSON lines (1-based lines), JSON, parquet, ... with DataError on bad rows


def load_file(name: str | TaskSpec, path: str | Path, limit: int | None = None) -> list[NLUExample]:
    """Examples of a task from one file (TSV with a header, or JSON lines / any format
    :func:`posttrain.data.readers.iter_rows` reads). Bad rows raise DataError(file, line, field)."""
    spec = get_task(name)
    path = Path(path)
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    if not path.exists():
        raise DataError("no such file", file=str(path))
    out: list[NLUExample] = []
    for n, row in _iter_any(path):
        if limit is not None and len(out) >= limit:
            break
        if not isinstance(row, dict):
            raise DataError(f"expected an object per row, got {type(row).__name__}", file=str(path), line=n)
        try:
            text, label = spec.convert(row)
        except BadField as e:
            raise DataError(f"{spec.name}: {e.message}", file=str(path), line=n, field=e.field) from None
        out.append(NLUExample(text, label, spec.name, len(out), file=str(path), line=n))
    return out


def load_task(name: str | TaskSpec, split: str, data_dir: str | Path | None = None,
              limit: int | None = None) -> list[NLUExample]:
    """The examples of ``split`` ("train" or "validation"; "dev"/"val" alias the latter) of a task,
    read from :func:`task_file`; ``limit`` keeps the first N."""
    return load_file(name, task_file(name, split, data_dir), limit=limit)


# ---------------------------------------------------------------- prompts


def _example_text(spec: TaskSpec, example: NLUExample | str, what: str) -> str:
    if isinstance(example, str):
        return example
    if not isinstance(example, NLUExample):
        raise TypeError(f"{what}: expected an NLUExample or a string, got {type(example).__name__}")
    if example.task != spec.name:
        raise ValueError(f"{what} is a {example.task!r} example, not {spec.name!r}")
    return example.text


def build_messages(spec: str | TaskSpec, example: NLUExample | str, shots: Sequence[NLUExample] = (),
                   system: str | None = None) -> list[dict]:
    """Chat messages for one example: ``[system?] + (user, assistant) per shot + user``.

    Every user turn is :meth:`TaskSpec.user_content` (instruction, answer form, example); each shot's
    reply is ``<Judgement>Label</Judgement>``. The list ends with the user turn: encode it with
    ``encode_prompt(tokenizer, messages, assistant_prefix=ASSISTANT_PREFIX)`` to get the assistant turn
    pre-filled with ``<Judgement>``. Without ``system`` the chat template's default system turn (if any)
    applies.
    """
    spec = get_task(spec)
    msgs: list[dict] = [{"role": "system", "content": system}] if system else []
    for j, shot in enumerate(shots):
        text = _example_text(spec, shot, f"shots[{j}]")
        if shot.label not in spec.labels:
            raise ValueError(f"shots[{j}] has label {shot.label!r}, not one of {spec.labels}")
        msgs.append({"role": "user", "content": spec.user_content(text)})
        msgs.append({"role": "assistant", "content": format_judgement(shot.label)})
    msgs.append({"role": "user", "content": spec.user_content(_example_text(spec, example, "example"))})
    return msgs


def sample_shots(train_examples: Sequence[NLUExample], k: int, seed: int = 0,
                 balanced: bool = True) -> list[NLUExample]:
    """``k`` demonstrations drawn from ``train_examples``, the same for the same inputs and seed.

    ``balanced``: each label gets ``k // L`` shots (L = number of labels present), the remaining
    ``k % L`` go to labels picked at random; a label with too few examples gives what it has and the
    rest is filled from the other labels. The chosen shots are then shuffled (so the order of labels
    carries no pattern). Without ``balanced``: a plain random sample.
    """
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    pool = list(train_examples)
    if k > len(pool):
        raise ValueError(f"cannot draw {k} shots from {len(pool)} training examples")
    rng = random.Random(seed)
    if k == 0:
        return []
    if not balanced:
        return rng.sample(pool, k)
    by_label: dict[str, list[NLUExample]] = {}
    for ex in pool:
        by_label.setdefault(ex.label, []).append(ex)
    labels = sorted(by_label)
    for lab in labels:
        rng.shuffle(by_label[lab])
    want = {lab: k // len(labels) for lab in labels}
    for lab in rng.sample(labels, k % len(labels)):
        want[lab] += 1
    chosen = []
    for lab in labels:
        chosen += by_label[lab][:want[lab]]
    if len(chosen) < k:  # some label ran short: fill from what is left, at random
        left = [ex for lab in labels for ex in by_label[lab][want[lab]:]]
        chosen += rng.sample(left, k - len(chosen))
    rng.shuffle(chosen)
    return chosen


# ---------------------------------------------------------------- rows for the methods


def sft_rows(spec: str | TaskSpec, examples: Iterable[NLUExample], shots: Sequence[NLUExample] = (),
             system: str | None = None) -> list[dict]:
    """SFT rows ``{"messages", "assistant_prefix": "<Judgement>", "task", "label", "index"}``
    (``Conversation.from_row`` reads them: ``assistant_prefix`` into its field, the other keys into
    meta): :func:`build_messages` plus the reply ``<Judgement>Label</Judgement>``.

    Masks and the prefill: at generation time ``<Judgement>`` is part of the prompt, and here it starts
    the assistant reply as the given ``assistant_prefix``, so the library's SFT encoding
    (:func:`posttrain.data.template.encode_conversation`) supervises only what follows it in the final
    reply: the label, ``</Judgement>`` and the end-of-turn token, not the demonstrations' replies. That is
    the method spec's SFT baseline, the NLL of the label tokens only (the official code masks everything up
    to ``<Judgement>``). Without the prefix (drop the key) every assistant token would be supervised.
    Shots taken from the same examples can include an example as its own demonstration; draw them from
    another split or leave ``shots`` empty for SFT.
    """
    spec = get_task(spec)
    rows = []
    for ex in examples:
        msgs = build_messages(spec, ex, shots, system)
        msgs.append({"role": "assistant", "content": format_judgement(ex.label)})
        rows.append({"messages": msgs, "assistant_prefix": ASSISTANT_PREFIX, "task": spec.name,
                     "label": ex.label,
                     "index": ex.index})
    return rows


def prompt_rows(spec: str | TaskSpec, examples: Iterable[NLUExample], shots: Sequence[NLUExample] = (),
                system: str | None = None) -> list[dict]:
    """Prompt rows for RL and evaluation: ``{"prompt": messages, "label": gold word, "labels": all label
    words, "task", "index", "assistant_prefix": "<Judgement>"}``. ``PromptRecord.from_row`` reads them
    (``assistant_prefix`` into its field, the rest but ``prompt`` into meta, which is what
    :class:`posttrain.rewards.label.LabelReward` reads). The prompt ends with the user turn: a sampler
    appends the record's ``assistant_prefix`` after the generation prompt
    (``encode_prompt(..., assistant_prefix=record.assistant_prefix)``)."""
    spec = get_task(spec)
    return [{"prompt": build_messages(spec, ex, shots, system), "label": ex.label,
             "labels": list(spec.labels),
             "task": spec.name, "index": ex.index, "assistant_prefix": ASSISTANT_PREFIX} for ex in examples]


# ---------------------------------------------------------------- evaluation


def nlu_accuracy(completions: Sequence[str], examples_or_meta: Sequence[NLUExample | dict],
                 labels: Sequence[str] | None = None) -> dict:
    """``{"accuracy", "invalid_rate", "n"}`` of completions parsed by the reward's rule
    (:func:`posttrain.data.labels.judgement_prediction`); an invalid completion counts as wrong.
    Gold labels come from NLUExamples or meta dicts (``{"label", "labels"?}``); the label words from
    ``labels``, else each entry's ``"labels"``, else its task's."""
    if len(completions) != len(examples_or_meta):
        raise ValueError(f"{len(completions)} completions but {len(examples_or_meta)} examples")
    correct = invalid = 0
    for i, (completion, ex) in enumerate(zip(completions, examples_or_meta)):
        if isinstance(ex, NLUExample):
            gold, words = ex.label, labels or (TASKS[ex.task].labels if ex.task in TASKS else None)
            if not words:
                raise ValueError(f"examples_or_meta[{i}]: task {ex.task!r} is not built in: pass labels=")
        elif isinstance(ex, dict):
            if ex.get("label") is None:
                raise ValueError(f"examples_or_meta[{i}] has no 'label'")
            gold = ex["label"]
            words = labels or ex.get("labels") or (TASKS[ex["task"]].labels if ex.get("task") in TASKS
                                                   else None)
            if not words:
                raise ValueError(f"examples_or_meta[{i}]: no label words "
                                 f"(pass labels=, or give 'labels' or 'task')")
        else:
            raise TypeError(f"examples_or_meta[{i}]: expected an NLUExample or a dict, "
                            f"got {type(ex).__name__}")
        pred = judgement_prediction(completion, words)
        if pred is None:
            invalid += 1
        elif pred.lower() == str(gold).lower():
            correct += 1
    n = len(completions)
    return {"accuracy": correct / n if n else 0.0, "invalid_rate": invalid / n if n else 0.0, "n": n}
