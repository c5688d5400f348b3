"""TL-Training's IRM reward (METHODS.md §7), ``posttrain.rewards.tool_call``, on crafted completions."""
from __future__ import annotations

import json

import pytest

import posttrain.rewards.tool_call as tc
from posttrain.data.tool_calls import ToolCall, parse_calls
from posttrain.errors import DataError, RecipeError
from posttrain.rewards import Reward, get_reward, score_checked
from posttrain.rewards.tool_call import IRM_REWARDS, ToolCallReward, irm_category, irm_meta
from posttrain.tools.loaders import ToolExample

WEATHER = {"name": "get_weather", "description": "Weather forecast.",
           "parameters": {"type": "object",
                          "properties": {"city": {"type": "string"}, "unit": {"type": "string"},
                                         "days": {"type": "integer"}},
                          "required": ["city"]}}
TIME = {"name": "get_time", "description": "Local time.",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}
TOOLS = [WEATHER, TIME]
GOLD = [ToolCall("get_weather", {"city": "Paris", "days": 3})]


def calls(*items) -> str:
    return json.dumps([{"name": n, "arguments": a} for n, a in items])


def weather(**args) -> str:
    return calls(("get_weather", args))


def category(completion: str, gold=GOLD, tools=TOOLS) -> tuple[str, float]:
    return irm_category(parse_calls(completion), gold, tools)


# ------------------------------------------------------------------------------------- the table

def test_the_table_is_the_papers():
    assert list(IRM_REWARDS.items()) == [
        ("format_error", -2.0), ("hallucinated_tool", -2.0), ("wrong_tool", -1.5),
        ("params_h_r_m", -1.8), ("params_h_r_or_m", -1.3), ("params_r_m", -1.0), ("params_h", -0.8),
        ("params_r_or_m", -0.5), ("wrong_value", -0.25), ("exact_match", 1.0)]


# One completion per row (two where the row is an "or"); gold get_weather(city=Paris, days=3).
# country: not in the schema (h); unit: in the schema, not in the gold call (r); days left out (m).
ROWS = [
    ("The weather in Paris will be sunny.", "format_error", -2.0),
    (calls(("get_forecast", {"city": "Paris", "days": 3})), "hallucinated_tool", -2.0),
    (calls(("get_time", {"zone": "CET"})), "wrong_tool", -1.5),
    (weather(city="Paris", unit="C", country="FR"), "params_h_r_m", -1.8),
    (weather(city="Paris", days=3, unit="C", country="FR"), "params_h_r_or_m", -1.3),   # h & r
    (weather(city="Paris", country="FR"), "params_h_r_or_m", -1.3),                     # h & m
    (weather(city="Paris", unit="C"), "params_r_m", -1.0),
    (weather(city="Paris", days=3, country="FR"), "params_h", -0.8),
    (weather(city="Paris", days=3, unit="C"), "params_r_or_m", -0.5),                   # r
    (weather(city="Paris"), "params_r_or_m", -0.5),                                     # m
    (weather(city="London", days=3), "wrong_value", -0.25),
    (weather(city="Paris", days=3), "exact_match", 1.0),
]


@pytest.mark.parametrize("completion,name,reward", ROWS)
def test_one_completion_per_row(completion, name, reward):
    assert category(completion) == (name, reward)
    assert ToolCallReward().score(["q"], [completion], [{"tools": TOOLS, "gold_calls": GOLD}]) == [reward]


def test_every_category_is_reachable():
    assert {name for _, name, _ in ROWS} == set(IRM_REWARDS)


# ------------------------------------------------------------------------------- first match wins

@pytest.mark.parametrize("completion", [
    "I'll call get_forecast(city='Paris')",                            # prose naming an unknown tool
    '[{"name": "get_forecast", "arguments": {"city": "Par',           # cut off by the token limit
    '{"name": 5, "arguments": {}}',                                    # JSON, but not a call
    '[{"name": "get_forecast", "arguments": "not json"}]',
    "",
    "   \n",
])
def test_format_error_wins_over_everything(completion):
    assert category(completion) == ("format_error", -2.0)


@pytest.mark.parametrize("completion", [
    calls(("get_forecast", {"bogus": 1})),                                             # + parameter errors
    calls(("get_weather", {"city": "Paris", "days": 3}), ("get_forecast", {})),       # + a right call
    calls(("get_time", {"zone": "CET"}), ("get_forecast", {"city": "Paris"})),        # + a wrong tool
])
def test_hallucinated_tool_wins_over_wrong_tool_and_parameters(completion):
    assert category(completion) == ("hallucinated_tool", -2.0)


def test_wrong_tool_wins_over_parameters():
    assert category(calls(("get_time", {"bogus": 1, "city": "Paris"}))) == ("wrong_tool", -1.5)


