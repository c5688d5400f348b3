"""BFCL-style AST matching of tool calls, with the verdicts of BFCL's own checker.

The rules are those of ``bfcl_eval/eval_checker/ast_eval/ast_checker.py`` (bfcl-eval 2026.3.23) for
Python, re-implemented on our parsed calls; ``tests/unit/tools/test_bfcl.py`` runs BFCL's checker
beside this one on every row of the real BFCL files and asserts equal verdicts. A possible answer is
BFCL's ``ground_truth``: a list of ``{function name: {parameter: [allowed values]}}``, where ``""`` among
the allowed values marks the parameter optional.

One call against one function (BFCL's ``simple_function_checker``), first failure wins:
1. the call's name is the function's name (``wrong_func_name``);
2. every parameter the function requires is given (``missing_required``);
3. every given parameter is in the function's properties and in the possible answer
   (``unexpected_param``);
4. its type is the declared one, compared exactly (``True`` is not an ``integer``); an int is accepted
   for a ``float``; arrays check their items' type (one level). When the possible answer's values are of
   another type than declared, BFCL takes the parameter for a "variable" and accepts a value of the
   answer's type (``type_error``);
5. its value is among the allowed values (``value_error``): strings are compared after BFCL's
   normalisation (lowercase, without spaces and ``,./-_*^``, ``'`` read as ``"``); lists element-wise
   with their string elements normalised; dicts key by key, each value among that key's allowed values;
   lists of dicts dict by dict, in order; anything else by ``==``;
6. every parameter of the possible answer that is not optional is given (``missing_optional``).

Per category (BFCL's ``ast_checker``; by name: ``parallel`` in it, else ``multiple``, else simple):
- simple (``simple_python``, ``live_simple``): exactly one call, checked against the first function;
- multiple: as many calls as answers (one), checked against the function the answer names;
- parallel, parallel_multiple: as many calls as answers, order-free: each answer in turn takes the first
  not yet matched call that passes; an answer with none fails (``no_match``). Greedy, as BFCL is;
- irrelevance: correct when no call is made (an unparsable text or ``[]`` makes none);
  relevance (``live_relevance``): correct when a call is made.
A text that does not parse fails every category but irrelevance (``unparsable``).

Quirks kept for agreement: an empty list is accepted for an optional list or list-of-dicts parameter
(BFCL reads the ``""`` marker as an empty list); a parameter whose allowed values are ``[]`` can never be
right (a few live_simple rows); a parameter the answer lists but the function does not declare can never
be given. Types BFCL does not know (``object``, ``number``, ...) are read as their JSON Schema meaning,
and an array without ``items`` skips the item check, where BFCL's checker would raise.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from posttrain.data.tool_calls import ParseResult, ToolCall
from posttrain.data.tool_schema import find_tool

PY_TYPES = {
    "string": str, "integer": int, "float": float, "boolean": bool, "array": list, "tuple": list,
    "dict": dict,
    "any": str,
    # JSON Schema / Python names, beyond BFCL's table (which would raise on them)
    "object": dict, "number": float, "str": str, "int": int, "bool": bool, "list": list,
}
NESTED = ("array", "tuple")
_STRIP = re.compile(r"[ ,./\-_*^]")


@dataclass
class Verdict:
    correct: bool
    error: str | None = None  # why not (the first failed rule), None when correct
    detail: str = ""


def category_kind(category: str) -> str:
    """BFCL's dispatch on a category name: irrelevance, relevance, parallel, multiple or simple."""
    for kind in ("irrelevance", "relevance", "parallel", "multiple"):
        if kind in category:
            return kind
    return "simple"


def standardize(text: str) -> str:
    """BFCL's string normalisation (``standardize_string``)."""
    return _STRIP.sub("", text).lower().replace("'", '"')


def _std(v: Any) -> Any:
    return standardize(v) if type(v) is str else v


def _answer_type(allowed: Sequence) -> type | None:
    """The type of the first allowed value that is not the optional marker."""
    for a in allowed:
        if a != "":
            return type(a)
    return None


