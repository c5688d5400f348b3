"""Tool specs and conversations with tools: validation with file / line / field errors."""
from __future__ import annotations

import pytest

from posttrain.data.records import Conversation
from posttrain.data.tool_records import ToolConversation
from posttrain.data.tool_schema import to_json_schema, validate_tool, validate_tools
from posttrain.errors import DataError

WEATHER = {"name": "get_weather", "description": "Weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
CALL = '[{"name": "get_weather", "arguments": {"city": "Paris"}}]'


def _row(messages, tools=(WEATHER,)):
    return {"messages": messages, "tools": list(tools), "source": "unit"}


def test_conversation_with_tool_feedback():
    conv = ToolConversation.from_row(_row([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": CALL},
        {"role": "tool", "content": '{"temp_c": 21}'},
        {"role": "tool", "content": '{"temp_c": 25}'},  # one per call of a parallel turn
        {"role": "assistant", "content": "21 and 25 °C."}]), file="d.jsonl", line=3)
    assert [m["role"] for m in conv.messages] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert conv.tools[0]["name"] == "get_weather" and conv.meta == {"source": "unit"}


def test_openai_style_tool_calls_become_the_one_format():
    conv = ToolConversation.from_row(_row([
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                          "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "content": "21"}, {"role": "assistant", "content": "21 °C."}]))
    assert conv.messages[1] == {"role": "assistant", "content": CALL}


@pytest.mark.parametrize("messages, field, match", [
    ([{"role": "user", "content": "x"}, {"role": "tool", "content": "21"}], "messages[1].role",
     "must follow an assistant"),
    ([{"role": "tool", "content": "21"}, {"role": "assistant", "content": "y"}], "messages[0].role",
     "after nothing"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "a"}, {"role": "user",
                                                                                "content": "b"},
      {"role": "tool", "content": "21"}], "messages[3].role", "after user"),
    ([{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}], "messages[1].role",
     "unknown role"),
    ([{"role": "user", "content": "x"}], "messages", "no assistant turn"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}], "messages[1].content",
     "empty"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": None,
                                         "tool_calls": [{"arguments": {}}]}],
     "messages[1].tool_calls[0]", "needs a 'name'"),
])
def test_bad_messages_name_the_field(messages, field, match):
    with pytest.raises(DataError, match=match) as e:
        ToolConversation.from_row(_row(messages), file="d.jsonl", line=7)
    assert e.value.field == field and e.value.file == "d.jsonl" and e.value.line == 7


@pytest.mark.parametrize("tools, field, match", [
    ([{"description": "no name"}], "tools[0].name", "non-empty string"),
    ([WEATHER, WEATHER], "tools[1].name", "duplicate"),
    ([{**WEATHER, "parameters": {"type": "object", "properties": {}, "required": ["city"]}}],
     "tools[0].parameters.required", "not in properties"),
    ([{**WEATHER, "parameters": {"type": "array"}}], "tools[0].parameters.type", "object"),
    ([{**WEATHER, "parameters": {"type": "object", "properties": {"city": "string"}}}],
     "tools[0].parameters.properties.city", "schema object"),
    ({"name": "x"}, "tools", "list"),
])
def test_bad_tools_name_the_field(tools, field, match):
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    with pytest.raises(DataError, match=match) as e:
        ToolConversation.from_row(_row(msgs, tools) if isinstance(tools, list) else {"messages": msgs,
                                                                                     "tools": tools},
                                  file="d.jsonl", line=2)
    assert e.value.field == field and e.value.line == 2


def test_missing_tools_field():
    with pytest.raises(DataError) as e:
        ToolConversation.from_row({"messages": []}, file="d.jsonl", line=1)
    assert e.value.field == "tools"


def test_plain_conversations_still_reject_the_tool_role():
    with pytest.raises(DataError, match="unknown role 'tool'"):
        Conversation([{"role": "user", "content": "x"}, {"role": "assistant", "content": CALL},
                      {"role": "tool", "content": "21"}])


def test_spec_defaults_and_openai_wrapper():
    spec = validate_tool({"type": "function", "function": {"name": "ping"}})
    assert spec == {"name": "ping", "description": "", "parameters": {"type": "object", "properties": {},
                                                                      "required": []}}
    assert validate_tools([WEATHER])[0] == WEATHER and validate_tools([WEATHER])[0] is not WEATHER


def test_json_schema_names():
    bfcl = {"name": "f", "description": "", "parameters": {"type": "dict", "required": [], "properties": {
        "x": {"type": "float", "default": {"type": "dict"}}, "t": {"type": "tuple",
                                                                   "items": {"type": "integer"}},
        "d": {"type": "dict", "properties": {"type": {"type": "any", "enum": ["dict"]}}},
        "type": {"type": "boolean"}}}}
    out = to_json_schema(bfcl)
    props = out["parameters"]["properties"]
    assert out["parameters"]["type"] == "object"
    assert props["x"] == {"type": "number", "default": {"type": "dict"}}  # values are data, not schema
    assert props["t"] == {"type": "array", "items": {"type": "integer"}}
    assert props["d"]["properties"]["type"] == {"enum": ["dict"]}  # BFCL's "any" = no type
    assert props["type"] == {"type": "boolean"}
    assert bfcl["parameters"]["type"] == "dict"  # the input is untouched
