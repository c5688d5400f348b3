"""TL-Training's IRM reward (docs/methods.md "Tool use: TL-Training"): a tool-call completion scored by its
error category.

The table, checked in this order, FIRST MATCH WINS (:data:`IRM_REWARDS` holds it, in this order):

==========================  ======  ==============================================================
category                    reward  when
==========================  ======  ==============================================================
``format_error``            -2      blank, or calls expected and the completion does not parse as calls
``hallucinated_tool``       -2      a called name is not among the available tools
``wrong_tool``              -1.5    real tools, but the names differ from the gold calls' names
``params_h_r_m``            -1.8    parameter names: hallucinated, redundant and missing
``params_h_r_or_m``         -1.3    hallucinated, and redundant or missing (not both)
``params_r_m``              -1.0    redundant and missing, none hallucinated
``params_h``                -0.8    hallucinated only
``params_r_or_m``           -0.5    redundant or missing only
``wrong_value``             -0.25   right names everywhere, a value differs
``exact_match``             +1      the calls equal the gold calls
==========================  ======  ==============================================================

Parameter flags, per predicted call against the gold call it is paired with: **h** (hallucinated) a given
name the tool's schema does not declare; **r** (redundant) a given name the schema declares but the gold
call does not give; **m** (missing) a name the gold call gives that the call does not. A name the gold call
gives is never h nor r, even if the schema lacks it: the gold is the truth (BFCL answers can name such
parameters). "Missing" is relative to the gold call, not to the schema's ``required``, and an optional
parameter given with its default value when the gold call leaves it out is redundant: the gold call is the
one target.

Rules the table leaves open, as decided here:

- **Parsing** is :func:`posttrain.data.tool_calls.parse_calls`, the one parser evaluation uses too (lenient:
  prose and code fences around the JSON are tolerated). A format error is a result that is not ``ok``
  (blank, no JSON value, JSON not shaped like calls), so reward and evaluation agree on what parses.
  Being first, it wins over everything: prose that names an unknown tool is a format error, not a
  hallucinated tool.
- **Several calls (parallel)**: the category is one for the whole set. Hallucinated tool if *any* name is
  not in the list; wrong tool if the *multiset* of names differs from the gold's (a missing, extra or
  repeated call included; order is free). Otherwise each name's calls are paired one to one with the gold
  calls of that name, the flags h/r/m are the union over the pairs, and wrong value means some pair has
  a differing value. With a name used several times, the pairing is the one giving that name's calls the
  best category (tried exhaustively up to :data:`MAX_EXHAUSTIVE` calls of one name; beyond, greedily as
  :mod:`posttrain.tools.seal` pairs: each call in order takes the unused gold call sharing most equal
  values, then most names, the first on a tie).
- **No call**: ``[]`` when the gold has calls is a *wrong tool* (-1.5), not a format error: ``[]`` is
  the format's own spelling of "no call" (:mod:`posttrain.data.tool_calls`), so the output is well formed and
  the mistake is the selection (no tool where one was needed; the names' multiset, empty, differs from the
  gold's). This matches the Seal-Tools scores, where ``[]`` parses and only loses tool-selection recall.
  Plain prose when calls are expected stays a format error, as the table says: the parser cannot tell a
  refusal in prose from JSON cut off by the token limit.
- **Gold "no call"** (``gold_calls == []``, e.g. BFCL irrelevance): the tool prompt
  (:mod:`posttrain.tools.prompt`) asks for plain text when no tool fits, so a completion that makes no
  call (prose, ``[]``, JSON that is not a call) is an exact match (+1), as BFCL's irrelevance verdict
  says; calls are a hallucinated tool or a wrong tool. One difference from BFCL, on purpose: a *blank*
  completion is a format error even then, or the reward would pay +1 for stopping at once.
- **Value equality** is the Seal-Tools content-filling rule (:mod:`posttrain.tools.seal`): ``str(pred) ==
  str(gold)``, so ``85`` equals ``"85"`` (Seal-Tools gold values are often strings of numbers) and
  strings are compared exactly (no case or space folding). It is the same function, imported, so an
  exact match here is an exact match of the Seal-Tools score. What that implies, kept for agreement:
  ``1`` is not ``1.0`` and ``True`` is not ``true`` (``str`` differs), and dicts compare with their key
  order. BFCL's checker is more lenient (several allowed values, normalised strings, int for float), so
  with BFCL gold (:func:`posttrain.tools.bfcl.reference_calls`, one reference) this reward is the
  stricter judge.
- Names (tools and parameters) are compared exactly, case included, after the parser's strip.

The reward reads, per completion, ``meta[i]["tools"]`` (the available function specs, as
:func:`posttrain.data.tool_schema.validate_tools` accepts them) and ``meta[i]["gold_calls"]`` (a list of
``{"name", "arguments"}``, or that list as a JSON string, as a JSONL column may hold it); the keys are
options. Every gold call must name an available tool, or the example is a DataError.
"""
from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any, Sequence