def test_parameter_errors_win_over_values():
    assert category(weather(city="London", days=3, unit="C")) == ("params_r_or_m", -0.5)
    assert category(weather(city="London", country="FR")) == ("params_h_r_or_m", -1.3)


# ------------------------------------------------------------------------------- documented rules

def test_explicit_no_call_when_a_call_is_expected_is_a_wrong_tool():
    assert category("[]") == ("wrong_tool", -1.5)
    # prose stays a format error
    assert category("Sorry, I cannot help with that.") == ("format_error", -2.0)


@pytest.mark.parametrize("completion,expected", [
    ("None of these tools can answer that.", ("exact_match", 1.0)),   # what the tool prompt asks for
    ("[]", ("exact_match", 1.0)),
    ('{"answer": 42}', ("exact_match", 1.0)),                         # JSON, but no call made
    ("", ("format_error", -2.0)),                                      # blank: never paid
    (calls(("get_time", {"zone": "CET"})), ("wrong_tool", -1.5)),
    (calls(("get_forecast", {})), ("hallucinated_tool", -2.0)),
])
def test_gold_no_call(completion, expected):
    assert category(completion, gold=[]) == expected


@pytest.mark.parametrize("completion,expected", [
    (weather(city="Paris", days="3"), "exact_match"),        # Seal-Tools' str rule: 3 == "3"
    (weather(days=3, city="Paris"), "exact_match"),          # argument order is free
    (weather(city="paris", days=3), "wrong_value"),          # strings exactly
    (weather(city="Paris ", days=3), "wrong_value"),
    (weather(city="Paris", days=3.0), "wrong_value"),        # str(3.0) != str(3), as in the Seal-Tools score
    ('Sure:\n```json\n' + weather(city="Paris", days=3) + '\n```', "exact_match"),   # the parser's leniency
    (json.dumps([{"type": "function", "function": {"name": "get_weather",
                                                   "arguments": json.dumps({"city": "Paris", "days": 3})}}]),
     "exact_match"),
    (weather(City="Paris", days=3), "params_h_r_or_m"),      # names are case-sensitive: City is h, city m
])
def test_values_and_names(completion, expected):
    assert category(completion)[0] == expected


def test_value_rule_agrees_with_seal_tools_exact_match():
    from posttrain.tools.seal import seal_counts
    gold = [ToolCall("get_weather", {"city": "Paris", "days": "3"}), ToolCall("get_time", {"zone": "CET"})]
    for completion in [calls(("get_time", {"zone": "CET"}), ("get_weather", {"city": "Paris", "days": 3})),
                       calls(("get_weather", {"city": "Paris", "days": 3.0}), ("get_time", {"zone": "CET"})),
                       calls(("get_weather", {"city": "Paris", "days": 3}), ("get_time", {"zone": "cet"})),
                       calls(("get_weather", {"city": "Paris", "days": True}), ("get_time",
                                                                                {"zone": "CET"}))]:
        parsed = parse_calls(completion)
        assert (irm_category(parsed, gold, TOOLS)[0] == "exact_match") == bool(seal_counts(parsed,
                                                                                           gold).exact)


def test_a_parameter_the_gold_gives_is_never_hallucinated():
    gold = [ToolCall("get_weather", {"city": "Paris", "legacy": 1})]   # "legacy" is not in the schema
    assert category(weather(city="Paris", legacy=1), gold=gold) == ("exact_match", 1.0)
    assert category(weather(city="Paris"), gold=gold) == ("params_r_or_m", -0.5)


def test_missing_is_relative_to_the_gold_call_not_to_required():
    gold = [ToolCall("get_weather", {"city": "Paris"})]
    assert category(weather(city="Paris", unit="celsius"), gold=gold) == ("params_r_or_m", -0.5)
    gold = [ToolCall("get_weather", {"unit": "C"})]                      # the gold omits a required one
    assert category(weather(unit="C"), gold=gold) == ("exact_match", 1.0)


# --------------------------------------------------------------------------------- parallel calls

PAR_GOLD = [ToolCall("get_weather", {"city": "Paris", "days": 3}), ToolCall("get_time", {"zone": "CET"})]


