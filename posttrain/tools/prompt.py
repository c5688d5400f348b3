"""Putting tool schemas into the prompt.

Two ways, chosen per tokenizer (``mode="auto"``):

- ``"template"``: the tokenizer's own chat template renders the tools
  (``apply_chat_template(messages, tools=[{"type": "function", "function": spec}, ...])``), for models whose
  template has a tool section (Qwen2.5, Llama 3.1, ...). A template is taken to support tools when its
  source mentions ``tools``: transformers passes ``tools`` to every template, and one that never reads
  the variable drops them silently.
- ``"system"``: our own system prompt, for templates without tools (SmolLM2's ChatML): the tool list as
  JSON (one spec per line, types in JSON Schema names) and the instruction to answer with calls in the one
  format of :mod:`posttrain.data.tool_calls`. It goes in front of the conversation's own system message, if
  any, separated by a blank line (BFCL's prompting handlers do the same). The text is
  :data:`TOOL_SYSTEM_PROMPT`; for one tool it reads::

      You can call the following functions (tools). Their specifications, as JSON:
      {"name": "get_weather", "description": "...", "parameters": {"type": "object", ...}}

      To call functions, answer with the calls only, as a JSON list:
      [{"name": "<function name>", "arguments": {"<parameter>": <value>, ...}}, ...]
      Several calls go in one list. Use only the functions and parameters listed above, and give every
      required parameter. If none of the functions fits the request, or a required value is missing,
      answer in plain text and call nothing.

Tool feedback (``tool`` messages) is passed through as messages with role ``tool``: a template with tools
renders them its own way; ChatML renders any role as ``<|im_start|>tool ... <|im_end|>``.
"""
from __future__ import annotations

import json
from typing import Sequence

from posttrain.data.tool_schema import to_json_schema
from posttrain.errors import PosttrainError

MODES = ("auto", "template", "system")

TOOL_SYSTEM_PROMPT = (
    "You can call the following functions (tools). Their specifications, as JSON:\n"
    "{tools}\n\n"
    "To call functions, answer with the calls only, as a JSON list:\n"
    '[{{"name": "<function name>", "arguments": {{"<parameter>": <value>, ...}}}}, ...]\n'
    "Several calls go in one list. Use only the functions and parameters listed above, and give every "
    "required parameter. If none of the functions fits the request, or a required value is missing, "
    "answer in plain text and call nothing."
)


def template_supports_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template reads the ``tools`` variable (module docstring)."""
    tmpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tmpl, dict):  # named templates, e.g. {"default": ..., "tool_use": ...}
        return "tool_use" in tmpl or any(isinstance(t, str) and "tools" in t for t in tmpl.values())
    return isinstance(tmpl, str) and "tools" in tmpl


def tools_json(tools: Sequence[dict]) -> str:
    """The tool list as shown in the system prompt: one JSON spec per line."""
    return "\n".join(json.dumps(to_json_schema(t), ensure_ascii=False) for t in tools)


def tool_system_text(tools: Sequence[dict]) -> str:
    return TOOL_SYSTEM_PROMPT.format(tools=tools_json(tools))


def with_tool_system(messages: Sequence[dict], tools: Sequence[dict]) -> list[dict]:
    """``messages`` with the tool system prompt in front (merged into a leading system message)."""
    msgs = [dict(m) for m in messages]
    if not tools:
        return msgs
    text = tool_system_text(tools)
    if msgs and msgs[0].get("role") == "system":
        msgs[0]["content"] = text + "\n\n" + msgs[0]["content"]
        return msgs
    return [{"role": "system", "content": text}] + msgs


def resolve_mode(tokenizer, mode: str = "auto") -> str:
    if mode not in MODES:
        raise PosttrainError(f"tool prompt mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "auto":
        return "template" if template_supports_tools(tokenizer) else "system"
    return mode


def render_tool_prompt(tokenizer, messages: Sequence[dict], tools: Sequence[dict], *, mode: str = "auto",
                       add_generation_prompt: bool = True) -> str:
    """The chat text of ``messages`` with ``tools`` (module docstring), ending with the generation prompt."""
    from posttrain.data.template import TemplateError, render
    if resolve_mode(tokenizer, mode) == "system":
        return render(tokenizer, with_tool_system(messages, tools),
                      add_generation_prompt=add_generation_prompt)
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template")
    specs = [{"type": "function", "function": to_json_schema(t)} for t in tools]
    return tokenizer.apply_chat_template(list(messages), tools=specs or None, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def encode_tool_prompt(tokenizer, messages: Sequence[dict], tools: Sequence[dict], *, mode: str = "auto",
                       max_length: int | None = None) -> list[int]:
    """Prompt ids for sampling calls; with ``max_length``, a longer prompt keeps its last tokens (as
    :func:`posttrain.data.template.encode_prompt` does)."""
    text = render_tool_prompt(tokenizer, messages, tools, mode=mode)
    # the template already wrote any BOS it wants; adding special tokens again would double it
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if max_length is not None and len(ids) > max_length:
        ids = ids[len(ids) - max_length:]
    return ids