from posttrain.data.tool_calls import ParseResult, ToolCall, call_from_dict, parse_calls
from posttrain.data.tool_schema import validate_tools
from posttrain.errors import DataError
from posttrain.rewards.base import check_batch, meta_value

# The content-filling rule itself, not a copy: reward and Seal-Tools score must not drift apart.
from posttrain.tools.seal import same_value

__all__ = ["IRM_REWARDS", "MAX_EXHAUSTIVE", "ToolCallReward", "irm_category", "irm_meta"]

#: Category -> reward, in first-match order (module docstring).
IRM_REWARDS: dict[str, float] = {
    "format_error": -2.0,
    "hallucinated_tool": -2.0,
    "wrong_tool": -1.5,
    "params_h_r_m": -1.8,
    "params_h_r_or_m": -1.3,
    "params_r_m": -1.0,
    "params_h": -0.8,
    "params_r_or_m": -0.5,
    "wrong_value": -0.25,
    "exact_match": 1.0,
}

#: Calls of one name up to which every pairing with the gold calls is tried (6! = 720 pairings).
MAX_EXHAUSTIVE = 6


def _category(h: bool, r: bool, m: bool, v: bool) -> str:
    if h and r and m:
        return "params_h_r_m"
    if h and (r or m):
        return "params_h_r_or_m"
    if r and m:
        return "params_r_m"
    if h:
        return "params_h"
    if r or m:
        return "params_r_or_m"
    if v:
        return "wrong_value"
    return "exact_match"


def _flags(call: ToolCall, gold: ToolCall, declared: set[str]) -> tuple[bool, bool, bool, bool]:
    """(h, r, m, wrong value) of one call against its gold call."""
    given, wanted = call.arguments, gold.arguments
    extra = [k for k in given if k not in wanted]
    h = any(k not in declared for k in extra)
    r = any(k in declared for k in extra)
    m = any(k not in given for k in wanted)
    v = any(not same_value(given[k], wanted[k]) for k in given if k in wanted)
    return h, r, m, v


def _union(flags: Sequence[tuple[bool, bool, bool, bool]]) -> tuple[bool, bool, bool, bool]:
    return tuple(any(f[j] for f in flags) for j in range(4))  # type: ignore[return-value]


def _rank(flags: Sequence[tuple[bool, bool, bool, bool]]) -> tuple[float, int]:
    """Sort key of a pairing, smaller is better: its category's reward, then its number of flags."""
    return -IRM_REWARDS[_category(*_union(flags))], sum(map(sum, flags))


def _pair_group(calls: list[ToolCall], golds: list[ToolCall], declared: set[str]) -> list[tuple]:
    """The flags of each pair, for the pairing of one name's calls with its gold calls (module docstring)."""
    table = [[_flags(c, g, declared) for g in golds] for c in calls]
    n = len(calls)
    if n <= MAX_EXHAUSTIVE:
        best = min(itertools.permutations(range(n)), key=lambda p: _rank([table[i][p[i]] for i in range(n)]))
        return [table[i][best[i]] for i in range(n)]
    used: set[int] = set()
    out = []
    for i, c in enumerate(calls):
        def key(j: int) -> tuple[int, int, int]:
            shared = [k for k in c.arguments if k in golds[j].arguments]
            equal = sum(same_value(c.arguments[k], golds[j].arguments[k]) for k in shared)
            return equal, len(shared), -j
        j = max((j for j in range(n) if j not in used), key=key)
        used.add(j)
        out.append(table[i][j])
    return out


def _specs(tools: Sequence[dict]) -> dict[str, dict]:
    return {t["name"]: t for t in validate_tools(list(tools))}


def _check_gold(gold: Sequence[ToolCall], specs: dict[str, dict]) -> None:
    for j, g in enumerate(gold):
        if g.name not in specs:
            raise DataError(f"gold call [{j}] {g.name!r} is not among the available tools "
                            f"({', '.join(specs) or 'none'})")


def _irm(parsed: ParseResult, gold: list[ToolCall], specs: dict[str, dict]) -> str:
    if not gold:
        if parsed.error == "empty":
            return "format_error"
        if not parsed.made_calls:
            return "exact_match"
    elif not parsed.ok:
        return "format_error"
    calls = parsed.calls
    if any(c.name not in specs for c in calls):
        return "hallucinated_tool"
    if Counter(c.name for c in calls) != Counter(g.name for g in gold):
        return "wrong_tool"
    flags = []
    for name in dict.fromkeys(g.name for g in gold):
        declared = set(specs[name]["parameters"]["properties"])
        flags += _pair_group([c for c in calls if c.name == name], [g for g in gold if g.name == name],
                             declared)
    return _category(*_union(flags))


