"""Tool-use trajectories with adverse turns: erroneous calls, their error feedback, then the corrected call.

TL-Training's MAE ("mitigate adverse data", docs/methods.md "Tool use: TL-Training";
:mod:`posttrain.tools.mae`) drops from training an assistant turn whose tool feedback is an error, while
keeping that turn in the history of later turns. BFCL and Seal-Tools have no tool feedback, so this module
makes some.

**Trajectories** (:func:`make_trajectories`), from Seal-Tools examples (:func:`posttrain.tools.loaders.
load_seal_tools`: their tool specs and gold calls)::

    [system], user                          the example's prompt, unchanged
    assistant  <erroneous calls>            } only for a seeded share ``error_rate`` of the examples
    tool       <error feedback>             }
    assistant  <gold calls>                 all gold calls in one turn, in the one call format
    tool       <result of gold call 1>      one message per call, in order
    ...
    [assistant <short text answer>]         only with ``final_answer=True``

- Each example draws from its own numpy Generator seeded with (``seed``, a hash of its id), so its
  trajectory depends on nothing else: not on the other examples, their order, or how many there are. The
  error share is therefore a sum of Bernoulli draws, close to ``error_rate`` but not exactly it.
- The erroneous turn is the gold turn with ONE call corrupted, by one of :data:`ERROR_KINDS` drawn
  uniformly among those that apply to the example (``kinds`` restricts them; when none applies, the
  example gets no error):

  ``extra_param``        a parameter the tool does not declare is added (from :data:`HALLUCINATED_PARAMS`)
                         -> ``TypeError: f() got an unexpected keyword argument 'limit'``
  ``missing_required``   a required parameter the gold call gives is dropped
                         -> ``TypeError: f() missing 1 required positional argument: 'city'``
  ``wrong_value``        a value whose gold value has the declared type gets a value of another JSON type
                         (``"Paris"`` -> ``["Paris"]``, ``3`` -> ``"three"``, ``true`` -> ``"yes"``) ->
                         ``Invalid API call: ...``, ``400 Client Error: Bad Request ...`` or a JSON body
                         ``{"error": {"code": 400, ...}}``
  ``hallucinated_tool``  the tool name becomes a variant that is not among the example's tools
                         (``getWaterQuality`` -> ``fetchWaterQuality``, ``get_water_quality``, ...)
                         -> ``NameError: name 'fetchWaterQuality' is not defined``
  ``connection``         the call is RIGHT (the gold turn itself) and the environment fails
                         -> ``ConnectionError: HTTPSConnectionPool(...): Max retries exceeded ...``; the
                         corrected turn is the same call retried. MAE, a rule on the feedback, drops
                         this right turn too: that is the paper's rule, kept as it is.

  One ``tool`` message answers the erroneous turn as a whole: the executor rejects the request before
  anything runs (an API validating a request, a Python script stopping at its first exception), so no call
  of that turn has a result and the corrected turn makes all the calls again.
- Difficult Seal-Tools rows pass earlier outputs on as values named ``API_call_<k>``: those placeholders
  stay as they are, because the gold turn is exactly the target the Seal-Tools scores compare with.
- Results are SYNTHETIC (:func:`synthetic_result`): a small JSON object with the fields of the tool's
  ``responses`` spec (Seal-Tools gives one per tool) and values drawn from a hash of the call, so the same
  call always gets the same result (outcome flags such as ``"success"`` are always true). They are stand-ins,
  not what the tool would return; they exist so that the corrected turn is followed by a success, as in a real
  trajectory.
- ``final_answer`` is off by default: Seal-Tools has no gold answer text, so the turn would be a template
  we made up, learned verbatim, and its tokens would dilute the call tokens that the evaluation scores (and
  PKT weights). Turn it on when the model must learn to stop calling after results (a template that lists
  the results; it is never adverse).

The MAE rule and the per-turn samples are in :mod:`posttrain.tools.mae`.

Rows (:func:`trajectory_row`, :func:`write_trajectories`, :func:`read_trajectories`) are the
``{"messages", "tools", "meta"}`` rows :meth:`ToolConversation.from_row` reads.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from posttrain.data.readers import iter_sourced_rows
from posttrain.data.tool_calls import ToolCall, format_calls
from posttrain.data.tool_records import ToolConversation
from posttrain.data.tool_schema import JSON_TYPES, find_tool
from posttrain.errors import DataError
from posttrain.tools.mae import is_adverse

ERROR_KINDS = ("extra_param", "missing_required", "wrong_value", "hallucinated_tool", "connection")

# Names models add that tools rarely declare, with a value of the kind they add.
HALLUCINATED_PARAMS = (
    ("limit", 10), ("format", "json"), ("language", "en"), ("units", "metric"), ("verbose", True),
    ("timeout", 30), ("api_key", "YOUR_API_KEY"), ("page", 1), ("sort_by", "date"), ("max_results", 5),
    ("include_details", True), ("user_id", "user_123"),
)

_VERB_SWAPS = {
    "get": ("fetch", "retrieve", "query"), "search": ("find", "lookup"), "find": ("search", "locate"),
    "create": ("make", "add"), "update": ("modify", "edit"), "delete": ("remove",), "calculate": ("compute",),
    "analyze": ("analyse", "evaluate"), "check": ("verify", "validate"), "send": ("post", "submit"),
}
_SUFFIXES = ("Info", "Data", "Details", "V2")
# Boolean response fields that report the call's own outcome (Seal-Tools: "success" in 394 tools): true in a
# result that stands for a success; other booleans ("available", "valid") are answers, drawn at random.
_OUTCOME_FIELDS = frozenset({"success", "successful", "succeeded", "ok", "done", "completed", "confirmed",
                             "confirmation"})
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                 "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                 "nineteen", "twenty")

# -------------------------------------------------------------------------------------------- results

def _digest_ints(*parts: Any) -> list[int]:
    """Four 32-bit words of a sha256 of ``parts``: a seed stable across processes (``hash`` is not)."""
    d = hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode()).digest()
    return [int.from_bytes(d[i:i + 4], "little") for i in range(0, 16, 4)]


def _json_type(spec_type: Any) -> str | None:
    return JSON_TYPES.get(spec_type) if isinstance(spec_type, str) else None


def synthetic_result(call: ToolCall, tool: dict | None) -> dict:
    """A SYNTHETIC successful result of ``call``: one field per entry of the tool's ``responses`` spec
    (Seal-Tools' ``{name: {"type", "description"}}``), values drawn from a hash of the call, so always the
    same for the same call; a boolean field that reports the call's outcome (``success``, ``ok``, ...) is
    true, as it must be in a success. Not what the tool would return; never matches the MAE rule."""
    rng = np.random.default_rng(_digest_ints("result", call.name, call.arguments))
    tag = f"{int(rng.integers(16 ** 6)):06x}"
    responses = (tool or {}).get("responses")
    out: dict[str, Any] = {}
    for name, spec in (responses.items() if isinstance(responses, dict) else ()):
        kind = _json_type(spec.get("type")) if isinstance(spec, dict) else None
        if kind == "integer":
            out[name] = int(rng.integers(1, 1000))
        elif kind == "number":
            out[name] = round(float(rng.uniform(0, 100)), 2)
        elif kind == "boolean":
            out[name] = True if name.lower() in _OUTCOME_FIELDS else bool(rng.integers(2))
        elif kind == "array":
            out[name] = [f"{name}-{tag}"]
        elif kind == "object":
            out[name] = {}
        else:
            out[name] = f"{name}-{tag}"
    if not out or is_adverse(json.dumps(out, ensure_ascii=False)):  # e.g. a response field named "error"
        out = {"status": "success", "result_id": tag}
    return out


# ---------------------------------------------------------------------------------------- error kinds

def _matches_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return False


def value_type(value: Any) -> str:
    """The JSON type name of a value (``integer`` for whole ints, ``number`` for floats)."""
    for kind in ("boolean", "integer", "number", "string", "array", "object"):
        if _matches_type(value, kind):
            return kind
    return "null"


def _declared(tool: dict, param: str) -> str | None:
    return _json_type(tool["parameters"]["properties"].get(param, {}).get("type"))


def _wrong_value(value: Any, kind: str) -> Any:
    """A value of another JSON type than ``kind``, of the sort a model writes by mistake."""
    if kind == "string":
        return [value]
    if kind == "integer":
        return _NUMBER_WORDS[value] if 0 <= value < len(_NUMBER_WORDS) else value + 0.5
    if kind == "number":
        return f"approximately {value}"
    if kind == "boolean":
        return "yes" if value else "no"
    if kind == "array":
        return ", ".join(map(str, value)) or "none"
    return json.dumps(value, ensure_ascii=False)  # object


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"_|(?<=[a-z0-9])(?=[A-Z])", name) if w]


def tool_name_variants(name: str) -> list[str]:
    """Names a model invents for ``name``: a swapped verb, a suffix, the other case style."""
    words = _words(name)
    snake = "_" in name
    join = (lambda ws: "_".join(w.lower() for w in ws)) if snake else \
        (lambda ws: ws[0][:1].lower() + ws[0][1:] + "".join(w[:1].upper() + w[1:] for w in ws[1:]))
    swaps = _VERB_SWAPS.get(words[0].lower())
    out = [join([v] + words[1:]) for v in swaps] if swaps else [join(["fetch"] + words)]
    out += [join(words + [s]) for s in _SUFFIXES]
    out.append("_".join(w.lower() for w in words) if not snake else
               words[0].lower() + "".join(w[:1].upper() + w[1:] for w in words[1:]))
    return [v for v in dict.fromkeys(out) if v != name]


def _applicable(kind: str, calls: list[ToolCall], tools: list[dict]) -> list[int]:
    """Indices of the calls ``kind`` can corrupt."""
    out = []
    for i, c in enumerate(calls):
        tool = find_tool(tools, c.name)
        props = tool["parameters"]["properties"]
        if kind == "extra_param":
            ok = any(n not in props for n, _ in HALLUCINATED_PARAMS)
        elif kind == "missing_required":
            ok = any(r in c.arguments for r in tool["parameters"]["required"])
        elif kind == "wrong_value":
            ok = any(_declared(tool, p) and _matches_type(v, _declared(tool, p))
                     for p, v in c.arguments.items())
        elif kind == "hallucinated_tool":
            names = {t["name"] for t in tools}
            ok = any(v not in names for v in tool_name_variants(c.name))
        else:  # connection: any call
            ok = True
        if ok:
            out.append(i)
    return out


def _pick(rng: np.random.Generator, items: Sequence) -> Any:
    return items[int(rng.integers(len(items)))]


def _host(name: str) -> str:
    return f"api.{re.sub(r'[^a-z0-9]', '', name.lower()) or 'tools'}.com"


def _connection_feedback(name: str, rng: np.random.Generator) -> str:
    host, addr = _host(name), f"0x7f{int(rng.integers(16 ** 10)):010x}"
    return _pick(rng, (
        f"ConnectionError: HTTPSConnectionPool(host='{host}', port=443): Max retries exceeded with url: "
        f"/v1/{name} (Caused by NewConnectionError('<urllib3.connection.HTTPSConnection object at {addr}>: "
        "Failed to establish a new connection: [Errno 111] Connection refused'))",
        f"requests.exceptions.ConnectTimeout: HTTPSConnectionPool(host='{host}', port=443): Max retries "
        f"exceeded with url: /v1/{name} (Caused by ConnectTimeoutError(<urllib3.connection.HTTPSConnection "
        f"object at {addr}>, 'Connection to {host} timed out. (connect timeout=10)'))",
        "ConnectionResetError: [Errno 104] Connection reset by peer",
    ))


def _wrong_value_feedback(name: str, param: str, kind: str, bad: Any, rng: np.random.Generator) -> str:
    got = value_type(bad)
    shown = json.dumps(bad, ensure_ascii=False)
    return _pick(rng, (
        f"Invalid API call: parameter '{param}' of {name} must be of type {kind}, got {got} {shown}",
        f"400 Client Error: Bad Request for url: https://{_host(name)}/v1/{name} "
        f"(invalid value for '{param}': expected {kind}, got {got})",
        json.dumps({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                              "message": f"Invalid value at '{param}' ({kind}), {shown}"}},
                   ensure_ascii=False),
    ))


def _corrupt(kind: str, call: ToolCall, tools: list[dict], rng: np.random.Generator) -> tuple[ToolCall, str]:
    """(the erroneous call, the error feedback) for ``kind`` (module docstring)."""
    tool = find_tool(tools, call.name)
    props = tool["parameters"]["properties"]
    args = dict(call.arguments)
    if kind == "extra_param":
        name, value = _pick(rng, [(n, v) for n, v in HALLUCINATED_PARAMS if n not in props])
        args[name] = value
        return ToolCall(call.name,
                        args), f"TypeError: {call.name}() got an unexpected keyword argument '{name}'"
    if kind == "missing_required":
        param = _pick(rng, [r for r in tool["parameters"]["required"] if r in args])
        del args[param]
        return (ToolCall(call.name, args),
                f"TypeError: {call.name}() missing 1 required positional argument: '{param}'")
    if kind == "wrong_value":
        param = _pick(rng, [p for p, v in args.items()
                            if _declared(tool, p) and _matches_type(v, _declared(tool, p))])
        declared = _declared(tool, param)
        args[param] = _wrong_value(args[param], declared)
        return ToolCall(call.name, args), _wrong_value_feedback(call.name, param, declared, args[param], rng)
    if kind == "hallucinated_tool":
        names = {t["name"] for t in tools}
        bad = _pick(rng, [v for v in tool_name_variants(call.name) if v not in names])
        return ToolCall(bad, args), f"NameError: name '{bad}' is not defined"
    return ToolCall(call.name, args), _connection_feedback(call.name, rng)


# --------------------------------------------------------------------------------------- trajectories

def _gold(example: Any) -> list[ToolCall]:
    file, line = getattr(example, "file", None), getattr(example, "line", None)
    calls = getattr(example, "calls", None)
    if not calls:
        raise DataError("no gold calls: trajectories are made from Seal-Tools examples (load_seal_tools); "
                        "BFCL examples carry possible answers, not calls", file=file, line=line,
                        field="calls")
    for i, c in enumerate(calls):
        if find_tool(example.tools, c.name) is None:
            raise DataError(f"gold call {c.name!r} is not among the example's tools "
                            f"({', '.join(t['name'] for t in example.tools)})", file=file, line=line,
                            field=f"calls[{i}].name")
    if not example.messages or example.messages[-1].get("role") != "user":
        raise DataError("the prompt must end with a user turn", file=file, line=line, field="messages")
    return list(calls)


def _final_answer(calls: list[ToolCall], results: list[dict]) -> str:
    lines = [f"- {c.name}: " + ", ".join(f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in r.items())
             for c, r in zip(calls, results)]
    return "Here is what I found:\n" + "\n".join(lines)


def make_trajectory(example: Any, *, error_rate: float, seed: int, kinds: Sequence[str] = ERROR_KINDS,
                    final_answer: bool = False) -> ToolConversation:
    """The trajectory of one example (module docstring); see :func:`make_trajectories`."""
    calls = _gold(example)
    tools = example.tools
    rng = np.random.default_rng([seed, *_digest_ints("example", example.id)])
    erroneous = rng.random() < error_rate   # drawn first, so the share does not depend on ``kinds``
    messages = [dict(m) for m in example.messages]
    kind, where = None, None
    if erroneous:
        usable = {k: idx for k in kinds if (idx := _applicable(k, calls, tools))}
        if usable:
            kind = _pick(rng, list(usable))
            where = int(_pick(rng, usable[kind]))
            bad, feedback = _corrupt(kind, calls[where], tools, rng)
            bad_calls = calls[:where] + [bad] + calls[where + 1:]
            messages += [{"role": "assistant", "content": format_calls(bad_calls)},
                         {"role": "tool", "content": feedback}]
    results = [synthetic_result(c, find_tool(tools, c.name)) for c in calls]
    messages.append({"role": "assistant", "content": format_calls(calls)})
    messages += [{"role": "tool", "content": json.dumps(r, ensure_ascii=False)} for r in results]
    if final_answer:
        messages.append({"role": "assistant", "content": _final_answer(calls, results)})
    meta = {"id": example.id, "source": getattr(example, "source", None),
            "category": getattr(example, "category", None), "error_kind": kind, "error_call": where,
            "seed": seed, "synthetic_feedback": True}
    return ToolConversation(messages, tools, meta, file=getattr(example, "file", None),
                            line=getattr(example, "line", None))


def make_trajectories(examples: Iterable[Any], *, error_rate: float, seed: int,
                      kinds: Sequence[str] = ERROR_KINDS,
                      final_answer: bool = False) -> list[ToolConversation]:
    """Trajectories (module docstring) from Seal-Tools examples (:class:`~posttrain.tools.loaders.
    ToolExample` with ``calls``): for about ``error_rate`` of them an erroneous turn and its error feedback
    come before the gold turn. Deterministic in (``seed``, each example's id). ``meta`` records
    ``error_kind`` (None when no error) and ``error_call`` (the index of the corrupted call)."""
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    unknown = [k for k in kinds if k not in ERROR_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown error kinds {unknown}; allowed: {', '.join(ERROR_KINDS)}" if unknown else
                         "kinds is empty; use error_rate=0 for trajectories without errors")
    return [make_trajectory(ex, error_rate=error_rate, seed=int(seed), kinds=tuple(kinds),
                            final_answer=final_answer) for ex in examples]


# ----------------------------------------------------------------------------------------------- rows

def trajectory_row(conv: ToolConversation) -> dict:
    """The JSON row of a trajectory, as :meth:`ToolConversation.from_row` reads it."""
    return {"messages": conv.messages, "tools": conv.tools, "meta": conv.meta}


def write_trajectories(convs: Iterable[ToolConversation], path: str | Path) -> Path:
    """Write trajectories as JSON lines (one :func:`trajectory_row` a line); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for conv in convs:
            f.write(json.dumps(trajectory_row(conv), ensure_ascii=False) + "\n")
    return path


def read_trajectories(path: str | Path) -> list[ToolConversation]:
    """Trajectories from a file written by :func:`write_trajectories` (bad rows: DataError with file/line)."""
    return [ToolConversation.from_row(row, file=file, line=line) for file, line,
            row in iter_sourced_rows(path)]
