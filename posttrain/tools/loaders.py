"""Loaders for tool-use benchmarks: BFCL (v4 single-turn files) and Seal-Tools.

Both give :class:`ToolExample` s: the prompt messages, the tools offered, and the gold.

**BFCL** (``BFCL_v4_<category>.json``, JSON lines despite the name): rows ``{"id", "question", "function"}``
where ``question`` is a list of turns, each a list of messages (the single-turn categories read here have
one turn), and ``function`` the tool specs, with BFCL's type names. The possible answers are in
``possible_answer/<same file name>``: rows ``{"id", "ground_truth": [{name: {param: [allowed values]}}]}``,
joined by id; the irrelevance categories have none (correct = no call). The category is the id without its
number (``simple_python_0`` -> ``simple_python``, ``live_simple_0-0-0`` -> ``live_simple``).

**Seal-Tools** (``dev.jsonl``, ``test_in_domain.jsonl``, ...): rows ``{"id", "query", "calling": [{"api",
"parameters", "responses"}]}``, with the tool specs in ``tool.jsonl`` beside them (``{"api_name",
"api_description", "field", "parameters": {name: {"type", "description"}}, "required", "responses"}``,
Python type names ``str/int/float/bool``). The rows do not carry the list of tools the model was shown (the
paper's fine-tuning files hold a retrieved list), so each example gets its gold tools plus ``distractors``
others, drawn from the same field first (e.g. ``Nursing/...``), then from all tools, and shuffled, by a
generator seeded with (``seed``, row id): the same list every time. The category is ``easy`` or
``difficult`` (from the id). The specs shown keep Seal-Tools' ``field`` and ``responses`` (the outputs of a
call, which later calls of a difficult row pass on as values named ``API_call_<k>``).

Every bad row raises DataError naming the file, its line and the field.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.data.readers import iter_sourced_rows
from posttrain.data.records import validate_messages
from posttrain.data.tool_calls import ToolCall
from posttrain.data.tool_schema import find_tool, validate_tools
from posttrain.errors import DataError

SEAL_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "array",
              "dict": "object"}


@dataclass
class ToolExample:
    """One prompt with tools and its gold: BFCL's ``possible_answer`` or Seal-Tools' ``calls``."""
    id: str
    source: str                       # "bfcl" or "seal-tools"
    category: str                     # BFCL category, or Seal-Tools "easy" / "difficult"
    messages: list[dict]              # the prompt: [system], user
    tools: list[dict]
    possible_answer: list[dict] | None = None   # BFCL; None for irrelevance
    calls: list[ToolCall] | None = None         # Seal-Tools gold calls
    file: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)


def _fail(msg: str, file, line, fld=None) -> DataError:
    return DataError(msg, file=file, line=line, field=fld)


def _str_field(row: dict, key: str, file, line) -> str:
    if key not in row:
        raise _fail(f"missing field (row has: {', '.join(sorted(row)) or 'nothing'})", file, line, key)
    v = row[key]
    if not isinstance(v, str) or not v.strip():
        raise _fail(f"expected a non-empty string, got {v!r}", file, line, key)
    return v


# ------------------------------------------------------------------------------------------------ BFCL

def bfcl_category(example_id: str) -> str:
    return re.sub(r"_[0-9][0-9-]*$", "", example_id)


def _bfcl_answer(row: dict, file, line) -> tuple[str, list[dict]]:
    ex_id = _str_field(row, "id", file, line)
    gt = row.get("ground_truth")
    if not isinstance(gt, list) or not gt:
        raise _fail(f"expected a non-empty list of calls, got {gt!r}"[:200], file, line, "ground_truth")
    for i, call in enumerate(gt):
        where = f"ground_truth[{i}]"
        if not isinstance(call, dict) or len(call) != 1:
            raise _fail("expected one object {function name: {parameter: [allowed values]}}", file, line,
                        where)
        (name, params), = call.items()
        if not isinstance(params, dict):
            raise _fail(f"expected an object of parameters, got {type(params).__name__}", file, line,
                        f"{where}.{name}")
        for p, allowed in params.items():
            if not isinstance(allowed, list):
                raise _fail(f"expected a list of allowed values, got {type(allowed).__name__}", file, line,
                            f"{where}.{name}.{p}")
    return ex_id, gt


def read_bfcl_answers(path: str | Path) -> dict[str, tuple[list[dict], str, int]]:
    """id -> (ground truth, file, line) of a BFCL possible-answer file."""
    out: dict = {}
    for file, line, row in iter_sourced_rows(path):
        ex_id, gt = _bfcl_answer(row, file, line)
        if ex_id in out:
            raise _fail(f"duplicate id {ex_id!r} (also line {out[ex_id][2]})", file, line, "id")
        out[ex_id] = (gt, file, line)
    return out


def _bfcl_messages(row: dict, file, line) -> list[dict]:
    q = row.get("question")
    if not isinstance(q, list) or not q:
        raise _fail(f"expected a non-empty list of turns, got {type(q).__name__}", file, line, "question")
    if len(q) != 1:
        raise _fail(f"{len(q)} turns: multi-turn BFCL categories are not supported (single-turn only)",
                    file, line, "question")
    msgs = validate_messages(q[0], fld="question[0]", file=file, line=line)
    if msgs[-1]["role"] != "user":
        raise _fail(f"the question must end with a user turn, got {msgs[-1]['role']!r}", file, line,
                    f"question[0][{len(msgs) - 1}].role")
    return msgs


def load_bfcl(path: str | Path, answers: str | Path | None = None, *,
              limit: int | None = None) -> list[ToolExample]:
    """The examples of a BFCL file (module docstring). ``answers`` defaults to
    ``possible_answer/<file name>`` beside it, needed for every category but irrelevance."""
    path = Path(path)
    if answers is None and (path.parent / "possible_answer" / path.name).exists():
        answers = path.parent / "possible_answer" / path.name
    gold = read_bfcl_answers(answers) if answers is not None else {}
    out: list[ToolExample] = []
    for file, line, row in iter_sourced_rows(path):
        if limit is not None and len(out) >= limit:
            break
        ex_id = _str_field(row, "id", file, line)
        if "function" not in row:
            raise _fail(f"missing field (row has: {', '.join(sorted(row))})", file, line, "function")
        tools = validate_tools(row["function"], file=file, line=line, fld="function")
        messages = _bfcl_messages(row, file, line)
        category = bfcl_category(ex_id)
        answer = None
        if "irrelevance" not in category:
            if ex_id not in gold:
                where = (f"no possible answer for id {ex_id!r} "
                         + (f"in {answers}" if answers is not None
                            else "(no possible_answer file found beside it)"))
                raise _fail(where, file, line, "id")
            answer, afile, aline = gold[ex_id]
            for i, call in enumerate(answer):
                name = next(iter(call))
                if find_tool(tools, name) is None:
                    raise _fail(f"the possible answer calls {name!r}, which is not among the row's functions "
                                f"({', '.join(t['name'] for t in tools)})", afile, aline,
                                f"ground_truth[{i}]")
        out.append(ToolExample(ex_id, "bfcl", category, messages, tools, possible_answer=answer,
                               file=file, line=line))
    if not out:
        raise _fail("no examples in the file", str(path), None)
    return out


# ------------------------------------------------------------------------------------------ Seal-Tools

def _seal_tool(row: dict, file, line) -> dict:
    name = _str_field(row, "api_name", file, line)
    params = row.get("parameters", {})
    if not isinstance(params, dict):
        raise _fail(f"expected an object of parameters, got {type(params).__name__}", file, line,
                    "parameters")
    props = {}
    for p, spec in params.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            raise _fail("expected {type, description}", file, line, f"parameters.{p}")
        props[p] = {**spec, "type": SEAL_TYPES.get(spec["type"], spec["type"])}
    tool = {"name": name, "description": row.get("api_description", ""), "field": str(row.get("field", "")),
            "parameters": {"type": "object", "properties": props, "required": row.get("required", [])}}
    if isinstance(row.get("responses"), dict):
        tool["responses"] = row["responses"]
    return validate_tools([tool], file=file, line=line, fld="tool")[0]


def read_seal_tools(path: str | Path) -> dict[str, dict]:
    """name -> tool spec, from Seal-Tools' ``tool.jsonl``."""
    out: dict[str, dict] = {}
    lines: dict[str, int] = {}
    for file, line, row in iter_sourced_rows(path):
        tool = _seal_tool(row, file, line)
        if tool["name"] in out:
            raise _fail(f"duplicate api_name {tool['name']!r} (also line {lines[tool['name']]})", file, line,
                        "api_name")
        out[tool["name"]] = tool
        lines[tool["name"]] = line
    return out


