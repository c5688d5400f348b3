"""Our BFCL matcher (posttrain.tools.bfcl) against BFCL's own AST checker, on every row of the real files.

For each row we generate calls — the reference answer, and mutations of it: other allowed values, wrong
values, wrong types, int-for-float, strings that differ only in case and punctuation, missing and extra
parameters, a wrong function name, calls dropped, duplicated or reordered, random mixes of these — and
assert that our verdict (after a round trip through our text format and parser) equals BFCL's checker on
the same calls, and that the reason agrees at BFCL's level of error types.

bfcl-eval is installed with --no-deps (Makefile). Its checker module imports
``bfcl_eval.constants.model_config``, which imports every model handler and with them the vendors' SDKs
(anthropic, openai, ...), none of which the checker uses: the checker only asks that module whether a model
needs dots in function names turned into underscores. When that import fails we put a stand-in module with
just that table (no model turns dots into underscores) in its place, then import the real checker, the real
type converters and the real ``is_empty_output`` (for irrelevance).
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import random
import sys
import types
from collections import Counter, defaultdict

import pytest

from posttrain.data.tool_calls import ParseResult, ToolCall, format_calls, parse_calls
from posttrain.tools.bfcl import check_bfcl, reference_calls
from posttrain.tools.loaders import load_bfcl
from tests.data_helpers import require_data

CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "live_simple", "irrelevance")
FUZZ_PER_ROW = 6
_MODEL_CONFIG = "bfcl_eval.constants.model_config"


@pytest.fixture(scope="module")
def bfcl(tmp_path_factory):
    """(ast_checker, Language.PYTHON, is_empty_output, model name) from the installed bfcl-eval."""
    if importlib.util.find_spec("bfcl_eval") is None:
        pytest.skip("bfcl-eval is not installed (make setup, or pip install --no-deps bfcl-eval==2026.3.23)")
    # bfcl_eval's config makes result/score folders under $BFCL_PROJECT_ROOT (default: beside the
    # installed package) on import: point it at a temporary folder
    mp = pytest.MonkeyPatch()
    mp.setenv("BFCL_PROJECT_ROOT", str(tmp_path_factory.mktemp("bfcl_root")))
    stubbed = False
    try:
        checker = importlib.import_module("bfcl_eval.eval_checker.ast_eval.ast_checker")
    except ImportError:  # the vendors' SDKs behind model_config (module docstring)
        stub = types.ModuleType(_MODEL_CONFIG)
        stub.MODEL_CONFIG_MAPPING = defaultdict(lambda: types.SimpleNamespace(underscore_to_dot=False))
        sys.modules[_MODEL_CONFIG] = stub
        stubbed = True
        checker = importlib.import_module("bfcl_eval.eval_checker.ast_eval.ast_checker")
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.utils import is_empty_output
    mapping = checker.MODEL_CONFIG_MAPPING
    model = "posttrain" if stubbed else next(k for k, v in mapping.items()
                                              if not v.underscore_to_dot and "_" not in k).replace("/", "_")
    yield checker.ast_checker, Language.PYTHON, is_empty_output, model
    mp.undo()
    if stubbed:  # leave no stand-in behind for other tests
        for name in [n for n in sys.modules if n.startswith("bfcl_eval")]:
            del sys.modules[name]


# ------------------------------------------------------------------------------------- case generation

def _wrong(value):
    """A value of the same type that no possible answer is likely to allow."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 7919
    if isinstance(value, float):
        return value + 0.123
    if isinstance(value, str):
        return value + " zq"
    if isinstance(value, list):
        return value + (value[:1] or ["zq"])
    if isinstance(value, dict):
        return {**value, "zq_key": 1}
    return "zq"


