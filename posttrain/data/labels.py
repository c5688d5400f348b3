"""The label-judgement answer format (RL4GLUE, docs/methods.md, NLU): how a reply states a label, and
which label a completion states.

The policy answers inside ``<Judgement>...</Judgement>`` (:func:`format_judgement`); the prompt pre-fills the
assistant turn with ``<Judgement>``, so a completion normally reads ``Positive</Judgement>``. Prompts and SFT
rows (:mod:`posttrain.tasks.nlu`) write this format, accuracy (:func:`posttrain.tasks.nlu.nlu_accuracy`) reads
it, and the reward (:mod:`posttrain.rewards.label`) scores what :func:`judgement_prediction` reads.

Reading a completion (:func:`judgement_prediction`):

1. Take the text before the first ``</Judgement>`` (the closing tag is matched exactly, case-sensitively,
   as the official code does). No closing tag → **invalid**.
2. Remove every ``<Judgement>`` opening tag from that text, so a completion that repeats the pre-filled
   prefix (``<Judgement>Positive</Judgement>``) reads the same as one that does not
   (``Positive</Judgement>``).
3. Find which label words occur in it: case-insensitive, as whole words (not inside another word, so
   "No" is not found in "Not" or "Nothing", "Yes" not in "Yesterday"); the words of a multi-word label
   may be separated by any whitespace ("Option  one"). Longer labels are matched first and the text they
   cover is not searched again for shorter ones, so with labels "Entailment" / "Not entailment" the text
   "not entailment" counts only as "Not entailment". Repeats of the same label count once.
   Exactly one label found → that label is the prediction; none, or two or more → **invalid** (None).
"""
from __future__ import annotations

import re
from typing import Sequence

__all__ = ["OPEN_TAG", "CLOSE_TAG", "check_labels", "format_judgement", "judgement_prediction",
           "judgement_text"]

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


def check_labels(labels: Sequence[str]) -> list[str]:
    """``labels`` as a list, checked: a non-empty list of non-blank label words, none listed twice
    (case-insensitively); else ValueError."""
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
    labels = check_labels(labels)
    text = judgement_text(completion)
    if text is None:
        return None
    found = _found(text, labels)
    return found[0] if len(found) == 1 else None