def _seal_calls(row: dict, tools: dict[str, dict], file, line) -> list[ToolCall]:
    calling = row.get("calling")
    if not isinstance(calling, list) or not calling:
        raise _fail(f"expected a non-empty list of calls, got {calling!r}"[:200], file, line, "calling")
    calls = []
    for i, c in enumerate(calling):
        where = f"calling[{i}]"
        if not isinstance(c, dict):
            raise _fail(f"expected a call object, got {type(c).__name__}", file, line, where)
        api = c.get("api")
        if not isinstance(api, str) or api not in tools:
            raise _fail(f"unknown api {api!r} (not in the tool file)", file, line, f"{where}.api")
        args = c.get("parameters", {})
        if not isinstance(args, dict):
            raise _fail(f"expected an object, got {type(args).__name__}", file, line, f"{where}.parameters")
        unknown = sorted(set(args) - set(tools[api]["parameters"]["properties"]))
        if unknown:
            raise _fail(f"parameter(s) {unknown} not declared by {api!r}", file, line, f"{where}.parameters")
        calls.append(ToolCall(api, args))
    return calls


def _domain(tool: dict) -> str:
    return tool["field"].split("/")[0]


def _distractors(ex_id: str, gold: list[str], tools: dict[str, dict], by_domain: dict[str, list[str]],
                 names: list[str], k: int, seed: int) -> list[str]:
    rng = random.Random(f"{seed}:{ex_id}")  # str seeds hash with sha512: stable across processes
    domains = sorted({_domain(tools[g]) for g in gold})
    near = [n for d in domains for n in by_domain[d] if n not in gold]
    picked = rng.sample(near, min(k, len(near)))
    while len(picked) < k and len(picked) + len(set(gold)) < len(names):  # too few in the field: any tool
        n = rng.choice(names)
        if n not in gold and n not in picked:
            picked.append(n)
    order = list(dict.fromkeys(gold)) + picked
    rng.shuffle(order)
    return order


