"""TL-Training's MAE ("mitigate adverse data", docs/methods.md "Tool use: TL-Training"): an assistant turn
whose tool feedback is an error is not trained on, but stays in the history of later turns; and one training
sample per assistant turn. The trajectories with adverse turns to drop are made by
:mod:`posttrain.tools.trajectories`.

**The MAE rule** (:func:`adverse_signature`, :func:`is_adverse`): the feedback of an assistant turn is the
run of ``tool`` messages right after it (none when a user or assistant message, or the end, follows). It is
adverse when any of its messages matches one of :data:`SIGNATURES`, tried in order, case-insensitively,
on the raw text (so ``NAMEERROR: ... IS NOT DEFINED`` matches):

- ``not_defined``          "is not defined"                (NameError)
- ``unexpected_keyword``   "unexpected keyword"            (TypeError: extra argument)
- ``positional_argument``  "positional argument"           (TypeError: missing / too many arguments)
- ``invalid_api_call``     "Invalid API call"
- ``connection``           "ConnectionError", "connection refused / reset / aborted / timed out",
                           "max retries exceeded", "failed to establish a new connection",
                           "connect timeout", ECONNREFUSED / ECONNRESET / ETIMEDOUT
- ``http_400``             "400 Bad Request", "400 Client Error", "HTTP 400", "HTTP/1.1 400",
                           "status code 400", "status": 400, "error code: 400"
- ``error_key``            the WHOLE content is a JSON object (or a list of objects) with a top-level
                           key "error" (any case) whose value is truthy: ``{"error": null}``,
                           ``{"error": ""}`` and ``{"error": false}`` say "no error" and do not match.

Decided near-misses: the bare word "error" is not a signature, so ``{"summary": "the error rate fell"}``,
``{"error_rate": 0.02}`` and ``{"errors_found": 3}`` (real Seal-Tools response fields) are not adverse, and
neither is ``{"count": 400}``. The text signatures read the whole text, values included, as the paper's
string match does: a successful result whose value says "is not defined" IS flagged. That errs toward not
training a turn, the cheap side (a lost sample, against training on an error); the synthetic results here
are built never to match (checked when they are made).

**Samples** (:func:`turn_samples`): one :class:`TurnSample` per assistant turn, in order: the messages up
to and including that turn (copies), its index, and whether to train on it. Adverse turns are EMITTED with
``trained=False`` rather than left out, so the sample count is always the number of assistant turns and a
reader can count what MAE dropped; the turn stays, unchanged, in every later sample's history. With
``mae=False`` every turn is trained (standard multi-turn SFT). Samples are data only: tokenising, masking
the history and weighting the loss belong to the encoder and the training method.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from posttrain.data.tool_records import ToolConversation

SIGNATURES: tuple[tuple[str, re.Pattern], ...] = tuple((name, re.compile(rx, re.I)) for name, rx in (
    ("not_defined", r"is\s+not\s+defined"),
    ("unexpected_keyword", r"unexpected\s+keyword"),
    ("positional_argument", r"positional\s+argument"),
    ("invalid_api_call", r"invalid\s+api\s+call"),
    ("connection", r"connectionerror|connection\s+(?:refused|reset|aborted|timed\s+out)|max\s+retries\s+"
                   r"exceeded|failed\s+to\s+establish\s+a\s+new\s+connection|connect\s*timeout|"
                   r"\be(?:connrefused|connreset|timedout)\b"),
    ("http_400",
     r"\b400\s+(?:bad\s+request|client\s+error)\b|\bhttp(?:/\d(?:\.\d)?)?\s*(?:error\s*|status\s*)?"
                 r":?\s*400\b|\bstatus(?:[ _]?code)?\W{0,3}400\b|\berror[ _]?code\W{0,3}400\b"),
))
ERROR_KEY = "error_key"


# ------------------------------------------------------------------------------------------ the MAE rule

def _texts(feedback: Any) -> list[str]:
    if feedback is None:
        return []
    if isinstance(feedback, str):
        return [feedback]
    if isinstance(feedback, dict):
        return [str(feedback.get("content") or "")]
    return [t for item in feedback for t in _texts(item)]


def _has_error_key(text: str) -> bool:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    objects = value if isinstance(value, list) else [value]
    return any(isinstance(o, dict) and any(str(k).lower() == "error" and bool(v) for k, v in o.items())
               for o in objects)


def adverse_signature(feedback: Any) -> str | None:
    """The name of the first signature (module docstring) that ``feedback`` matches, or None.

    ``feedback``: a text, a message ``{"role": "tool", "content": ...}``, or a sequence of them (the tool
    messages after one assistant turn); None or an empty sequence (no feedback) is never adverse."""
    for text in _texts(feedback):
        for name, rx in SIGNATURES:
            if rx.search(text):
                return name
        if _has_error_key(text.strip()):
            return ERROR_KEY
    return None


def is_adverse(feedback: Any) -> bool:
    """Whether the tool feedback after an assistant turn is an error (the MAE rule, module docstring)."""
    return adverse_signature(feedback) is not None


def feedback_after(messages: Sequence[dict], index: int) -> list[dict]:
    """The run of ``tool`` messages right after ``messages[index]``."""
    out = []
    for m in messages[index + 1:]:
        if m["role"] != "tool":
            break
        out.append(m)
    return out


# --------------------------------------------------------------------------------------------- samples

@dataclass
class TurnSample:
    """One assistant turn to train on (or not): the conversation up to and including it.

    ``tools`` and ``meta`` are the conversation's own objects, shared by all its samples: read, don't
    change them."""
    messages: list[dict]
    target: int                 # index of the target assistant turn in ``messages`` (always the last)
    trained: bool
    adverse: bool               # its feedback matches the MAE rule (kept with mae=False too, for counting)
    tools: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def turn_samples(conv: ToolConversation, *, mae: bool) -> list[TurnSample]:
    """One sample per assistant turn of ``conv`` (module docstring): with ``mae`` an adverse turn has
    ``trained=False``; it is still emitted, and kept as it is in the history of later samples."""
    out = []
    for i, m in enumerate(conv.messages):
        if m["role"] != "assistant":
            continue
        adverse = is_adverse(feedback_after(conv.messages, i))
        out.append(TurnSample([dict(x) for x in conv.messages[:i + 1]], i, not (mae and adverse), adverse,
                              conv.tools, conv.meta))
    return out
