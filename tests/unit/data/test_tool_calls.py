"""The one tool-call format and its parser: lenient reading, and never an exception."""
from __future__ import annotations

import random

import pytest

from posttrain.data.tool_calls import PARSE_ERRORS, ToolCall, call_from_dict, format_calls, parse_calls

F = ToolCall("f", {"a": 1})


@pytest.mark.parametrize("text, calls", [
    ('[{"name": "f", "arguments": {"a": 1}}]', [F]),
    ('{"name": "f", "arguments": {"a": 1}}', [F]),  # a single object
    ('Sure, calling it now: [{"name": "f", "arguments": {"a": 1}}] Done.', [F]),  # text around it
    ('```json\n[{"name": "f", "arguments": {"a": 1}}]\n```', [F]),  # a code fence
    ('```\n{"name": "f", "arguments": {"a": 1}}\n```\nThe result will follow.', [F]),
    ('[{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]', [F, ToolCall("g", {})]),
    # JSON lines
    ('{"name": "f", "arguments": {"a": 1}}\n{"name": "g", "arguments": {}}', [F, ToolCall("g", {})]),
    ('[{"name": "f", "arguments": {"x": {"y": [1, {"z": [2, 3]}], "s": "[not a call]"}}}]',
     [ToolCall("f", {"x": {"y": [1, {"z": [2, 3]}], "s": "[not a call]"}})]),  # nested, brackets in strings
    ('[{"name": "f", "parameters": {"a": 1}}]', [F]),  # "parameters" for "arguments"
    ('[{"name": "f"}]', [ToolCall("f", {})]),  # no arguments: a call without parameters
    ('[{"type": "function", "function": {"name": "f", "arguments": "{\\"a\\": 1}"}}]', [F]),  # OpenAI style
    ("[{'name': 'f', 'arguments': {'a': 1, 'b': True, 'c': None, 'd': (1, 2)}}]",
     [ToolCall("f", {"a": 1, "b": True, "c": None, "d": [1, 2]})]),  # a Python literal, tuple -> list
    # a non-call value first
    ('The user wants {"city": "Paris"}. [{"name": "f", "arguments": {"a": 1}}]', [F]),
    ('```json\n[{"name": "f", "arguments": {"a": 1}}]\n```\nor maybe [{"name": "g", "arguments": {}}]', [F]),
])
def test_parses_calls(text, calls):
    r = parse_calls(text)
    assert r.ok and r.error is None and r.calls == calls and r.made_calls


@pytest.mark.parametrize("text, error", [
    ("", "empty"), ("   \n", "empty"), (None, "empty"),
    ("I cannot help with that request.", "unparsable"),
    ('[{"name": "f", "arguments": {"a": 1', "unparsable"),  # cut off by the token limit
    ("{not json at all}", "unparsable"),
    ("[1, 2, 3]", "bad_call"),
    ('{"name": 7, "arguments": {}}', "bad_call"),
    ('[{"name": "f", "arguments": [1, 2]}]', "bad_call"),
    ('[{"name": "f", "arguments": "not json"}]', "bad_call"),
    ('{"answer": 42}', "bad_call"),
])
def test_failures_are_categories(text, error):
    r = parse_calls(text)
    assert not r.ok and r.error == error and error in PARSE_ERRORS and not r.made_calls and r.calls == []


def test_empty_list_is_an_explicit_no_call():
    for text in ("[]", "No function applies. []", "```json\n[]\n```"):
        r = parse_calls(text)
        assert r.ok and r.calls == [] and not r.made_calls


def test_round_trip():
    calls = [ToolCall("a.b", {"x": 1.5, "y": [1, "two", {"z": None}], "u": "ünï 'q' \"d\""}), ToolCall("c",
                                                                                                       {})]
    text = format_calls(calls)
    assert parse_calls(text).calls == calls
    assert format_calls([c.to_dict() for c in calls]) == text


def test_garbage_never_raises():
    rng = random.Random(0)
    alphabet = list('[]{}":,\'\\ abc01nulltrue\n`') + ['"name"', '"arguments"', "```json", "None", "1e999",
                                                       "NaN"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        r = parse_calls(text)
        assert r.ok or r.error in PARSE_ERRORS
        assert all(isinstance(c.name, str) and isinstance(c.arguments, dict) for c in r.calls)
    for text in ("[" * 5000, "{" * 5000, "['" * 2000, "[" * 500 + "]" * 499, "9" * 5000,
                 "[" + "9" * 5000 + "]"):
        assert parse_calls(text).error in ("unparsable", "bad_call")


def test_call_from_dict_explains():
    assert call_from_dict({"name": "f", "arguments": {"a": 1}}) == F
    with pytest.raises(ValueError, match="needs a 'name'"):
        call_from_dict({"arguments": {}})
    with pytest.raises(ValueError, match="must be an object"):
        call_from_dict({"name": "f", "arguments": 3})
