"""Tool use: prompts with tools, BFCL / Seal-Tools loaders, and the matchers that score calls (BFCL AST,
Seal-Tools P/R/F1). The formats they read are data's: tool specs (:mod:`posttrain.data.tool_schema`),
conversations with a ``tool`` role (:mod:`posttrain.data.tool_records`), the one call format and its parser
(:mod:`posttrain.data.tool_calls`)."""
from posttrain.tools.bfcl import Verdict, check_bfcl, reference_calls
from posttrain.tools.loaders import ToolExample, load_bfcl, load_seal_tools, load_tool_examples
from posttrain.tools.prompt import encode_tool_prompt, render_tool_prompt, with_tool_system
from posttrain.tools.seal import seal_counts, seal_scores

__all__ = [
    "render_tool_prompt", "encode_tool_prompt", "with_tool_system",
    "ToolExample", "load_bfcl", "load_seal_tools", "load_tool_examples",
    "Verdict", "check_bfcl", "reference_calls", "seal_counts", "seal_scores",
]
