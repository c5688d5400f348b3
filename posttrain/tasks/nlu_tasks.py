"""NLU task table (RL4GLUE, docs/methods.md, NLU): each task's label words, instruction and row converter.

A converter turns one raw row into ``(example text, gold label word)``, reading the gold label strictly;
a row it cannot read raises :class:`BadField`, to which :func:`posttrain.tasks.nlu.load_file` adds the
file and line. Fields and labels:

| task  | fields                                          | label → word                                     |
|-------|-------------------------------------------------|--------------------------------------------------|
| sst2  | sentence                                        | 1/"1" Positive, 0/"0" Negative                   |
| rte   | premise (sentence1), hypothesis (sentence2)     | "entailment" Yes, "not_entailment" No            |
| boolq | passage, question                               | true Yes, false No (bool, 0/1 or "true"/"false")|
| cb    | premise (sentence1), hypothesis (sentence2)     | "entailment"/"contradiction"/"neutral",          |
|       |                                                 | capitalised                                      |
| copa  | premise, choice1, choice2, question cause/effect| 0 "Option one", 1 "Option two"                   |
| wic   | word, sentence1, sentence2                      | true Same, false Different                       |
| wsc   | text, span1_text, span2_text (or target.{...})  | true Yes, false No                               |

Integer codes for the string-labelled tasks (RTE, CB) are refused: sources disagree on their order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from posttrain.data.labels import CLOSE_TAG, OPEN_TAG
from posttrain.errors import DataError

__all__ = ["TASKS", "TaskSpec", "get_task"]


class BadField(Exception):
    """Raised by a row converter; the loader adds the file and line."""

    def __init__(self, fld: str, message: str):
        super().__init__(message)
        self.field, self.message = fld, message


@dataclass(frozen=True)
class TaskSpec:
    """One classification task: ``convert(row) -> (example text, gold label word)``."""
    name: str
    labels: tuple[str, ...]
    instruction: str
    convert: Callable[[dict], tuple[str, str]] = field(repr=False)
    folders: tuple[str, ...] = ()  # where its files live under a data folder, first match wins
    title: str = ""

    @property
    def answer_form(self) -> str:
        # every allowed answer spelled out in full: with a placeholder form ("<Judgement>LABEL</Judgement>,
        # where LABEL is one of ...") the embedded model wrote "LABEL" or ended the turn at once (SST-2 dev,
        # first 40, zero-shot: 0% accuracy, 100% invalid, against 62% / 2% with this form)
        return "Answer with exactly one of: " + " or ".join(f"{OPEN_TAG}{w}{CLOSE_TAG}"
                                                            for w in self.labels) + "."

    def user_content(self, text: str) -> str:
        """The user turn for one example: instruction, answer form, a blank line, the example."""
        return f"{self.instruction}\n{self.answer_form}\n\n{text}"


def _get(row: dict, *keys: str) -> Any:
    for k in keys:
        if k in row:
            return row[k]
    have = ", ".join(sorted(map(str, row))) or "nothing"
    raise BadField(keys[0], f"missing field (row has: {have})")


def _text(row: dict, *keys: str) -> str:
    value = _get(row, *keys)
    fld = next(k for k in keys if k in row)
    if not isinstance(value, str):
        raise BadField(fld, f"expected a string, got {'null' if value is None else type(value).__name__}")
    if not value.strip():
        raise BadField(fld, "empty string")
    return value.strip()


def _describe(value: Any) -> str:
    return f"{value!r} ({'null' if value is None else type(value).__name__})"


def _binary(row: dict, true_word: str, false_word: str, *, allow_bool: bool) -> str:
    """A 0/1 label (int or "0"/"1"; with ``allow_bool`` also true/false and "true"/"false")."""
    value = _get(row, "label")
    key = value
    if isinstance(value, bool):
        key = int(value) if allow_bool else None
    elif isinstance(value, str):
        s = value.strip().lower()
        key = {"0": 0, "1": 1}.get(s, {"true": 1, "false": 0}.get(s) if allow_bool else None)
    elif not isinstance(value, int):
        key = None
    if key == 1:
        return true_word
    if key == 0:
        return false_word
    allowed = "true/false or 0/1" if allow_bool else "0 or 1"
    hint = " (unlabelled test data?)" if value == -1 else ""
    raise BadField("label", f"expected {allowed}, got {_describe(value)}{hint}")


def _named(row: dict, mapping: dict[str, str]) -> str:
    value = _get(row, "label")
    if isinstance(value, str) and value.strip().lower() in mapping:
        return mapping[value.strip().lower()]
    hint = (" (integer codes are refused: their order differs between sources)"
            if isinstance(value, int) else "")
    raise BadField("label", f"expected one of {', '.join(map(repr, mapping))}, got {_describe(value)}{hint}")


def _sst2(row: dict) -> tuple[str, str]:
    return f"Text: {_text(row, 'sentence')}", _binary(row, "Positive", "Negative", allow_bool=False)


def _pair(row: dict) -> str:
    return (f"Premise: {_text(row, 'premise', 'sentence1')}\n"
            f"Hypothesis: {_text(row, 'hypothesis', 'sentence2')}")


def _rte(row: dict) -> tuple[str, str]:
    return _pair(row), _named(row, {"entailment": "Yes", "not_entailment": "No"})


def _cb(row: dict) -> tuple[str, str]:
    return _pair(row), _named(row, {"entailment": "Entailment", "contradiction": "Contradiction",
                                    "neutral": "Neutral"})


def _boolq(row: dict) -> tuple[str, str]:
    question = _text(row, "question")
    if not question.endswith("?"):
        question += "?"  # BoolQ questions come without one
    return (f"Passage: {_text(row, 'passage')}\nQuestion: {question}",
            _binary(row, "Yes", "No", allow_bool=True))


def _copa(row: dict) -> tuple[str, str]:
    q = _get(row, "question")
    if q not in ("cause", "effect"):
        raise BadField("question", f"expected 'cause' or 'effect', got {_describe(q)}")
    text = (f"Premise: {_text(row, 'premise')}\nWhich is the more likely {q}?\n"
            f"Option one: {_text(row, 'choice1')}\nOption two: {_text(row, 'choice2')}")
    # label 0 = choice1 ("Option one"), 1 = choice2
    return text, _binary(row, "Option two", "Option one", allow_bool=False)


def _wic(row: dict) -> tuple[str, str]:
    text = (f"Word: {_text(row, 'word')}\nSentence 1: {_text(row, 'sentence1')}\n"
            f"Sentence 2: {_text(row, 'sentence2')}")
    return text, _binary(row, "Same", "Different", allow_bool=True)


def _wsc(row: dict) -> tuple[str, str]:
    spans = row
    if "target" in row and "span1_text" not in row:
        spans = row["target"]
        if not isinstance(spans, dict):
            raise BadField("target",
                           f"expected an object with span1_text and span2_text, got {_describe(spans)}")
    try:
        span1, span2 = _text(spans, "span1_text"), _text(spans, "span2_text")
    except BadField as e:
        if spans is not row:
            e.field = f"target.{e.field}"
        raise
    text = f'Sentence: {_text(row, "text")}\nDoes the pronoun "{span2}" refer to "{span1}"?'
    return text, _binary(row, "Yes", "No", allow_bool=True)


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("sst2", ("Positive", "Negative"),
             "Decide whether the sentiment of the text is positive or negative.",
             _sst2, ("sst2", "SST-2", "glue/SST-2"), "SST-2 sentiment"),
    TaskSpec("rte", ("Yes", "No"),
             "Determine whether the premise entails the hypothesis.",
             _rte, ("superglue/RTE", "RTE"), "RTE textual entailment"),
    TaskSpec("boolq", ("Yes", "No"),
             "Answer the question about the passage with yes or no.",
             _boolq, ("superglue/BoolQ", "BoolQ"), "BoolQ yes/no questions"),
    TaskSpec("cb", ("Entailment", "Contradiction", "Neutral"),
             "Classify the relationship between the premise and the hypothesis as entailment, "
             "contradiction or neutral.",
             _cb, ("superglue/CB", "CB"), "CommitmentBank 3-way entailment"),
    TaskSpec("copa", ("Option one", "Option two"),
             "Choose which of the two options is the more likely cause or effect of the premise, as asked.",
             _copa, ("superglue/COPA", "COPA"), "COPA choice of plausible alternatives"),
    TaskSpec("wic", ("Same", "Different"),
             "Determine whether the word has the same meaning in the two sentences.",
             _wic, ("superglue/WiC", "WiC"), "WiC word in context"),
    TaskSpec("wsc", ("Yes", "No"),
             "Determine whether the pronoun refers to the given noun phrase in the sentence.",
             _wsc, ("superglue/WSC", "WSC"), "WSC Winograd schema coreference"),
)}


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The TaskSpec for a name (case-insensitive; "sst-2" works too); DataError listing the known ones."""
    if isinstance(name, TaskSpec):
        return name
    key = str(name).lower().replace("-", "")
    if key not in TASKS:
        raise DataError(f"unknown NLU task {name!r}; known tasks: {', '.join(TASKS)}", field="task")
    return TASKS[key]