@pytest.mark.parametrize("completion,expected", [
    (calls(("get_time", {"zone": "CET"}), ("get_weather", {"city": "Paris", "days": 3})), "exact_match"),
    (calls(("get_weather", {"city": "Paris", "days": 3})), "wrong_tool"),                      # one missing
    (calls(("get_weather", {"city": "Paris", "days": 3}), ("get_weather", {"city": "Paris", "days": 3}),
           ("get_time", {"zone": "CET"})), "wrong_tool"),                                      # one repeated
    (calls(("get_weather", {"city": "Paris", "days": 3}), ("get_weather", {"city": "Paris", "days": 3})),
     "wrong_tool"),                                                                            # same count
    ("[]", "wrong_tool"),
    # flags are the union over the calls: r in one call, m in the other
    (calls(("get_weather", {"city": "Paris", "days": 3, "unit": "C"}), ("get_time", {})), "params_r_m"),
    # h in one call, a wrong value in the other: the parameter error decides
    (calls(("get_weather", {"city": "Rome", "days": 3}), ("get_time", {"zone": "CET", "tz": 1})), "params_h"),
    (calls(("get_weather", {"city": "Paris", "days": 3}), ("get_time", {"zone": "PST"})), "wrong_value"),
])
def test_parallel(completion, expected):
    name, reward = category(completion, gold=PAR_GOLD)
    assert (name, reward) == (expected, IRM_REWARDS[expected])


