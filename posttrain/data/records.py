"""Record types every method consumes: a chat for SFT, a preference pair, a prompt (with an optional answer).

Records are validated when they are built, so bad data fails at load time (naming file, line and field),
never halfway through training. Messages are plain dicts ``{"role": ..., "content": ...}`` as chat
templates expect them; roles are ``system``, ``user`` and ``assistant``; content is a non-empty string.

``file`` and ``line`` on a record say where it came from (used in later error messages, e.g. when an
example does not fit ``max_length``); they take no part in equality.
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
            raise _fail(f"expected a message object {{role, content}}, got {_type_name(m)}", file, line, where)
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


def _as_prompt(value: Any, *, fld: str, file: str | None, line: int | None) -> list[dict]:
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


def _as_response(value: Any, *, fld: str, file: str | None, line: int | None) -> str:
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


def _require(row: Any, key: str, file: str | None, line: int | None) -> Any:
    if not isinstance(row, dict):
        raise _fail(f"expected a JSON object, got {_type_name(row)}", file, line, None)
    if key not in row:
        raise _fail(f"missing field (row has: {', '.join(sorted(map(str, row))) or 'nothing'})", file, line, key)
    return row[key]


def _meta(row: dict, used: tuple[str, ...], file: str | None, line: int | None) -> dict:
    """Every column not consumed becomes metadata; a ``meta`` object column is merged in."""
    meta: dict = {}
    if "meta" in row and "meta" not in used:
        if not isinstance(row["meta"], dict):
            raise _fail(f"expected an object, got {_type_name(row['meta'])}", file, line, "meta")
        meta.update(row["meta"])
    meta.update({k: v for k, v in row.items() if k not in used and k != "meta"})
    return meta


@dataclass
class Conversation:
    """A chat for supervised fine-tuning: every assistant turn is a training target."""
    messages: list[dict]
    meta: dict = field(default_factory=dict)
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

    @classmethod
    def from_row(cls, row: dict, *, file: str | None = None, line: int | None = None) -> "Conversation":
        """``{"messages": [...], ...}``; other columns go to ``meta``."""
        msgs = _require(row, "messages", file, line)
        return cls(msgs, _meta(row, ("messages",), file, line), file=file, line=line)


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
        self.prompt = _as_prompt(self.prompt, fld="prompt", file=self.file, line=self.line)
        self.chosen = _as_response(self.chosen, fld="chosen", file=self.file, line=self.line)
        self.rejected = _as_response(self.rejected, fld="rejected", file=self.file, line=self.line)
        if self.chosen.strip() == self.rejected.strip():
            raise _fail("chosen and rejected are identical: the pair carries no preference",
                        self.file, self.line, "rejected")

    @classmethod
    def from_row(cls, row: dict, *, file: str | None = None, line: int | None = None) -> "PreferencePair":
        """``{"prompt": str | messages, "chosen": str | [assistant msg], "rejected": ..., ...}``."""
        prompt = _require(row, "prompt", file, line)
        chosen = _require(row, "chosen", file, line)
        rejected = _require(row, "rejected", file, line)
        return cls(prompt, chosen, rejected, _meta(row, ("prompt", "chosen", "rejected"), file, line),
                   file=file, line=line)


@dataclass
class PromptRecord:
    """A prompt for sampling (online RL, rejection sampling, evaluation), with an optional reference answer."""
    prompt: list[dict]
    answer: str | None = None
    meta: dict = field(default_factory=dict)
    file: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        self.prompt = _as_prompt(self.prompt, fld="prompt", file=self.file, line=self.line)
        if self.answer is not None:
            if isinstance(self.answer, bool) or not isinstance(self.answer, (str, int, float)):
                raise _fail(f"expected a string or a number, got {_type_name(self.answer)}",
                            self.file, self.line, "answer")
            self.answer = str(self.answer)

    @classmethod
    def from_row(cls, row: dict, *, file: str | None = None, line: int | None = None) -> "PromptRecord":
        """``{"prompt": str | messages, "answer": optional str/number, ...}``."""
        prompt = _require(row, "prompt", file, line)
        return cls(prompt, row.get("answer"), _meta(row, ("prompt", "answer"), file, line), file=file, line=line)