def _type_ok(value: Any, allowed: Any, expected: type, nested: type | None) -> tuple[bool, bool]:
    """(valid, is_variable) as BFCL's ``type_checker``."""
    atype = _answer_type(allowed)
    is_var = atype is not None and atype is not expected
    if type(value) is expected:
        if nested is None:
            return True, is_var
        for item in allowed:
            # an allowed value that is not a list (the optional marker) passes the item check
            if type(item) is list and not all(_type_ok(v, item, nested, None)[0] for v in value):
                continue
            return True, is_var
        return False, False
    if atype is not None and type(value) is atype:
        return True, True
    return False, False


def _seq(x: Any) -> list:
    """An allowed-value container as BFCL indexes it (a string is a sequence of characters; where BFCL's
    indexing would raise, nothing is allowed)."""
    return list(x) if isinstance(x, (list, str)) else []


def _has(container: Any, x: Any) -> bool:
    """``x in container`` as Python reads it ("" is in every string), False where that would raise."""
    try:
        return x in container
    except TypeError:
        return False


def _dict_ok(value: dict, candidates: Sequence) -> bool:
    for cand in candidates:
        if not isinstance(cand, dict):  # the optional marker "" among them
            continue
        if all(k in cand and _std(v) in [_std(a) for a in _seq(cand[k])] for k, v in value.items()) and \
                all(k in value or _has(opts, "") for k, opts in cand.items()):
            return True
    return False


def _list_dict_ok(value: list, candidates: Sequence) -> bool:
    for cand in candidates:
        cand = _seq(cand)
        if len(value) == len(cand) and all(isinstance(v, dict) and _dict_ok(v, [c])
                                           for v, c in zip(value, cand)):
            return True
    return False


def _list_ok(value: list, candidates: Sequence) -> bool:
    return [_std(v) for v in value] in [[_std(a) for a in _seq(c)] for c in candidates]


def _string_ok(value: str, candidates: Sequence) -> bool:
    return standardize(value) in [standardize(a) for a in candidates if type(a) is str]


def check_call(function: dict, call: ToolCall, answer: dict) -> Verdict:
    """One call against one function and one possible answer ``{name: {param: [allowed]}}`` (rules 1-6)."""
    allowed_by_param = next(iter(answer.values()))
    if call.name != function["name"]:
        return Verdict(False, "wrong_func_name", f"expected {function['name']!r}, got {call.name!r}")
    params = call.arguments
    props = function["parameters"].get("properties", {})
    for p in function["parameters"].get("required", []):
        if p not in params:
            return Verdict(False, "missing_required", p)
    for p, value in params.items():
        if p not in props or p not in allowed_by_param:
            return Verdict(False, "unexpected_param", p)
        allowed = allowed_by_param[p]
        tname = props[p].get("type")
        expected = PY_TYPES.get(tname)
        if expected is None:  # no or unknown type: nothing to check but the value
            if value not in allowed:
                return Verdict(False, "value_error", f"{p}={value!r}")
            continue
        items = props[p].get("items")
        nested = PY_TYPES.get(items.get("type")) if tname in NESTED and isinstance(items, dict) else None
        if tname == "float" and type(value) is int:
            value = float(value)
        ok, is_var = _type_ok(value, allowed, expected, nested)
        if not ok:
            return Verdict(False, "type_error", f"{p}={value!r} for type {tname}")
        if not is_var:
            if expected is dict:
                ok = _dict_ok(value, allowed)
            elif expected is list and nested is dict:
                ok = _list_dict_ok(value, allowed)
            elif expected is str:
                ok = _string_ok(value, allowed)
            elif expected is list:
                ok = _list_ok(value, allowed)
            else:
                ok = value in allowed
        else:
            ok = value in allowed
        if not ok:
            return Verdict(False, "value_error", f"{p}={value!r}, allowed {allowed!r}")
    for p, allowed in allowed_by_param.items():
        if p not in params and "" not in allowed:
            return Verdict(False, "missing_optional", p)
    return Verdict(True)