def irm_category(parsed: ParseResult, gold: Sequence[ToolCall], tools: Sequence[dict]) -> tuple[str, float]:
    """(category, reward) of one parsed completion against its gold calls and available tools (module
    docstring). DataError when a tool spec is bad or a gold call names no available tool."""
    specs = _specs(tools)
    gold = list(gold)
    _check_gold(gold, specs)
    category = _irm(parsed, gold, specs)
    return category, IRM_REWARDS[category]


def irm_meta(example: Any) -> dict:
    """The meta this reward reads, from a :class:`posttrain.tools.loaders.ToolExample`: Seal-Tools' gold
    calls, or for BFCL one reference call list (:func:`posttrain.tools.bfcl.reference_calls`; none for
    irrelevance)."""
    from posttrain.tools.bfcl import reference_calls

    if example.calls is not None:
        gold = list(example.calls)
    elif example.possible_answer is not None:
        gold = reference_calls(example.possible_answer, example.tools)
    else:
        gold = []
    return {"tools": example.tools, "gold_calls": [c.to_dict() for c in gold]}


class ToolCallReward:
    """TL-Training's IRM reward (module docstring): ``meta[i][tools_key]`` the available tools,
    ``meta[i][gold_key]`` the gold calls (a list, or a JSON string of one)."""

    name = "tool_call"

    def __init__(self, tools_key: str = "tools", gold_key: str = "gold_calls"):
        self.tools_key, self.gold_key = tools_key, gold_key

    def _where(self, i: int, key: str) -> str:
        return f"reward '{self.name}': meta[{i}]['{key}']"

    def _json(self, value: Any, i: int, key: str) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError as e:
            raise DataError(f"{self._where(i, key)} is a string that is not JSON ({e})", field=key) from None

    def _tools(self, meta: Sequence[dict], i: int) -> dict[str, dict]:
        raw = self._json(meta_value(meta, i, self.tools_key, self.name), i, self.tools_key)
        if not isinstance(raw, list):
            raise DataError(f"{self._where(i, self.tools_key)} must be a list of function specs (or its JSON "
                            f"string), got {type(raw).__name__}", field=self.tools_key)
        try:
            return _specs(raw)
        except DataError as e:
            raise DataError(f"{self._where(i, self.tools_key)}: {e}", field=self.tools_key) from None

    def _gold(self, meta: Sequence[dict], i: int, specs: dict[str, dict]) -> list[ToolCall]:
        raw = self._json(meta_value(meta, i, self.gold_key, self.name), i, self.gold_key)
        if not isinstance(raw, list):
            raise DataError(f"{self._where(i, self.gold_key)} must be a list of {{\"name\", \"arguments\"}} "
                            f"calls (or its JSON string), got {type(raw).__name__}", field=self.gold_key)
        gold = []
        for j, item in enumerate(raw):
            try:
                gold.append(item if isinstance(item, ToolCall) else call_from_dict(item))
            except ValueError as e:
                raise DataError(f"{self._where(i, self.gold_key)}[{j}]: {e}", field=self.gold_key) from None
        try:
            _check_gold(gold, specs)
        except DataError as e:
            raise DataError(f"{self._where(i, self.gold_key)}: {e}", field=self.gold_key) from None
        return gold

    def categories(self, prompts: list[str], completions: list[str],
                   meta: list[dict] | None = None) -> list[tuple[str, float]]:
        """(category, reward) per completion, for counting categories."""
        check_batch(prompts, completions, meta, self.name, need_meta=True)
        out = []
        # The completions of one prompt share its tool list object: validate it once. The ids stay
        # unique while ``meta`` holds the objects, i.e. for this whole call.
        seen: dict[int | str, dict[str, dict]] = {}
        for i, completion in enumerate(completions):
            raw = meta[i].get(self.tools_key) if isinstance(meta[i], dict) else None
            key = raw if isinstance(raw, str) else id(raw)
            if raw is None or key not in seen:
                specs = self._tools(meta, i)  # raises the clear error when raw is missing or bad
                seen[key] = specs
            else:
                specs = seen[key]
            category = _irm(parse_calls(completion), self._gold(meta, i, specs), specs)
            out.append((category, IRM_REWARDS[category]))
        return out

    def score(self, prompts: list[str], completions: list[str],
              meta: list[dict] | None = None) -> list[float]:
        return [r for _, r in self.categories(prompts, completions, meta)]
