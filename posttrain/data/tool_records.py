"""Conversations with tools: a per-conversation tool list and a ``tool`` role for tool feedback.

Row format (JSON lines)::

    {"tools": [<function spec>, ...],
     "messages": [{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant",
                   "content": "[{\\"name\\": \\"get_weather\\", \\"arguments\\": {...}}]"},
                  {"role": "tool", "content": "{\\"temp_c\\": 21}"},
                  {"role": "assistant", "content": "It is 21 °C in Paris."}],
     ...other columns -> meta}

This is a record type of its own, beside :mod:`posttrain.data.records` (whose roles stay system / user /
assistant): a plain chat record never meets a ``tool`` message it cannot render.

Rules (checked at load, errors name file, line and field):
- roles are system, user, assistant, tool; content is a non-empty string; system may only come first;
- a ``tool`` message answers calls, so it must come right after an assistant turn or after another tool
  message that does (one per call of a parallel turn);
- the first assistant turn follows a user turn; there is at least one assistant turn;
- an assistant message may give its calls as ``"tool_calls": [{"name", "arguments"}, ...]`` instead of
  text (OpenAI-style rows); they become its content in the one call format
  (:func:`posttrain.data.tool_calls.format_calls`), after any text it has.
- ``tools`` is validated by :func:`posttrain.data.tool_schema.validate_tools`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from posttrain.data.tool_calls import call_from_dict, format_calls
from posttrain.data.tool_schema import validate_tools
from posttrain.errors import DataError

TOOL_ROLES = ("system", "user", "assistant", "tool")


def _fail(msg: str, file, line, fld) -> DataError:
    return DataError(msg, file=file, line=line, field=fld)


def _calls_text(m: dict, file, line, where: str) -> str:
    """An assistant message's ``tool_calls`` in the one call format, after its text."""
    calls = m["tool_calls"]
    if not isinstance(calls, list) or not calls:
        raise _fail("expected a non-empty list of calls", file, line, f"{where}.tool_calls")
    parsed = []
    for j, c in enumerate(calls):
        try:
            parsed.append(call_from_dict(c))
        except ValueError as e:
            raise _fail(f"bad tool call: {e}", file, line, f"{where}.tool_calls[{j}]") from None
    text = (m.get("content") or "").strip()
    return (text + "\n" if text else "") + format_calls(parsed)


def validate_tool_messages(messages: Any, *, file: str | None = None, line: int | None = None,
                           fld: str = "messages") -> list[dict]:
    """Fresh copies of ``messages`` checked by the rules of the module docstring."""
    if not isinstance(messages, list) or not messages:
        got = "an empty list" if messages == [] else type(messages).__name__
        raise _fail(f"expected a non-empty list of messages, got {got}", file, line, fld)
    out: list[dict] = []
    for i, m in enumerate(messages):
        where = f"{fld}[{i}]"
        if not isinstance(m, dict):
            raise _fail(f"expected a message object, got {type(m).__name__}", file, line, where)
        role = m.get("role")
        if role not in TOOL_ROLES:
            raise _fail(f"unknown role {role!r}; allowed: {', '.join(TOOL_ROLES)}", file, line,
                        f"{where}.role")
        m = dict(m)
        if role == "assistant" and m.get("tool_calls") is not None:
            m["content"] = _calls_text(m, file, line, where)
            del m["tool_calls"]
        if "content" not in m:
            raise _fail("missing field 'content'", file, line, where)
        if not isinstance(m["content"], str):
            raise _fail(f"expected a string, got {type(m['content']).__name__}", file, line,
                        f"{where}.content")
        if not m["content"].strip():
            raise _fail("empty content", file, line, f"{where}.content")
        if role == "system" and i != 0:
            raise _fail("a system message may only come first", file, line, f"{where}.role")
        if role == "tool":
            prev = out[-1]["role"] if out else None
            if prev not in ("assistant", "tool"):
                raise _fail(f"a tool message must follow an assistant turn (its calls), got it after "
                            f"{prev or 'nothing'}", file, line, f"{where}.role")
        out.append(m)
    roles = [m["role"] for m in out]
    if "assistant" not in roles:
        raise _fail("no assistant turn: nothing to train on", file, line, fld)
    first = roles.index("assistant")
    if "user" not in roles[:first]:
        raise _fail("the first assistant turn must follow a user turn", file, line, f"{fld}[{first}].role")
    return out


@dataclass
class ToolConversation:
    """A chat with tools: ``messages`` (roles of :data:`TOOL_ROLES`) and the ``tools`` it may call."""
    messages: list[dict]
    tools: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    file: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        self.messages = validate_tool_messages(self.messages, file=self.file, line=self.line)
        self.tools = validate_tools(self.tools, file=self.file, line=self.line)

    @classmethod
    def from_row(cls, row: Any, *, file: str | None = None, line: int | None = None) -> "ToolConversation":
        if not isinstance(row, dict):
            raise _fail(f"expected a JSON object, got {type(row).__name__}", file, line, None)
        for key in ("messages", "tools"):
            if key not in row:
                raise _fail(f"missing field (row has: {', '.join(sorted(row)) or 'nothing'})", file, line,
                            key)
        meta = dict(row["meta"]) if isinstance(row.get("meta"), dict) else {}
        meta.update({k: v for k, v in row.items() if k not in ("messages", "tools", "meta")})
        return cls(row["messages"], row["tools"], meta, file=file, line=line)