def check_bfcl(parsed: ParseResult | Sequence[ToolCall], functions: Sequence[dict],
               possible_answer: Sequence[dict] | None, category: str) -> Verdict:
    """The verdict on one BFCL example: ``parsed`` (a parse result or its calls), the example's
    functions, its possible answer (None for irrelevance) and its category (module docstring)."""
    if isinstance(parsed, ParseResult):
        ok, calls, why = parsed.ok, parsed.calls, parsed.error
    else:
        ok, calls, why = True, list(parsed), None
    kind = category_kind(category)
    made = ok and bool(calls)
    if kind == "irrelevance":
        return Verdict(not made, None if not made else "call_made", f"{len(calls)} call(s)" if made else "")
    if kind == "relevance":
        return Verdict(made, None if made else "no_call")
    if not ok:
        return Verdict(False, "unparsable", why or "")
    answers = list(possible_answer or [])
    if kind == "simple":
        if len(calls) != 1:
            return Verdict(False, "wrong_count", f"{len(calls)} calls, expected 1")
        return check_call(functions[0], calls[0], answers[0])
    if len(calls) != len(answers):
        return Verdict(False, "wrong_count", f"{len(calls)} calls, expected {len(answers)}")
    if kind == "multiple":
        return check_call(_function_for(functions, answers[0]), calls[0], answers[0])
    matched: set[int] = set()
    for i, ans in enumerate(answers):
        fn = _function_for(functions, ans)
        hit = next((j for j, c in enumerate(calls) if j not in matched and check_call(fn, c, ans).correct),
                   None)
        if hit is None:
            return Verdict(False, "no_match", f"no call matches answer {i} ({next(iter(ans))!r})")
        matched.add(hit)
    return Verdict(True)


def _function_for(functions: Sequence[dict], answer: dict) -> dict:
    name = next(iter(answer))
    fn = find_tool(list(functions), name)
    if fn is None:  # the loaders reject such rows; a hand-made answer may still name an unlisted function
        raise ValueError(f"possible answer names {name!r}, which is not among the functions")
    return fn


def _first_allowed(allowed: Any, schema: dict) -> Any:
    """The first allowed value, built down into dict parameters (whose answers list allowed values per
    key) and lists of dicts."""
    tname = schema.get("type")
    items = schema.get("items") if isinstance(schema.get("items"), dict) else {}
    if PY_TYPES.get(tname) is dict and isinstance(allowed, dict):
        props = schema.get("properties") or {}
        return {k: _first_allowed(vs[0], props.get(k, {})) for k, vs in allowed.items()
                if isinstance(vs, list) and vs and vs[0] != ""}
    if tname in NESTED and PY_TYPES.get(items.get("type")) is dict and isinstance(allowed, list):
        return [_first_allowed(d, items) for d in allowed]
    return allowed


def reference_calls(possible_answer: Sequence[dict], functions: Sequence[dict]) -> list[ToolCall]:
    """One correct call list from a possible answer (an SFT target): each parameter's first allowed value;
    an optional parameter (``""`` allowed) is left out when ``""`` comes first or the function does not
    declare it; a required one takes its first value that is not ``""``. A few BFCL rows accept no call
    at all (module docstring); their reference call is judged wrong like any other."""
    calls = []
    for ans in possible_answer:
        (name, allowed_by_param), = ans.items()
        params = (find_tool(list(functions), name) or {}).get("parameters", {})
        props, required = params.get("properties", {}), params.get("required", [])
        args = {}
        for p, vals in allowed_by_param.items():
            given = [v for v in vals if v != ""]
            optional = "" in vals
            if not given or (optional and p not in required and (vals[0] == "" or p not in props)):
                continue
            args[p] = _first_allowed(given[0], props.get(p, {}))
        calls.append(ToolCall(name, args))
    return calls
