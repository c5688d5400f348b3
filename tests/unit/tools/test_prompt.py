"""Tool schemas in the prompt: our system prompt for SmolLM2's ChatML, the template's own tool section
where it has one."""
from __future__ import annotations

import copy
import json

import pytest

from posttrain.data.tool_calls import parse_calls
from posttrain.errors import PosttrainError
from posttrain.tools.prompt import (
    TOOL_SYSTEM_PROMPT,
    encode_tool_prompt,
    render_tool_prompt,
    resolve_mode,
    template_supports_tools,
    tool_system_text,
    with_tool_system,
)
from tests.data_helpers import load_smollm2_tokenizer

TOOLS = [{"name": "math.add", "description": "Add two numbers.",
          "parameters": {"type": "dict", "required": ["a"],
                         "properties": {"a": {"type": "float"}, "b": {"type": "any"}}}}]
USER = [{"role": "user", "content": "What is 2 + 3?"}]

# a minimal template with a tool section, in the style of Qwen2.5's
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}"
    "<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_system_prompt_text():
    text = tool_system_text(TOOLS)
    spec = json.loads(text.splitlines()[1])  # one spec per line, after the first line
    assert spec["name"] == "math.add" and spec["parameters"]["type"] == "object"
    assert spec["parameters"]["properties"] == {"a": {"type": "number"}, "b": {}}  # JSON Schema names
    assert '[{"name": "<function name>", "arguments": {"<parameter>": <value>, ...}}, ...]' in text
    assert text.startswith(TOOL_SYSTEM_PROMPT.split("{tools}")[0])
    # the example in the instructions is itself in the one format (placeholders aside)
    example = text.split("as a JSON list:\n")[1].splitlines()[0].replace("<value>", "1").replace(", ...}",
                                                                                                 "}")
    assert parse_calls(example.replace(", ...]", "]")).made_calls


def test_merges_into_an_existing_system_message():
    msgs = with_tool_system([{"role": "system", "content": "Be terse."}] + USER, TOOLS)
    assert len(msgs) == 2 and msgs[0]["content"].endswith("\n\nBe terse.")
    assert msgs[0]["content"].startswith("You can call")
    assert with_tool_system(USER, [])[0] == USER[0]  # no tools: nothing added


def test_smollm2_gets_the_system_prompt():
    tok = load_smollm2_tokenizer()
    assert not template_supports_tools(tok) and resolve_mode(tok) == "system"
    text = render_tool_prompt(tok, USER, TOOLS)
    assert text.startswith("<|im_start|>system\nYou can call the following functions")
    assert '"name": "math.add"' in text and "SmolLM" not in text  # our system turn replaces the default one
    assert text.endswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")
    ids = encode_tool_prompt(tok, USER, TOOLS)
    assert tok.decode(ids) == text
    assert encode_tool_prompt(tok, USER, TOOLS, max_length=10) == ids[-10:]


def test_tool_messages_render_in_chatml():
    tok = load_smollm2_tokenizer()
    msgs = USER + [{"role": "assistant", "content": '[{"name": "math.add", "arguments": {"a": 2, "b": 3}}]'},
                   {"role": "tool", "content": "5"}]
    text = render_tool_prompt(tok, msgs, TOOLS)
    assert "<|im_start|>tool\n5<|im_end|>\n<|im_start|>assistant\n" in text


def test_a_template_with_tools_renders_them_itself():
    tok = copy.deepcopy(load_smollm2_tokenizer())
    tok.chat_template = TOOL_TEMPLATE
    assert template_supports_tools(tok) and resolve_mode(tok) == "template"
    text = render_tool_prompt(tok, USER, TOOLS)
    assert text.startswith("<|im_start|>system\n# Tools\n")
    shown = json.loads(text.splitlines()[2])
    assert shown["type"] == "function" and shown["function"]["name"] == "math.add"
    assert shown["function"]["parameters"]["properties"]["a"] == {"type": "number"}
    assert "You can call" not in text
    assert "You can call" in render_tool_prompt(tok, USER, TOOLS, mode="system")  # forced
    with pytest.raises(PosttrainError, match="mode"):
        render_tool_prompt(tok, USER, TOOLS, mode="json")
