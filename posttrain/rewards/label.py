"""Label-match reward for classification as generation (RL4GLUE, METHODS.md §4).

The policy answers inside ``<Judgement>...</Judgement>``; the prompt pre-fills the assistant turn with
``<Judgement>``, so a completion normally reads ``Positive</Judgement>``.

The rule (:func:`judgement_prediction`, :func:`judgement_reward`), applied to one completion:

1. Take the text before the first ``</Judgement>`` (the closing tag is matched exactly, case-sensitively,
   as the official code does). No closing tag → **invalid**.
2. Remove every ``<Judgement>`` opening tag from that text, so a completion that repeats the pre-filled
   prefix (``<Judgement>Positive</Judgement>``) reads the same as one that does not (``Positive</Judgement>``).
3. Find which label words occur in it: case-insensitive, as whole words (not inside another word, so
   "No" is not found in "Not" or "Nothing", "Yes" not in "Yesterday"); the words of a multi-word label
   may be separated by any whitespace ("Option  one"). Longer labels are matched first and the text they
   cover is not searched again for shorter ones, so with labels "Entailment" / "Not entailment" the text
   "not entailment" counts only as "Not entailment". Repeats of the same label count once.
4. Exactly one label found → that label is the prediction: ``correct`` (default +1) if it is the gold
   label (case-insensitive), else ``wrong`` (default -1). None found, or two or more → **invalid**
   (default -3). This is the same for binary and 3-way tasks.

Where this differs from the official code (github.com/coder-qicao/RL4GLUE ``ppo.py``): the official
check is a case-sensitive substring test ("No" in "Not sure" counts as "No"; CB also accepts the
lower-case word), and for SST-2 it does not test for both words ("Positive" wins). Here every task uses
the whole-word, case-insensitive rule above, and both words present is always invalid, as METHODS.md
§4 states. STS-B (a regression reward) is not implemented.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from posttrain.errors import DataError

__all__ = ["OPEN_TAG", "CLOSE_TAG", "LabelReward", "format_judgement", "judgement_prediction",
           "judgement_reward", "judgement_text"]

OPEN_TAG = "<Judgement>"
CLOSE_TAG = "</Judgement>"


def format_judgement(label: str) -> str:
    """The reply that states ``label``: ``<Judgement>label</Judgement>``."""
    return f"{OPEN_TAG}{label}{CLOSE_TAG}"


def judgement_text(completion: str) -> str | None:
    """The text before the first ``</Judgement>`` with ``<Judgement>`` tags removed; None without a
    closing tag (steps 1-2 of the rule)."""
    end = completion.find(CLOSE_TAG)
    if end < 0:
        return None
    return completion[:end].replace(OPEN_TAG, " ")


def _pattern(label: str) -> re.Pattern:
    words = label.split()
    if not words:
        raise ValueError(f"empty label word {label!r}")
    body = r"\s+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def _check_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str) or not isinstance(labels, Sequence) or not labels:
        raise ValueError(f"labels must be a non-empty list of label words, got {labels!r}")
    out: list[str] = []
    for lab in labels:
        if not isinstance(lab, str) or not lab.strip():
            raise ValueError(f"label words must be non-empty strings, got {lab!r} in {list(labels)!r}")
        if any(" ".join(lab.split()).lower() == " ".join(o.split()).lower() for o in out):
            raise ValueError(f"label word {lab!r} is listed twice (case-insensitively) in {list(labels)!r}")
        out.append(lab)
    return out


def _found(text: str, labels: Sequence[str]) -> list[str]:
    """The labels that occur in ``text`` as whole words, longer labels first claiming their span."""
    taken: list[tuple[int, int]] = []
    found: list[str] = []
    for lab in sorted(labels, key=lambda s: len(" ".join(s.split())), reverse=True):
        hit = False
        for m in _pattern(lab).finditer(text):
            s, e = m.span()
            if any(s < te and ts < e for ts, te in taken):
                continue  # inside a longer label already found
            taken.append((s, e))
            hit = True
        if hit:
            found.append(lab)
    return found


def judgement_prediction(completion: str, labels: Sequence[str]) -> str | None:
    """The one label word the completion states (spelled as in ``labels``), or None when it is invalid:
    no ``</Judgement>``, no label word, or more than one distinct label word before it."""
    labels = _check_labels(labels)
    text = judgement_text(completion)
    if text is None:
        return None
    found = _found(text, labels)
    return found[0] if len(found) == 1 else None


def judgement_reward(completion: str, gold: str, labels: Sequence[str], correct: float = 1.0,
                     wrong: float = -1.0, invalid: float = -3.0) -> float:
    """The RL4GLUE reward of one completion (see the module docstring for the exact rule)."""
    labels = _check_labels(labels)
    gold_key = " ".join(str(gold).split()).lower()
    if not any(" ".join(lab.split()).lower() == gold_key for lab in labels):
        raise ValueError(f"gold label {gold!r} is not one of the label words {list(labels)!r}")
    pred = judgement_prediction(completion, labels)
    if pred is None:
        return float(invalid)
    return float(correct) if " ".join(pred.split()).lower() == gold_key else float(wrong)


class LabelMetaError(DataError, ValueError):
    """A meta entry the label reward needs is missing or malformed (both a DataError and a ValueError)."""


class LabelReward:
    """Reward ``label``: ``score(prompts, completions, meta)`` with ``meta[i] = {"label": gold word,
    "labels": [all label words]}`` (as :func:`posttrain.data.nlu.prompt_rows` writes them)."""

    name = "label"

    def __init__(self, correct: float = 1.0, wrong: float = -1.0, invalid: float = -3.0):
        self.correct, self.wrong, self.invalid = float(correct), float(wrong), float(invalid)

    def _meta(self, meta: Sequence[dict] | None, i: int, key: str) -> Any:
        if meta is None:
            raise LabelMetaError(f"reward 'label' needs meta[{i}]['{key}'], but meta is None", field=key)
        entry = meta[i]
        if not isinstance(entry, dict):
            raise LabelMetaError(f"reward 'label': meta[{i}] must be a dict, got {type(entry).__name__}",
                                 field=key)
        if entry.get(key) is None:
            have = ", ".join(sorted(map(str, entry))) or "none"
            raise LabelMetaError(f"reward 'label': meta[{i}] has no '{key}' (keys: {have})", field=key)
        return entry[key]

    def score(self, prompts: Sequence[str] | None, completions: Sequence[str],
              meta: Sequence[dict] | None = None) -> list[float]:
        if prompts is not None and len(prompts) != len(completions):
            raise ValueError(f"reward 'label': {len(prompts)} prompts but {len(completions)} completions")
        if meta is not None and len(meta) != len(completions):
            raise ValueError(f"reward 'label': {len(meta)} meta entries but {len(completions)} completions")
        out = []
        for i, completion in enumerate(completions):
            gold, labels = self._meta(meta, i, "label"), self._meta(meta, i, "labels")
            try:
                out.append(judgement_reward(completion, gold, labels, self.correct, self.wrong, self.invalid))
            except ValueError as e:
                raise LabelMetaError(f"reward 'label': meta[{i}]: {e}", field="label") from None
        return out