def test_repeated_names_pair_for_the_best_category():
    gold = [ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_weather", {"city": "Rome"})]
    assert category(calls(("get_weather", {"city": "Rome"}), ("get_weather", {"city": "Paris"})),
                    gold=gold)[0] == "exact_match"
    assert category(calls(("get_weather", {"city": "Rome"}), ("get_weather", {"city": "Berlin"})),
                    gold=gold)[0] == "wrong_value"
    # pairing by shared values alone (first on a tie) would pair the first call with the first gold call
    gold = [ToolCall("get_weather", {"city": "Paris", "days": 3}), ToolCall("get_weather", {"city": "Paris"})]
    assert category(calls(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Paris", "days": 3})),
                    gold=gold)[0] == "exact_match"
    # no value shared: names decide the pairing, so only the values are wrong
    gold = [ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_weather", {"days": 2})]
    assert category(calls(("get_weather", {"days": 5}), ("get_weather", {"city": "Oslo"})),
                    gold=gold)[0] == "wrong_value"


def test_many_calls_of_one_name_pair_greedily(monkeypatch):
    cities = ["Paris", "Rome", "Oslo", "Lima", "Kyiv", "Bern", "Riga", "Baku"]
    gold = [ToolCall("get_weather", {"city": c}) for c in cities]
    reversed_calls = calls(*[("get_weather", {"city": c}) for c in reversed(cities)])
    assert len(cities) > tc.MAX_EXHAUSTIVE
    assert category(reversed_calls, gold=gold)[0] == "exact_match"
    one_wrong = calls(*[("get_weather", {"city": c}) for c in reversed(cities[1:])], ("get_weather",
                                                                                      {"city": "X"}))
    assert category(one_wrong, gold=gold)[0] == "wrong_value"
    monkeypatch.setattr(tc, "MAX_EXHAUSTIVE", 0)
    gold = [ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_weather", {"days": 2})]
    assert category(calls(("get_weather", {"days": 5}), ("get_weather", {"city": "Oslo"})),
                    gold=gold)[0] == "wrong_value"


# ------------------------------------------------------------------------------------ the reward

def test_registry_builds_it():
    reward = get_reward("tool_call")
    assert isinstance(reward, Reward) and isinstance(reward, ToolCallReward) and reward.name == "tool_call"
    custom = get_reward("tool_call", tools_key="functions", gold_key="calls")
    assert custom.score(["q"], [weather(city="Paris", days=3)],
                        [{"functions": TOOLS, "calls": [c.to_dict() for c in GOLD]}]) == [1.0]
    with pytest.raises(RecipeError, match="allowed: tools_key, gold_key"):
        get_reward("tool_call", gold="x")


def test_score_a_batch_with_meta_from_json():
    tools_json = json.dumps(TOOLS)
    gold_json = json.dumps([c.to_dict() for c in GOLD])
    par_json = json.dumps([c.to_dict() for c in PAR_GOLD])
    completions = [weather(city="Paris", days=3), "no idea", calls(("get_time", {"zone": "CET"})),
                   calls(("get_time", {"zone": "CET"}), ("get_weather", {"city": "Paris", "days": "3"})),
                   weather(city="Paris", days=3, unit="C"), "[]"]
    meta = [{"tools": tools_json, "gold_calls": gold_json}] * 3 + \
           [{"tools": tools_json, "gold_calls": par_json}, {"tools": TOOLS, "gold_calls": GOLD},
            {"tools": TOOLS, "gold_calls": "[]", "id": 7}]
    reward = get_reward("tool_call")
    assert score_checked(reward, ["q"] * 6, completions, meta) == [1.0, -2.0, -1.5, 1.0, -0.5, 1.0]
    assert [c for c, _ in reward.categories(["q"] * 6, completions, meta)] == [
        "exact_match", "format_error", "wrong_tool", "exact_match", "params_r_or_m", "exact_match"]


def test_a_shared_tool_list_is_read_per_row_of_gold():
    meta = [{"tools": TOOLS, "gold_calls": GOLD}, {"tools": TOOLS, "gold_calls": PAR_GOLD[1:]}]
    assert ToolCallReward().score(["q", "q"], [calls(("get_time", {"zone": "CET"}))] * 2, meta) == [-1.5, 1.0]


def test_meta_from_tool_examples():
    seal = ToolExample("s1", "seal-tools", "easy", [{"role": "user", "content": "q"}], TOOLS, calls=GOLD)
    assert irm_meta(seal) == {"tools": TOOLS, "gold_calls": [{"name": "get_weather",
                                                              "arguments": {"city": "Paris", "days": 3}}]}
    bfcl = ToolExample("b1", "bfcl", "simple_python", [{"role": "user", "content": "q"}], TOOLS,
                       possible_answer=[{"get_weather": {"city": ["Paris", "paris"], "unit": ["", "C"]}}])
    assert irm_meta(bfcl)["gold_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    irr = ToolExample("i1", "bfcl", "irrelevance", [{"role": "user", "content": "q"}], TOOLS)
    assert irm_meta(irr)["gold_calls"] == []
    assert ToolCallReward().score(["q"] * 2, ["No tool fits.", weather(city="Paris")],
                                  [irm_meta(irr), irm_meta(bfcl)]) == [1.0, 1.0]


def test_openai_wrapped_tools():
    wrapped = [{"type": "function", "function": t} for t in TOOLS]
    assert category(weather(city="Paris", days=3), tools=wrapped) == ("exact_match", 1.0)


# ------------------------------------------------------------------------------------- bad meta

def _meta(**over):
    return [{"tools": TOOLS, "gold_calls": GOLD}, {"tools": TOOLS, "gold_calls": GOLD, **over}]


@pytest.mark.parametrize("meta,match", [
    (None, "needs meta"),
    ([{"tools": TOOLS, "gold_calls": GOLD}, {"tools": TOOLS}],
     r"meta\[1\] has no 'gold_calls' \(keys: tools\)"),
    ([{"tools": TOOLS, "gold_calls": GOLD}, {"gold_calls": GOLD}], r"meta\[1\] has no 'tools'"),
    (_meta(gold_calls=None), r"meta\[1\] has no 'gold_calls'"),
    (_meta(gold_calls="[{'name': "), r"meta\[1\]\['gold_calls'\] is a string that is not JSON"),
    (_meta(gold_calls={"name": "get_weather"}), r"meta\[1\]\['gold_calls'\] must be a list.*got dict"),
    (_meta(gold_calls=[{"arguments": {}}]), r"meta\[1\]\['gold_calls'\]\[0\]: a call needs a 'name'"),
    (_meta(gold_calls=[{"name": "get_forecast"}]),
     r"meta\[1\]\['gold_calls'\]: gold call \[0\] 'get_forecast' is not among the available tools "
     r"\(get_weather, get_time\)"),
    (_meta(tools="not json"), r"meta\[1\]\['tools'\] is a string that is not JSON"),
    (_meta(tools={"name": "get_weather"}), r"meta\[1\]\['tools'\] must be a list of function specs"),
    (_meta(tools=[{"description": "no name"}]), r"meta\[1\]\['tools'\]: .*tools\[0\]\.name"),
    (_meta(tools=[WEATHER, WEATHER]), r"meta\[1\]\['tools'\]: .*duplicate function name 'get_weather'"),
    ([{"tools": TOOLS, "gold_calls": GOLD}, "not a dict"], r"meta\[1\] must be a dict"),
])
def test_bad_meta_is_a_clear_error(meta, match):
    with pytest.raises(DataError, match=match) as e:
        ToolCallReward().score(["q", "q"], [weather(city="Paris", days=3)] * 2, meta)
    assert "tool_call" in str(e.value)


def test_custom_keys_are_named_in_errors():
    with pytest.raises(DataError, match=r"meta\[0\] has no 'calls'"):
        ToolCallReward(gold_key="calls").score(["q"], ["[]"], [{"tools": TOOLS, "gold_calls": GOLD}])


def test_batch_shapes_are_checked():
    with pytest.raises(ValueError, match="1 meta entries but 2 completions"):
        ToolCallReward().score(["q", "q"], ["[]", "[]"], [{"tools": TOOLS, "gold_calls": GOLD}])


def test_pure_function_rejects_gold_outside_the_tools():
    with pytest.raises(DataError, match="'get_forecast' is not among the available tools"):
        irm_category(parse_calls("[]"), [ToolCall("get_forecast", {})], TOOLS)
