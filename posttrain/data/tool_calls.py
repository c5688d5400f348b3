"""The one tool-call output format, and a parser that never raises.

Format (what the system prompt of :mod:`posttrain.tools.prompt` asks for, and what SFT targets are written
in): a JSON list of calls, each ``{"name": <function name>, "arguments": {<parameter>: <value>, ...}}``::

    [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]

A single call object (not in a list) is accepted too, and ``[]`` means "no call".

:func:`parse_calls` reads a model's completion leniently, because a small model wraps its JSON in prose and
code fences: it finds every JSON value in the text (code-fenced ones first), keeps those shaped like calls
and concatenates them in order. Also accepted: ``"parameters"`` for ``"arguments"``; arguments given as a
JSON string, and the OpenAI item ``{"type": "function", "function": {"name", "arguments"}}`` (what models
trained on OpenAI-style data write); Python literals (single quotes, True/None) when JSON fails. Values
are normalised to JSON types (a tuple becomes a list), so the checkers see what ``json.loads`` would give.

The outcome is a :class:`ParseResult`, never an exception:

- ``ok=True``, ``calls`` non-empty: calls were made;
- ``ok=True``, ``calls == []``: an explicit empty list, i.e. "no call";
- ``ok=False``, ``error`` one of :data:`PARSE_ERRORS`: ``"empty"`` (blank text), ``"unparsable"`` (no JSON
  value in it, e.g. plain prose or JSON cut off by the token limit), ``"bad_call"`` (JSON, but not
  shaped like calls: a name that is not a string, arguments that are not an object, ...). ``detail``
  says what was wrong, for reading.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

PARSE_ERRORS = ("empty", "unparsable", "bad_call")
# Bounds on the Python-literal fallback, so garbage full of brackets stays linear-ish: real calls are
# far shorter than the span, and a completion holds far fewer candidates than the attempts.
_MAX_CANDIDATE_CHARS = 20_000
_MAX_LITERAL_ATTEMPTS = 32
_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n?(.*?)```", re.S)
_DECODER = json.JSONDecoder()


@dataclass
class ToolCall:
    """One call: a function name and its arguments (JSON values)."""
    name: str
    arguments: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "arguments": self.arguments}


@dataclass
class ParseResult:
    ok: bool
    calls: list[ToolCall] = field(default_factory=list)
    error: str | None = None   # one of PARSE_ERRORS when not ok
    detail: str = ""

    @property
    def made_calls(self) -> bool:
        """Whether the text makes at least one call (an irrelevance test is passed when it does not)."""
        return self.ok and bool(self.calls)


def format_calls(calls) -> str:
    """The canonical text of ``calls`` (ToolCall or ``{"name", "arguments"}`` dicts): one JSON list."""
    items = [c.to_dict() if isinstance(c, ToolCall)
             else {"name": c["name"], "arguments": c.get("arguments", {})}
             for c in calls]
    return json.dumps(items, ensure_ascii=False)


class _NotCall(ValueError):
    """A JSON value that is not shaped like a call (its message says why)."""


def _as_json(value: Any) -> Any:
    """``value`` with JSON types only (tuples -> lists); _NotCall for sets, bytes, non-string keys..."""
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError, RecursionError) as e:
        raise _NotCall(f"not JSON data: {e}") from None


def _one_call(item: Any) -> ToolCall:
    if not isinstance(item, dict):
        raise _NotCall(f"a call must be an object, got {type(item).__name__}")
    if item.get("type") == "function" and isinstance(item.get("function"), dict):
        item = item["function"]  # OpenAI's tool_calls item
    if "name" not in item:
        raise _NotCall(f"a call needs a 'name' (got keys {sorted(map(str, item))})")
    name = item["name"]
    if not isinstance(name, str) or not name.strip():
        raise _NotCall(f"a call's name must be a non-empty string, got {name!r}")
    args = item.get("arguments", item.get("parameters", {}))
    if isinstance(args, str):  # OpenAI serialises arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError):
            raise _NotCall(f"arguments of {name!r} are a string that is not JSON") from None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise _NotCall(f"arguments of {name!r} must be an object, got {type(args).__name__}")
    return ToolCall(name.strip(), args)


def call_from_dict(item: Any) -> ToolCall:
    """One call from ``{"name", "arguments"}`` (or the accepted variants); ValueError saying what is wrong."""
    return _one_call(_as_json(item))


def _calls_of(value: Any) -> list[ToolCall]:
    value = _as_json(value)
    if isinstance(value, list):
        return [_one_call(v) for v in value]
    return [_one_call(value)]


def _balanced_end(text: str, start: int) -> int | None:
    """End (exclusive) of the bracketed span opening at ``start``, honouring quotes; None if unclosed."""
    close = {"[": "]", "{": "}"}
    stack = [close[text[start]]]
    quote = None
    i = start + 1
    while i < len(text) and i - start < _MAX_CANDIDATE_CHARS:
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in close:
            stack.append(close[ch])
        elif ch in "]}":
            if ch != stack.pop():
                return None
            if not stack:
                return i + 1
        i += 1
    return None


def _decode_at(text: str, start: int, budget: list[int]) -> tuple[Any, int] | None:
    """(value, end) of a JSON (else Python-literal) value opening at ``start``, or None. ``budget`` holds
    the literal fallbacks still allowed in this text."""
    try:
        return _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):
        pass
    if budget[0] <= 0:
        return None
    budget[0] -= 1
    end = _balanced_end(text, start)
    if end is None:
        return None
    try:
        return ast.literal_eval(text[start:end]), end
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _scan(text: str) -> tuple[list[ToolCall], bool, str]:
    """All call-shaped values in ``text``, left to right: (calls, found any JSON value, first complaint)."""
    calls: list[ToolCall] = []
    found_json = False
    complaint = ""
    budget = [_MAX_LITERAL_ATTEMPTS]
    i = 0
    while i < len(text):
        if text[i] not in "[{":
            i += 1
            continue
        decoded = _decode_at(text, i, budget)
        if decoded is None:
            i += 1
            continue
        value, end = decoded
        found_json = True
        try:
            calls.extend(_calls_of(value))
        except _NotCall as e:
            complaint = complaint or str(e)
        i = end  # never look inside a value already read: a call's arguments are not calls
    return calls, found_json, complaint


def parse_calls(text: str | None) -> ParseResult:
    """Read the calls in a completion (module docstring): never raises."""
    if text is None or not str(text).strip():
        return ParseResult(False, error="empty", detail="no text")
    text = str(text)
    fenced = _FENCE.findall(text)
    complaint = ""
    found_any = False
    for source in (["\n".join(fenced)] if fenced else []) + [text]:
        calls, found_json, why = _scan(source)
        found_any = found_any or found_json
        complaint = complaint or why
        if calls:
            return ParseResult(True, calls)
        if found_json and not why:  # only empty lists: an explicit "no call"
            return ParseResult(True, [])
    if found_any:
        return ParseResult(False, error="bad_call", detail=complaint)
    return ParseResult(False, error="unparsable", detail="no JSON value found")