def _retyped(value, rng):
    """The same value in another type (some of which BFCL accepts: int for float)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return rng.choice([float(value), str(value), bool(value % 2)])
    if isinstance(value, float):
        return int(value) if value == int(value) else str(value)
    if isinstance(value, str):
        return rng.choice([[value], None, 1])
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _items_retyped(value):
    """A list whose items changed type (BFCL checks one level of item types; ints are not floats there)."""
    if not isinstance(value, list) or not value:
        return None
    first = value[0]
    if isinstance(first, float) and first == int(first):
        return [int(x) if isinstance(x, float) and x == int(x) else x for x in value]
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return [str(x) for x in value]
    if isinstance(first, str):
        return [len(x) for x in value]
    if isinstance(first, dict):
        return [json.dumps(x) for x in value]
    return None


def _restyled(value):
    """A string BFCL's normalisation maps to the same (case, spaces, punctuation)."""
    return value.upper().replace(" ", " - ") + "." if isinstance(value, str) else value


def _other_allowed(allowed, rng):
    choices = [v for v in allowed if v != ""]
    return rng.choice(choices) if choices else None


def _mutants(ref: list[ToolCall], answer: list[dict], functions: list[dict], rng: random.Random):
    """(label, calls) cases around the reference calls."""
    out = [("reference", ref)]
    if len(ref) > 1:
        out += [("reversed", ref[::-1]), ("dropped_call", ref[:-1]), ("duplicated_call", ref + ref[:1])]
    out += [("no_call", []), ("extra_call", ref + [ToolCall(functions[-1]["name"], {})])]
    for i, call in enumerate(ref):
        allowed = answer[i][call.name] if call.name in answer[i] else {}
        fn = next(f for f in functions if f["name"] == call.name)
        others = [f for f in functions if f["name"] != call.name]
        if others:  # a listed function, but not the right one
            out.append(("other_function", ref[:i] + [ToolCall(others[0]["name"],
                                                              call.arguments)] + ref[i + 1:]))

        def with_args(args, i=i, call=call):
            return ref[:i] + [ToolCall(call.name, args)] + ref[i + 1:]

        out.append(("wrong_name", ref[:i] + [ToolCall(call.name + "_x", call.arguments)] + ref[i + 1:]))
        out.append(("extra_param", with_args({**call.arguments, "zq_param": 1})))
        for p in [p for p in fn["parameters"]["properties"] if p not in allowed][:2]:
            out.append(("declared_not_in_answer", with_args({**call.arguments, p: 1})))
        for p, v in call.arguments.items():
            rest = {k: x for k, x in call.arguments.items() if k != p}
            out.append(("missing_param", with_args(rest)))
            out.append(("wrong_value", with_args({**rest, p: _wrong(v)})))
            out.append(("retyped", with_args({**call.arguments, p: _retyped(v, rng)})))
            if isinstance(v, str):
                out.append(("restyled", with_args({**call.arguments, p: _restyled(v)})))
            if isinstance(v, float) and v == int(v):
                out.append(("int_for_float", with_args({**call.arguments, p: int(v)})))
            if _items_retyped(v) is not None:
                out.append(("items_retyped", with_args({**call.arguments, p: _items_retyped(v)})))
            if isinstance(v, dict) and v:
                out.append(("dict_key_dropped", with_args({**call.arguments, p: dict(list(v.items())[1:])})))
        for p, vals in allowed.items():  # every other allowed value of each parameter
            for alt in [v for v in vals[1:] if v != ""][:2]:
                if not isinstance(alt, dict):
                    out.append(("other_allowed", with_args({**call.arguments, p: alt})))
            if "" in vals and p in call.arguments:
                out.append(("optional_left_out", with_args({k: x for k,
                                                            x in call.arguments.items() if k != p})))
    for _ in range(FUZZ_PER_ROW):  # random mixes
        calls = []
        for i, call in enumerate(ref):
            allowed = answer[i].get(call.name, {})
            args = {}
            for p in list(dict.fromkeys([*call.arguments, *allowed])):  # a fixed order: reproducible cases
                base = call.arguments.get(p, _other_allowed(allowed.get(p, []), rng))
                op = rng.choice(["keep", "keep", "keep", "other", "wrong", "retype", "drop", "restyle",
                                 "items"])
                if op == "drop" or base is None:
                    continue
                args[p] = {"keep": base, "other": _other_allowed(allowed.get(p, []), rng) or base,
                           "wrong": _wrong(base), "retype": _retyped(base, rng),
                           "restyle": _restyled(base), "items": _items_retyped(base)}[op]
                if args[p] is None:
                    args[p] = base
            calls.append(ToolCall(call.name, args))
        if len(calls) > 1:
            rng.shuffle(calls)
        out.append(("fuzz", calls))
    return out


