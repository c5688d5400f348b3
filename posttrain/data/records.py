"""Record types every method consumes: a chat for SFT, a preference pair, a prompt (with an optional answer).

Records are validated when they are built, so bad data fails at load time (naming file, line and field),
never halfway through training. Messages are plain dicts ``{"role": ..., "content": ...}`` as chat
templates expect them; roles are ``system``, ``user`` and ``assistant``; content is a non-empty string.

``file`` and ``line`` on a record say where it came from (used in later error messages, e.g. when an
example does not fit ``max_length``); they take no part in equality.

``assistant_prefix`` (Conversation, PromptRecord; row key ``assistant_prefix``) is text that starts the
final assistant reply and is given, not generated, e.g. ``<Judgement>`` for the NLU tasks
(:mod:`posttrain.tasks.nlu`). For a PromptRecord the sampler's prompt ends with it (after the generation
prompt) and the model continues it; for a Conversation the final assistant message must start with it
and the SFT loss covers only what follows it (:func:`posttrain.data.template.encode_conversation`).
A reward sees the prefix plus the generated text (:func:`completion_text`). A row's ``assistant_prefix``
must be a non-empty string; null (or no key) means no prefix.

``prefix_ids`` (PromptRecord only, set by code, not read from rows) is a prefix given as token ids, for
continuing a sampled response exactly where it stopped (step-level DAPO's states): re-tokenizing its text
can merge tokens across the cut, so the prompt's ids end with these ids as they are. ``assistant_prefix``
then holds their decoded text, which is what a reward sees.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from posttrain.errors import DataError

ROLES = ("system", "user", "assistant")


def _fail(message: str, file: str | None, line: int | None, fld: str | None) -> DataError:
    return DataError(message, file=file, line=line, field=fld)


def _type_name(x: Any) -> str:
    return "null" if x is None else type(x).__name__


def validate_messages(messages: Any, *, fld: str = "messages", file: str | None = None,
                      line: int | None = None) -> list[dict]:
    """Check a list of chat messages; return it as a list of fresh dicts.

    Raises DataError naming the first bad message, e.g. field ``messages[2].role``.
    Keys other than role/content (e.g. ``name``) are kept.
    """
    if not isinstance(messages, list):
        raise _fail(f"expected a list of messages, got {_type_name(messages)}", file, line, fld)
    if not messages:
        raise _fail("empty list of messages", file, line, fld)
    out = []
    for i, m in enumerate(messages):
        where = f"{fld}[{i}]"
        if not isinstance(m, dict):
            raise _fail(f"expected a message object {{role, content}}, got {_type_name(m)}", file, line,
                        where)
        if "role" not in m:
            raise _fail("missing field 'role'", file, line, where)
        if "content" not in m:
            raise _fail("missing field 'content'", file, line, where)
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise _fail(f"unknown role {role!r}; allowed: {', '.join(ROLES)}", file, line, f"{where}.role")
        if not isinstance(content, str):
            raise _fail(f"expected a string, got {_type_name(content)}", file, line, f"{where}.content")
        if not content.strip():
            raise _fail("empty content", file, line, f"{where}.content")
        if role == "system" and i != 0:
            raise _fail("a system message may only come first", file, line, f"{where}.role")
        out.append(dict(m))
    return out


def as_prompt(value: Any, *, fld: str, file: str | None, line: int | None) -> list[dict]:
    """A prompt: a plain string (one user turn) or a list of messages ending with a user turn."""
    if isinstance(value, str):
        if not value.strip():
            raise _fail("empty prompt", file, line, fld)
        return [{"role": "user", "content": value}]
    msgs = validate_messages(value, fld=fld, file=file, line=line)
    if msgs[-1]["role"] != "user":
        raise _fail(f"a prompt must end with a user turn, got {msgs[-1]['role']!r} last", file, line,
                    f"{fld}[{len(msgs) - 1}].role")
    return msgs


def as_response(value: Any, *, fld: str, file: str | None, line: int | None) -> str:
    """A response: a string, or a list with exactly one assistant message."""
    if isinstance(value, list):
        if len(value) != 1:
            raise _fail(f"expected a string or a list with one assistant message, got {len(value)} messages",
                        file, line, fld)
        msg = validate_messages(value, fld=fld, file=file, line=line)[0]
        if msg["role"] != "assistant":
            raise _fail(f"expected role 'assistant', got {msg['role']!r}", file, line, f"{fld}[0].role")
        return msg["content"]
    if not isinstance(value, str):
        raise _fail(f"expected a string or a list with one assistant message, got {_type_name(value)}",
                    file, line, fld)
    if not value.strip():
        raise _fail("empty response", file, line, fld)
    return value


def require_field(row: Any, key: str, file: str | None, line: int | None) -> Any:
    if not isinstance(row, dict):
        raise _fail(f"expected a JSON object, got {_type_name(row)}", file, line, None)
    if key not in row:
        raise _fail(f"missing field (row has: {', '.join(sorted(map(str, row))) or 'nothing'})", file, line,
                    key)
    return row[key]


def extra_meta(row: dict, used: tuple[str, ...], file: str | None, line: int | None) -> dict:
    """Every column not consumed becomes metadata; a ``meta`` object column is merged in."""
    meta: dict = {}
    if "meta" in row and "meta" not in used:
        if not isinstance(row["meta"], dict):
            raise _fail(f"expected an object, got {_type_name(row['meta'])}", file, line, "meta")
        if "assistant_prefix" in row["meta"]:
            # nothing reads a prefix from meta any more: fail rather than sample without it
            raise _fail("assistant_prefix is a top-level field, not metadata", file, line,
                        "meta.assistant_prefix")
        meta.update(row["meta"])
    meta.update({k: v for k, v in row.items() if k not in used and k != "meta"})
    return meta


def _check_prefix(prefix: Any, file: str | None, line: int | None) -> str | None:
    if prefix is not None and (not isinstance(prefix, str) or not prefix):
        got = "an empty string" if prefix == "" else _type_name(prefix)
        raise _fail(f"expected a non-empty string, got {got}", file, line, "assistant_prefix")
    return prefix


def completion_text(record, text: str) -> str:
    """The text a reward sees for ``text`` generated from ``record``: its ``assistant_prefix`` (the part
    of the reply that was given, not generated) followed by ``text``."""
    return (record.assistant_prefix or "") + text


@dataclass
class Conversation:
    """A chat for supervised fine-tuning: every assistant turn is a training target, unless
    ``assistant_prefix`` is set: then the final reply must start with it, and only what follows the
    prefix in that reply is a target (module docstring)."""
    messages: list[dict]
    meta: dict = field(default_factory=dict)
    assistant_prefix: str | None = None
    file: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        self.messages = validate_messages(self.messages, file=self.file, line=self.line)
        roles = [m["role"] for m in self.messages]
        if "assistant" not in roles:
            raise _fail("no assistant turn: nothing to train on", self.file, self.line, "messages")
        first = roles.index("assistant")
        if "user" not in roles[:first]:
            raise _fail("the first assistant turn must follow a user turn", self.file, self.line,
                        f"messages[{first}].role")
        prefix = _check_prefix(self.assistant_prefix, self.file, self.line)
        if prefix is not None:
            last = self.messages[-1]
            if last["role"] != "assistant" or not last["content"].startswith(prefix):
                raise _fail(f"with assistant_prefix {prefix!r} the last message must be an assistant reply "
                            f"starting with it, got a {last['role']} message starting with "
                            f"{last['content'][:len(prefix) + 10]!r}", self.file, self.line, "messages")

    @classmethod
    def from_row(cls, row: dict, *, file: str | None = None, line: int | None = None) -> "Conversation":
        """``{"messages": [...], "assistant_prefix": optional str, ...}``; other columns go to ``meta``."""
        msgs = require_field(row, "messages", file, line)
        return cls(msgs, extra_meta(row, ("messages", "assistant_prefix"), file, line),
                   row.get("assistant_prefix"), file=file, line=line)


@dataclass
class PreferencePair:
    """A prompt (messages ending with a user turn) with a preferred and a dispreferred assistant reply.

    ``meta`` carries per-pair extras, e.g. ``{"flipped": True}`` for a known label flip, or scores.
    """
    prompt: list[dict]
    chosen: str
    rejected: str
    meta: dict = field(default_factory=dict)
    file: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        self.prompt = as_prompt(self.prompt, fld="prompt", file=self.file, line=self.line)
        self.chosen = as_response(self.chosen, fld="chosen", file=self.file, line=self.line)
        self.rejected = as_response(self.rejected, fld="rejected", file=self.file, line=self.line)
        if self.chosen.strip() == self.rejected.strip():
            raise _fail("chosen and rejected are identical: the pair carries no preference",
                        self.file, self.line, "rejected")

    @classmethod
    def from_row(cls, row: dict, *, file: str | None = None, line: int | None = None) -> "PreferencePair":
        """``{"prompt": str | messages, "chosen": str | [assistant msg], "rejected": ..., ...}``."""
        prompt = require_field(row, "prompt", file, line)
        chosen = require_field(row, "chosen", file, line)
        rejected = require_field(row, "rejected", file, line)
        return cls(prompt, chosen, rejected, extra_meta(row, ("prompt", "chosen", "rejected"), file, line),
                   file=file, line=line)


@dataclass
class PromptRecord:
    """A prompt for sampling (online RL, rejection sampling, evaluation), with an optional reference answer.
    With ``assistant_prefix``, the reply starts with that given text and the model continues it (module
    docstring)."""
    prompt: list[dict]
    answer: str | None = None
    meta: dict = field(default_factory=dict)
    assistant_prefix: str | None = None
    file: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)
    prefix_ids: tuple[int, ...] | None = None  # the prefix as exact token ids (module docstring)

    def __post_init__(self):
        self.prompt = as_prompt(self.prompt, fld="prompt", file=self.file, line=self.line)
        _check_prefix(self.assistant_prefix, self.file, self.line)
        if self.prefix_ids is not None:
            ids = tuple(self.prefix_ids)
            if not ids or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids):
                raise _fail("expected a non-empty list of token ids", self.file, self.line, "prefix_ids")
            if self.assistant_prefix is None:
                raise _fail("prefix_ids need their decoded text in assistant_prefix (what a reward sees)",
                            self.file, self.line, "assistant_prefix")
            self.prefix_ids = ids
        if self.answer is not None:
            if isinstance(self.answer, bool) or not isinstance(self.answer, (str, int, float)):
                raise _fail(f"expected a string or a number, got {_type_name(self.answer)}",
                            self.file, self.line, "answer")
            self.answer = str(self.answer)

    @classmethod
    def from_row(cls, row: dict, *, file: str | None = None, line: int | None = None) -> "PromptRecord":
        """``{"prompt": str | messages, "answer": optional str/number,
        "assistant_prefix": optional str, ...}``."""
        prompt = require_field(row, "prompt", file, line)
        return cls(prompt, row.get("answer"),
                   extra_meta(row, ("prompt", "answer", "assistant_prefix"), file, line),
                   row.get("assistant_prefix"), file=file, line=line)


@dataclass
class TextRecord:
    """Plain text for SFT (``{"text": ...}`` rows): no chat template, every token is a training target
    (continued pre-training on documents). ``meta`` holds the other columns."""
    text: str
    meta: dict = field(default_factory=dict)
    file: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.text, str):
            raise _fail(f"expected a string, got {_type_name(self.text)}", self.file, self.line, "text")
        if not self.text.strip():
            raise _fail("empty text: nothing to train on", self.file, self.line, "text")

    @classmethod
    def from_row(cls, row: dict, *, file: str | None = None, line: int | None = None) -> "TextRecord":
        """``{"text": str, ...}``; other columns go to ``meta``."""
        text = require_field(row, "text", file, line)
        return cls(text, extra_meta(row, ("text",), file, line), file=file, line=line)


@dataclass
class UnpairedPreference:
    """One completion of a prompt labelled desirable (``label`` true) or undesirable (false): KTO's
    unpaired format ``{"prompt", "completion", "label"}``. No current method trains on it (KTO will,
    issue 35); it is read with record kind ``"unpaired"``."""
    prompt: list[dict]
    completion: str
    label: bool
    meta: dict = field(default_factory=dict)
    file: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        self.prompt = as_prompt(self.prompt, fld="prompt", file=self.file, line=self.line)
        self.completion = as_response(self.completion, fld="completion", file=self.file, line=self.line)
        if not isinstance(self.label, bool):
            raise _fail(f"expected true or false, got {_type_name(self.label)}", self.file, self.line,
                        "label")

    @classmethod
    def from_row(cls, row: dict, *, file: str | None = None,
                 line: int | None = None) -> "UnpairedPreference":
        """``{"prompt": str | messages, "completion": str | [assistant msg], "label": bool, ...}``."""
        prompt = require_field(row, "prompt", file, line)
        completion = require_field(row, "completion", file, line)
        label = require_field(row, "label", file, line)
        return cls(prompt, completion, label, extra_meta(row, ("prompt", "completion", "label"), file, line),
                   file=file, line=line)
