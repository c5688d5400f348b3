"""Tool use: tool specs, conversations with a ``tool`` role, the one call format and its parser, prompts
with tools, BFCL / Seal-Tools loaders, and the matchers that score calls (BFCL AST, Seal-Tools P/R/F1)."""
from posttrain.tools.bfcl import Verdict, check_bfcl, reference_calls
from posttrain.tools.calls import PARSE_ERRORS, ParseResult, ToolCall, format_calls, parse_calls
from posttrain.tools.loaders import ToolExample, load_bfcl, load_seal_tools, load_tool_examples
from posttrain.tools.prompt import encode_tool_prompt, render_tool_prompt, with_tool_system
from posttrain.tools.records import ToolConversation
from posttrain.tools.schema import to_json_schema, validate_tools
from posttrain.tools.seal import seal_counts, seal_scores

__all__ = [
    "ToolCall", "ParseResult", "PARSE_ERRORS", "parse_calls", "format_calls",
    "ToolConversation", "validate_tools", "to_json_schema",
    "render_tool_prompt", "encode_tool_prompt", "with_tool_system",
    "ToolExample", "load_bfcl", "load_seal_tools", "load_tool_examples",
    "Verdict", "check_bfcl", "reference_calls", "seal_counts", "seal_scores",
]