def _irrelevance_cases(functions: list[dict], rng: random.Random):
    fn = functions[0]
    props = fn["parameters"]["properties"]
    args = {p: _retyped(1, rng) for p in list(props)[:2]}
    return [("no_call", "[]"), ("prose", "I cannot answer that with the functions I have."),
            ("garbage", '{"name": 3, "arguments": [}'), ("call", format_calls([ToolCall(fn["name"], args)])),
            ("two_calls", format_calls([ToolCall(fn["name"], {}), ToolCall(fn["name"], args)])),
            ("fenced_call", "```json\n" + format_calls([ToolCall(fn["name"], {})]) + "\n```")]


# ----------------------------------------------------------------------------------------------- tests

def _raw_rows(path):
    with open(path, encoding="utf-8") as f:
        return {r["id"]: r for r in map(json.loads, filter(str.strip, f))}


def _coarse(error_type: str) -> str:
    """BFCL's error type at the level of our Verdict.error."""
    if error_type.endswith("wrong_count"):
        return "wrong_count"
    if error_type.endswith("cannot_find_match"):
        return "no_match"
    if error_type.startswith("type_error"):
        return "type_error"
    if error_type.startswith(("value_error", "dict_checker", "list_dict_checker")):
        return "value_error"
    return error_type.split(":")[-1]


@pytest.mark.parametrize("category", CATEGORIES)
def test_verdicts_agree_with_bfcl_checker(bfcl, category):
    ast_checker, python, is_empty_output, model = bfcl
    path = require_data("bfcl", f"BFCL_v4_{category}.json")
    examples = load_bfcl(path)
    raw = _raw_rows(path)
    rng = random.Random(0)
    tally: Counter = Counter()
    disagreements = []
    for ex in examples:
        functions = raw[ex.id]["function"]  # BFCL's checker gets the rows as the file has them
        if ex.possible_answer is None:
            for label, text in _irrelevance_cases(functions, rng):
                parsed = parse_calls(text)
                decoded = [{c.name: c.arguments} for c in parsed.calls] if parsed.ok else None
                theirs = decoded is None or is_empty_output(decoded)  # a decode failure is "no call"
                ours = check_bfcl(parsed, ex.tools, None, ex.category).correct
                tally["cases", ours] += 1
                if ours != theirs:
                    disagreements.append((ex.id, label, text, ours, theirs))
            continue
        ref = reference_calls(ex.possible_answer, ex.tools)
        for label, calls in _mutants(ref, ex.possible_answer, ex.tools, rng):
            parsed = parse_calls(format_calls(calls))
            assert parsed.ok and len(parsed.calls) == len(calls), (ex.id, label, calls)
            ours = check_bfcl(parsed, ex.tools, ex.possible_answer, ex.category)
            res = ast_checker(functions, [{c.name: copy.deepcopy(c.arguments)} for c in calls],
                              copy.deepcopy(ex.possible_answer), python, ex.category, model)
            tally["bfcl_calls"] += 1
            tally["cases", ours.correct] += 1
            theirs_why = None if res["valid"] else _coarse(res["error_type"])
            if ours.correct != res["valid"] or ours.error != theirs_why:
                disagreements.append((ex.id, label, [c.to_dict() for c in calls], ours,
                                      res.get("error_type")))
    n = tally["cases", True] + tally["cases", False]
    print(f"{category}: {len(examples)} rows, {n} cases ({tally['cases', True]} correct, "
          f"{tally['cases', False]} wrong), BFCL checker called {tally['bfcl_calls']} times; "
          f"{len(disagreements)} disagreements")
    assert not disagreements, f"{len(disagreements)} of {n} disagree, e.g. {disagreements[:3]}"
    # the comparison ran, on both kinds of verdict
    assert tally["cases", True] >= len(examples) * 0.9 and tally["cases", False] >= len(examples)
    if category != "irrelevance":
        assert tally["bfcl_calls"] == n >= 10 * len(examples)