def load_seal_tools(path: str | Path, tools_path: str | Path | None = None, *, distractors: int = 4,
                    seed: int = 0, limit: int | None = None) -> list[ToolExample]:
    """The examples of a Seal-Tools file (module docstring); ``tools_path`` defaults to ``tool.jsonl``
    beside it."""
    path = Path(path)
    tools_path = Path(tools_path) if tools_path is not None else path.parent / "tool.jsonl"
    if not tools_path.exists():
        raise _fail("no such file: Seal-Tools rows need the tool specs (tool.jsonl beside the data, or pass "
                    "its path)", str(tools_path), None)
    if distractors < 0:
        raise ValueError(f"distractors must be >= 0, got {distractors}")
    tools = read_seal_tools(tools_path)
    names = sorted(tools)
    by_domain: dict[str, list[str]] = {}
    for n in names:
        by_domain.setdefault(_domain(tools[n]), []).append(n)
    out: list[ToolExample] = []
    for file, line, row in iter_sourced_rows(path):
        if limit is not None and len(out) >= limit:
            break
        ex_id = _str_field(row, "id", file, line)
        query = _str_field(row, "query", file, line)
        calls = _seal_calls(row, tools, file, line)
        offered = _distractors(ex_id, [c.name for c in calls], tools, by_domain, names, distractors, seed)
        specs = [tools[n] for n in offered]
        category = "difficult" if "difficult" in ex_id else "easy" if "easy" in ex_id else "all"
        out.append(ToolExample(ex_id, "seal-tools", category, [{"role": "user", "content": query}], specs,
                               calls=calls, file=file, line=line))
    if not out:
        raise _fail("no examples in the file", str(path), None)
    return out


# ------------------------------------------------------------------------------------------- dispatch

def detect_source(path: str | Path) -> str:
    """"bfcl" or "seal-tools", from the first row's fields."""
    for file, line, row in iter_sourced_rows(path):
        if "question" in row and "function" in row:
            return "bfcl"
        if "query" in row and "calling" in row:
            return "seal-tools"
        raise _fail(f"neither a BFCL row (question, function) nor a Seal-Tools row (query, calling): found "
                    f"{sorted(row)}", file, line)
    raise _fail("no rows", str(path), None)


def load_tool_examples(path: str | Path, *, answers: str | Path | None = None,
                       tools_path: str | Path | None = None, limit: int | None = None,
                       **options: Any) -> list[ToolExample]:
    """BFCL or Seal-Tools examples, whichever the file holds."""
    if detect_source(path) == "bfcl":
        return load_bfcl(path, answers, limit=limit)
    return load_seal_tools(path, tools_path, limit=limit, **options)