def test_a_rigged_matcher_is_caught(bfcl):
    """The comparison can fail: a matcher that ignores string normalisation disagrees with BFCL."""
    ast_checker, python, _, model = bfcl
    path = require_data("bfcl", "BFCL_v4_simple_python.json")
    ex = next(e for e in load_bfcl(path, limit=50)
              if any(isinstance(v, str) and v for v in reference_calls(e.possible_answer,
                                                                       e.tools)[0].arguments.values()))
    call = reference_calls(ex.possible_answer, ex.tools)[0]
    p = next(k for k, v in call.arguments.items() if isinstance(v, str) and v)
    styled = ToolCall(call.name, {**call.arguments, p: _restyled(call.arguments[p])})
    res = ast_checker(_raw_rows(path)[ex.id]["function"], [{styled.name: styled.arguments}],
                      ex.possible_answer,
                      python, ex.category, model)
    assert res["valid"] and check_bfcl([styled], ex.tools, ex.possible_answer, ex.category).correct
    naive_equal = all(styled.arguments[k] in vals for k, vals in ex.possible_answer[0][call.name].items()
                      if k in styled.arguments)
    assert not naive_equal  # plain equality would have called it wrong: the case discriminates


def test_unparsable_output_fails_every_category_but_irrelevance():
    bad = ParseResult(False, error="unparsable")
    fn = [{"name": "f", "parameters": {"type": "dict", "properties": {}, "required": []}}]
    for cat in ("simple_python", "multiple", "parallel", "parallel_multiple", "live_simple"):
        v = check_bfcl(bad, fn, [{"f": {}}], cat)
        assert not v.correct and v.error == "unparsable"
    assert check_bfcl(bad, fn, None, "irrelevance").correct
    assert check_bfcl(parse_calls("[]"), fn, None, "irrelevance").correct
    assert not check_bfcl(parse_calls('[{"name": "f", "arguments": {}}]'), fn, None, "irrelevance").correct
    assert check_bfcl(parse_calls('[{"name": "f", "arguments": {}}]'), fn, None, "live_relevance").correct


# ------------------------------------------------------------- random schemas: the rare branches

_TYPES = ("string", "integer", "float", "boolean", "array", "tuple", "dict", "any")
_SAMPLES = {"string": ["New York", "new-york", "NEW YORK.", "x", "It's", "a_b"], "integer": [0, 1, 5, -3],
            "float": [0.5, 1.0, 2.25, 5.0], "boolean": [True, False]}


def _value(t: str, rng: random.Random, items: str = "string"):
    if t in _SAMPLES:
        return rng.choice(_SAMPLES[t])
    if t == "any":
        return rng.choice(_SAMPLES["string"])
    if t in ("array", "tuple"):
        return [_value(items, rng) for _ in range(rng.randint(0, 3))]
    return {k: _value("string", rng) for k in rng.sample(["a", "b"], rng.randint(0, 2))}


def _allowed(t: str, items: str, rng: random.Random) -> list:
    """Allowed values in BFCL's format: dicts as {key: [allowed]}, with "" markers and odd types."""
    def one():
        if rng.random() < 0.15:  # a value of another type ("variable" answers)
            return _value(rng.choice(_TYPES), rng)
        if t == "dict":
            return {k: rng.sample(_SAMPLES["string"], 2) + ([""] if rng.random() < 0.3 else [])
                    for k in rng.sample(["a", "b"], rng.randint(1, 2))}
        if t in ("array", "tuple") and items == "dict":
            return [{"a": [_value("string", rng)]} for _ in range(rng.randint(0, 2))]
        return _value(t, rng, items)
    vals = [one() for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.3:
        vals.insert(rng.randint(0, len(vals)), "")
    return vals


def _concrete(v, rng: random.Random):
    """A model value from an allowed value (dicts of allowed lists made concrete)."""
    if isinstance(v, dict):
        return {k: rng.choice(vs) for k, vs in v.items() if isinstance(vs,
                                                                       list) and vs and rng.random() < 0.9}
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        return [_concrete(x, rng) for x in v]
    return v


def _random_case(rng: random.Random):
    n_fn = rng.randint(1, 3)
    functions, answers, calls = [], [], []
    for j in range(n_fn):
        props, allowed = {}, {}
        for p in rng.sample(["p", "q", "r", "s"], rng.randint(0, 4)):
            t = rng.choice(_TYPES)
            items = rng.choice(["string", "integer", "float", "dict"])
            props[p] = {"type": t, "description": ""}
            if t in ("array", "tuple"):
                props[p]["items"] = {"type": items}
            if rng.random() < 0.9:
                allowed[p] = _allowed(t, items, rng)
        required = [p for p in props if rng.random() < 0.4]
        name = rng.choice(["f", "g.h", "k"]) + str(j)
        functions.append({"name": name, "description": "", "parameters": {"type": "dict", "properties": props,
                                                                          "required": required}})
        answers.append({name: allowed})
    category = rng.choice(["simple_python", "multiple", "parallel", "parallel_multiple"])
    if category == "simple_python":
        answers = answers[:1]
    elif category == "multiple":
        answers = [rng.choice(answers)]
    for ans in answers:
        (name, allowed), = ans.items()
        fn = next(f for f in functions if f["name"] == name)
        args = {}
        for p, spec in fn["parameters"]["properties"].items():
            r = rng.random()
            if r < 0.55 and allowed.get(p):
                args[p] = _concrete(rng.choice(allowed[p]), rng)
            elif r < 0.75:
                args[p] = _value(spec["type"], rng, spec.get("items", {}).get("type", "string"))
            elif r < 0.85:
                args[p] = _value(rng.choice(_TYPES), rng)
        if args and rng.random() < 0.15:
            args = dict(list(args.items())[1:])
        calls.append(ToolCall(rng.choice([name] * 5 + [functions[0]["name"]]), args))
    if rng.random() < 0.1 and calls:
        calls = calls[:-1] if rng.random() < 0.5 else calls + calls[:1]
    rng.shuffle(calls)
    return functions, answers, calls, category


def test_random_schemas_agree_with_bfcl_checker(bfcl):
    """Random functions, answers and calls reach the branches the real rows barely touch: answers of
    another type than declared ("variables"), "" markers inside dicts and lists, list-of-dict items, the
    first function of a simple row."""
    ast_checker, python, _, model = bfcl
    rng = random.Random(1)
    tally: Counter = Counter()
    disagreements = []
    for _ in range(4000):
        functions, answers, calls, category = _random_case(rng)
        try:
            res = ast_checker(copy.deepcopy(functions), [{c.name: copy.deepcopy(c.arguments)} for c in calls],
                              copy.deepcopy(answers), python, category, model)
        except (TypeError, KeyError, AttributeError, IndexError):  # BFCL's checker raises on a few shapes
            tally["bfcl_raised"] += 1
            continue
        ours = check_bfcl(parse_calls(format_calls(calls)), functions, answers, category)
        theirs_why = None if res["valid"] else _coarse(res["error_type"])
        tally[ours.correct] += 1
        tally[ours.error] += 1
        if ours.correct != res["valid"] or ours.error != theirs_why:
            disagreements.append((functions, answers, [c.to_dict() for c in calls], category, ours, res))
    print(f"random schemas: {tally[True]} correct, {tally[False]} wrong, "
          f"BFCL raised on {tally['bfcl_raised']}; {len(disagreements)} disagreements; "
          f"reasons {dict((k, v) for k, v in tally.items() if isinstance(k, str))}")
    assert not disagreements, disagreements[:2]
    assert tally[True] >= 300 and tally[False] >= 300 and tally["bfcl_raised"] < 200
    for why in ("type_error", "value_error", "missing_required", "missing_optional", "wrong_count",
                "no_match",
                "wrong_func_name", "unexpected_param"):
        assert tally[why] >= 10, why
